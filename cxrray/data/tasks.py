"""Label tasks: which manifest labels form which classes (Hasan et al. codes).

Class codes: NOR normal; CVP COVID-19; OVP other viral; OBP other bacterial;
NCP = OVP + OBP (+ PNA); NCV = NOR + NCP (+ OTH). Tasks:

- CL2: NCV vs CVP (binary COVID-19 vs rest); CL3: NOR, NCP, CVP; CL4: NOR, OBP, OVP, CVP.
- PNEU: pneumonia (any cause) vs not (Fricks phase 2).
- CVP_NCP: COVID-19 vs other pneumonia, pneumonia images only (second stage
  of COVID-CXNet's hierarchical classifier).
- CL3H: CL3 as COVID-CXNet's hierarchical classifier: one output for
  pneumonia vs normal, one for COVID-19 vs other pneumonia (pneumonia images
  only); P(NOR), P(NCP), P(CVP) follow from the two (``cxrray.training.heads``).
- NIH14: the 14 ChestX-ray14 findings as a multilabel target read from
  ``finding_<Name>`` columns; an empty cell is unknown and masked out of the loss.
- finding_<Name>: any finding as a binary task on the manifest column ``finding_<Name>`` (1 / 0; empty is
  unknown and the row is not part of the task), positive class ``<Name>`` (``finding_task``).

Rows whose label belongs to no class of a task are not part of that task
(``Task.includes``). A single-label task names its ``positive`` class (the one every
analysis scores: AUROC, verdicts, DeLong tests, saliency) and how to call it in prose;
that class lives here and nowhere else. Severity stays a manifest attribute for
per-severity metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from cxrray.registry import Registry

if TYPE_CHECKING:
    import polars as pl

TRUE, FALSE = ("1", "1.0", "true"), ("0", "0.0", "false")  # a finding column's known values (lower case)
UNKNOWN = ("", "nan", "na", "none", "null")  # the documented spellings of "not known": the row is not used
NIH14_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)


@dataclass(frozen=True)
class Task:
    """Maps manifest label codes onto class indices (or finding columns onto outputs)."""

    name: str
    classes: tuple[str, ...]
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)  # class -> manifest labels
    multilabel: bool = False
    hierarchical: bool = False  # two binary stages (normal vs pneumonia, then COVID vs other pneumonia)
    positive: str | None = None  # the class the analysis scores (None: multilabel, scored per finding)
    positive_name: str = ""  # the positive class in prose ("COVID-19")
    column: str = ""  # a binary task on a manifest column (``finding_<Name>``: 1 / 0 / empty), not on ``label``

    def __post_init__(self) -> None:
        if self.positive is not None and self.positive not in self.classes:
            raise ValueError(f"task {self.name}: positive class {self.positive!r} is not one of {self.classes}")

    @property
    def kind(self) -> str:
        """"single" (one class per image, softmax), "hierarchical" or "multilabel"."""
        return "multilabel" if self.multilabel else "hierarchical" if self.hierarchical else "single"

    @property
    def num_outputs(self) -> int:
        """Outputs of the network: one per class, or the two binary stages of a hierarchical task."""
        return 2 if self.hierarchical else self.num_classes

    @property
    def positive_label(self) -> str:
        """The positive class in prose, for titles: "COVID-19 vs rest"."""
        return self.positive_name or str(self.positive)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def positive_index(self) -> int:
        """Index of the positive class among ``classes`` (single-label tasks only)."""
        if self.positive is None:
            raise ValueError(f"task {self.name} has no positive class (multilabel: scored per finding)")
        return self.classes.index(self.positive)

    def positive_scores(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(is-positive, positive-class score) of stored predictions (``target``, ``prob_<class>`` columns): the
        one place the analysis, the trial summaries and W&B turn predictions into what an AUROC reads."""
        import polars as pl

        y = (frame["target"] == self.positive_index).to_numpy()
        return y, frame[f"prob_{self.positive}"].cast(pl.Float64).to_numpy()

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2 and not self.multilabel

    @property
    def labels(self) -> tuple[str, ...]:
        """Every manifest label that takes part in the task."""
        return tuple(label for c in self.classes for label in self.members.get(c, ()))

    def includes(self, label: str) -> bool:
        return self.multilabel or label in self.labels

    def class_index(self, label: str) -> int:
        """Index of the class holding manifest label ``label``."""
        for i, c in enumerate(self.classes):
            if label in self.members.get(c, ()):
                return i
        raise ValueError(f"label {label!r} is not part of task {self.name} (its labels: {list(self.labels)})")

    @property
    def finding_columns(self) -> tuple[str, ...]:
        """The manifest columns the task reads besides ``label``."""
        if self.column:
            return (self.column,)
        return tuple(f"finding_{c}" for c in self.classes) if self.multilabel else ()

    def rows_of(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The manifest rows as this task sees them: for a column task, ``label`` becomes the class the column
        says (1: positive, 0: the other class, anything else: '', not part of the task); others unchanged."""
        if not self.column:
            return rows
        import polars as pl

        value = pl.col(self.column).cast(pl.Utf8).fill_null("").str.strip_chars().str.to_lowercase()
        negative = next(c for c in self.classes if c != self.positive)
        return rows.with_columns(pl.when(value.is_in(TRUE)).then(pl.lit(self.positive))
                                 .when(value.is_in(FALSE)).then(pl.lit(negative))
                                 .otherwise(pl.lit("")).alias("label"))

    def unreadable_values(self, rows: pl.DataFrame, where: str) -> pl.DataFrame:
        """Rows whose finding column holds neither 1, 0 nor a spelling of unknown (``yes``, ``-1``, ``2``): each
        with its value and row, for ``quarantine.csv`` (columns row, image_path, reason); empty for other tasks.
        CheXpert's -1 (uncertain) is mapped by the adapter's documented ``--uncertain`` policy, never guessed."""
        import polars as pl

        if not self.column:
            return pl.DataFrame(schema={"row": pl.Int64, "image_path": pl.Utf8, "reason": pl.Utf8})
        value = pl.col(self.column).cast(pl.Utf8).fill_null("").str.strip_chars()
        bad = rows.filter(~value.str.to_lowercase().is_in([*TRUE, *FALSE, *UNKNOWN]))
        return bad.select(pl.col("row").cast(pl.Int64), "image_path", pl.format(
            "{}, row {}: {} is {}: not 1, 0 or blank (unknown); CheXpert's -1 is mapped by the adapters' "
            "--uncertain policy", pl.lit(where), pl.col("row"), pl.lit(self.column),
            pl.concat_str(pl.lit("'"), value, pl.lit("'"))).alias("reason"))

    def multilabel_targets(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) float targets from ``finding_*`` columns: 1, 0, or NaN for unknown."""
        cols = []
        for name in self.finding_columns:
            raw = np.char.lower(np.char.strip(np.asarray(columns[name]).astype(str)))
            cols.append(np.where(np.isin(raw, TRUE), 1.0, np.where(np.isin(raw, FALSE), 0.0, np.nan)))
        return np.stack(cols, axis=1)


CODES = {  # every class and manifest label code, in words (the report defines each code it shows)
    "NOR": "normal", "CVP": "COVID-19 pneumonia", "OVP": "other viral pneumonia",
    "OBP": "other bacterial pneumonia", "PNA": "pneumonia, cause not given", "OTH": "other findings",
    "NCP": "non-COVID-19 pneumonia", "NCV": "not COVID-19", "PNEU": "pneumonia (any cause)",
    "NOPNEU": "no pneumonia",
}


def class_legend(task: Task) -> list[tuple[str, str]]:
    """(code, meaning) per class of ``task``: its words and the manifest labels it holds, e.g.
    ("NCV", "not COVID-19: normal (NOR), other viral pneumonia (OVP), ...")."""
    out = []
    for c in task.classes:
        members = [m for m in task.members.get(c, ()) if m != c]
        words = CODES.get(c, c.removeprefix("finding_").replace("_", " "))
        if members:
            words += ": " + ", ".join(f"{CODES.get(m, m)} ({m})" for m in members)
        out.append((c, words + (" [positive class]" if c == task.positive else "")))
    return out


TASKS: Registry[Task] = Registry("task")


def _add(task: Task) -> None:
    TASKS.register(task.name)(task)


class Positive(TypedDict):
    """A task's positive class and its name, spread into ``Task(...)``."""

    positive: str
    positive_name: str


COVID: Positive = {"positive": "CVP", "positive_name": "COVID-19"}
_add(Task("CL2", ("NCV", "CVP"), {"NCV": ("NOR", "OVP", "OBP", "PNA", "OTH"), "CVP": ("CVP",)}, **COVID))
_add(Task("CL3", ("NOR", "NCP", "CVP"), {"NOR": ("NOR",), "NCP": ("OVP", "OBP", "PNA"), "CVP": ("CVP",)}, **COVID))
_add(Task("CL4", ("NOR", "OBP", "OVP", "CVP"),
          {"NOR": ("NOR",), "OBP": ("OBP",), "OVP": ("OVP",), "CVP": ("CVP",)}, **COVID))
_add(Task("PNEU", ("NOPNEU", "PNEU"), {"NOPNEU": ("NOR", "OTH"), "PNEU": ("PNA", "OVP", "OBP", "CVP")},
          positive="PNEU", positive_name="pneumonia"))
_add(Task("CVP_NCP", ("NCP", "CVP"), {"NCP": ("OVP", "OBP", "PNA"), "CVP": ("CVP",)}, **COVID))
_add(Task("CL3H", ("NOR", "NCP", "CVP"), {"NOR": ("NOR",), "NCP": ("OVP", "OBP", "PNA"), "CVP": ("CVP",)},
          hierarchical=True, **COVID))
_add(Task("NIH14", NIH14_FINDINGS, multilabel=True))


@TASKS.factory("finding_<Name> (binary: the manifest column finding_<Name>, 1 = positive)")
def finding_task(name: str) -> Task | None:
    """``finding_<Name>``: a binary task on the manifest column of that name (ChestX-ray14, CheXpert, MIMIC-CXR,
    PadChest findings: 1 positive, 0 negative, empty or anything else unknown and left out), positive class
    ``<Name>`` against ``no_<Name>``."""
    finding = name.removeprefix("finding_")
    if not name.startswith("finding_") or not finding.replace("_", "").isalnum():
        return None
    classes = (f"no_{finding}", finding)
    return Task(name, classes, {c: (c,) for c in classes}, positive=finding,
                positive_name=finding.replace("_", " ").lower(), column=name)


SCORE_SD_MIN = 1e-3  # a positive-class score spread below this on the evaluated images: constant scores
CHANCE_FRACTION = 0.98  # training loss never below this fraction of ln(K): the model never beat guessing


def degeneracy(frame: pl.DataFrame, task: Task, train_loss: list[float] | None = None) -> str:
    """Why a trial's model did not learn, "" when it did: NaN or infinite scores on the evaluated images (the
    test split, else validation), (near) constant scores, or one class for every image while its training loss
    (when known) never fell below the chance level (ln K for K classes: the loss of predicting the class shares).
    A number from such a model is no evidence of anything, so the analysis names it and gives it no verdict.
    The trial records it, and the analysis applies it again to the predictions it reads."""
    if task.multilabel or frame.is_empty():
        return ""
    import polars as pl

    probs = frame.select([pl.col(f"prob_{c}").cast(pl.Float64) for c in task.classes]).to_numpy()
    bad = int((~np.isfinite(probs)).any(axis=1).sum())
    if bad:
        return f"NaN or infinite scores ({bad} of {len(probs)} images)"
    spread = float(probs.std(0).max())
    if spread < SCORE_SD_MIN:
        return f"constant scores (sd {spread:.1e} < {SCORE_SD_MIN:g})"
    pred = probs.argmax(1)
    finite = [x for x in (train_loss or []) if x == x]
    chance = float(np.log(task.num_classes))
    if len(np.unique(pred)) == 1 and finite and min(finite) >= CHANCE_FRACTION * chance:
        return (f"predicts {task.classes[pred[0]]} for every image and its training loss never fell below chance "
                f"(min {min(finite):.3f}, ln {task.num_classes} = {chance:.3f})")
    return ""
