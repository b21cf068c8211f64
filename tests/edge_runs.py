"""Small synthetic run folders at the edges an analysis meets, written with the project's own writers.

Each trial's predictions go through ``predictions_frame`` and ``write_outputs`` (what a finished trial writes),
the run's tables through ``collect`` (what the sweep gathers), and ``splits.csv`` / ``quarantine.csv`` as
``prepare_data`` writes them. What varies is what users' runs bring: a test split with one class or one patient
per class, NaN, constant, tied or perfectly separating scores, optional columns (sex, age, source, view) present,
empty or absent, one trial or several seeds, a mask-dilation or ShorT arm with a single value.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import strategies as st

from cxrray.config import RunLayout, TrialSpec
from cxrray.data.tasks import TASKS, degeneracy
from cxrray.training.outputs import predictions_frame, write_outputs
from cxrray.tuning.runner import collect

OPTIONAL = ("sex", "age", "source", "view")
SCORES = ("signal", "constant", "nan", "some_nan", "perfect", "ties", "reversed")


@dataclass(frozen=True)
class Edge:
    """One generated run: the test split's patients per class, images per patient, how the scores look, which
    optional columns are there (present / empty / absent), which trials."""

    pos: int = 6  # positive test patients
    neg: int = 6  # negative test patients
    images: int = 2  # at most this many images per patient
    scores: str = "signal"
    columns: tuple[tuple[str, str], ...] = tuple((c, "present") for c in OPTIONAL)
    representations: tuple[str, ...] = ("original", "lungs_removed")
    seeds: int = 1
    dilation: bool = False  # one lungs_removed trial with the mask grown by 4 px (a dilation axis of one value)
    short: bool = False  # ShorT trials of one factor on sex
    task: str = "CL2"  # or CL3: COVID-19, other pneumonia, normal (negatives alternate between the two)
    backbones: tuple[str, ...] = ("basecnn",)
    failed: bool = False  # one more trial that failed (no predictions, status failed)
    seed: int = 0


def edges() -> st.SearchStrategy[Edge]:
    """Hypothesis' generator of runs at the edges."""
    return st.builds(
        Edge, pos=st.integers(0, 4), neg=st.integers(0, 4), images=st.integers(1, 3), scores=st.sampled_from(SCORES),
        columns=st.tuples(*(st.tuples(st.just(c), st.sampled_from(("present", "empty", "absent"))) for c in OPTIONAL)),
        representations=st.sampled_from([("original",), ("lungs_removed",), ("original", "lungs_removed"),
                                         ("original", "lungs_removed", "lungs_boxed_out")]),
        seeds=st.integers(1, 2), dilation=st.booleans(), short=st.booleans(), task=st.sampled_from(("CL2", "CL3")),
        backbones=st.sampled_from([("basecnn",), ("basecnn", "resnet18")]), failed=st.booleans(),
        seed=st.integers(0, 2**16),
    ).filter(lambda e: e.pos + e.neg > 0)  # a test split with no image at all is refused before any trial


def _patients(split: str, pos: int, neg: int, images: int, rng: np.random.Generator, start: int) -> pl.DataFrame:
    rows = []
    for k in range(pos + neg):
        for _ in range(int(rng.integers(1, images + 1))):
            rows.append({"patient_id": f"{split}-p{k}", "target": int(k < pos)})
    frame = pl.DataFrame(rows, schema={"patient_id": pl.Utf8, "target": pl.Int64})
    return frame.with_columns(pl.int_range(start, start + frame.height).alias("row"))


def _scores(kind: str, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0, 1, len(y))
    score = {"signal": 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + noise))), "constant": np.full(len(y), 0.4),
             "nan": np.full(len(y), np.nan), "perfect": np.where(y == 1, 0.9, 0.1),
             "ties": np.where(rng.random(len(y)) < 0.5, 0.3, 0.7), "reversed": np.where(y == 1, 0.2, 0.8)}
    if kind == "some_nan":
        out = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + noise)))
        out[:: 3] = np.nan
        return out
    return score[kind]


def _columns(frame: pl.DataFrame, edge: Edge, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n, out = frame.height, {}
    patient = frame["patient_id"].to_numpy()
    values = {"sex": lambda: np.where(np.array([zlib.crc32(p.encode()) % 2 for p in patient]) == 0, "F", "M"),
              "age": lambda: np.array([str(20 + zlib.crc32(p.encode()) % 70) for p in patient]),
              "source": lambda: np.where(frame["target"].to_numpy() == 1, "hospA", "hospB"),
              "view": lambda: np.where(rng.random(n) < 0.5, "PA", "AP")}
    for name, state in edge.columns:
        if state != "absent":
            out[name] = values[name]() if state == "present" else np.full(n, "")
    return out


def specs_of(edge: Edge) -> list[TrialSpec]:
    """The trials of an edge run (hide-and-seek): those that finish, and the failed one last."""
    specs = [TrialSpec("hide_seek", "edge", r, b, task=edge.task, seed=s) for r in edge.representations
             for b in edge.backbones for s in range(edge.seeds)]
    if edge.dilation:
        specs.append(TrialSpec("hide_seek", "edge", "lungs_removed", "basecnn", task=edge.task, mask_dilation=4))
    if edge.short:
        specs.append(TrialSpec("hide_seek", "edge", "original", "basecnn", task=edge.task, method="short_sex_1"))
    if edge.failed:
        specs.append(TrialSpec("hide_seek", "edge", "lungs_isolated", "basecnn", task=edge.task))
    return specs


def write_edge_run(root: Path, edge: Edge) -> Path:
    """Write the run folder of ``edge`` under ``root`` and return it."""
    rng = np.random.default_rng(edge.seed)
    task = TASKS.get(edge.task)
    layout = RunLayout(root)
    val = _patients("val", 3, 3, 2, rng, 1)
    test = _patients("test", edge.pos, edge.neg, edge.images, rng, 1 + val.height)
    specs = specs_of(edge)
    for spec in specs[:-1] if edge.failed else specs:
        frames = []
        for split, part in (("val", val), ("test", test)):
            y = part["target"].to_numpy()
            label = np.where(y == 1, "CVP", np.where(part["row"].to_numpy() % 2 == 0, "NOR", "OVP"))
            target = np.array([task.class_index(lb) for lb in label])
            score = _scores("signal" if split == "val" else edge.scores, y, rng)
            rest = np.stack([(1 - score) * w for w in np.linspace(1, 2, len(task.classes) - 1)], axis=1)
            rest = rest / np.where(rest.sum(1, keepdims=True) > 0, rest.sum(1, keepdims=True), 1) * (1 - score)[:, None]
            prob = np.insert(rest, task.positive_index, score, axis=1)
            pred = {"row": part["row"].to_numpy(), "patient_id": part["patient_id"].to_numpy(), "label": label,
                    "severity": np.full(len(y), ""), "target": target, "prob": prob} | _columns(part, edge, rng)
            frames.append(predictions_frame(pred, spec, split))
        meta = {"init": "random", "best_epoch": 0, "best_val_auroc": 0.8, "train_loss": [0.69, 0.5],
                "degenerate": degeneracy(frames[-1], task, [0.69, 0.5])}
        if spec.method.startswith("short"):
            meta["short"] = {"attribute": "sex", "factor": 1.0, "encoding_auroc": 0.7}
        write_outputs(layout.trial(spec.trial_id), spec, frames, {}, {}, meta, None)
    collect(specs, root)
    both = pl.concat([val.with_columns(pl.lit("val").alias("split")), test.with_columns(pl.lit("test").alias("split"))])
    both.select("row", "patient_id", pl.when(pl.col("target") == 1).then(pl.lit("CVP")).otherwise(pl.lit("NOR"))
                .alias("label"), pl.lit("hospA").alias("source"), "split").write_csv(layout.splits())
    pl.DataFrame(schema={"row": pl.Int64, "image_path": pl.Utf8, "reason": pl.Utf8}).write_csv(layout.quarantine())
    return root
