"""Source probe: how identifiable is the hospital from each representation?

A multinomial logistic regression (scikit-learn) on 16 x 16 thumbnails of the
representation is trained on the run's training shard to predict ``source``
and scored on its test shard (patient-level splits, as every trial). Balanced
accuracy against chance (1 / number of sources), macro one-vs-rest AUROC, and a
test with the patients as the unit (the true values permuted between test patients, a patient's images
together; and a patient bootstrap interval of the balanced accuracy):
if the hospital is identifiable from ``lungs_removed`` or ``lungs_boxed_out``,
any classifier can learn it, and with a source-label confound it is a shortcut.

Under a full confound the hospital *is* the label, so "predict the hospital" is a disease classifier.
``probes`` therefore sets two more probes beside it, on the same thumbnails: a **label probe** (how well the
representation tells the classes) and a **within-label source probe** (the hospital among the images of
one label, for every label with at least two sources on both sides of the split). Where every label has
one source, the within-label probe cannot be estimated, and the table says so.

The **demographic probe** asks the same of the patient's sex and age band (Yang et al., Nature Medicine 2024:
CXR models encode both, and use them as shortcuts): readable from ``lungs_removed``, they are a shortcut any
classifier can take.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cxrray.data.manifest import age_band
from cxrray.data.shards import read_split_local
from cxrray.representations import apply_representation


def _split(shard_dir: Path, split: str) -> dict[str, np.ndarray]:
    batch = read_split_local(shard_dir / split)
    out = {"image": batch["image"][:, None], "mask": batch["mask"][:, None].astype(np.float32),
           "source": batch["source"], "label": batch["label"],
           "patient": np.asarray([str(x) for x in batch["patient_id"]], dtype=object)}
    n = len(batch["source"])
    out["sex"] = np.asarray([str(x).strip().upper() for x in batch.get("sex", [""] * n)], dtype=object)
    out["age band"] = age_band(pl.Series([str(x) for x in batch.get("age", [""] * n)])).to_numpy()
    return out


@functools.lru_cache(maxsize=4)
def _thumbnails(shard_dir: str, split: str, representations: tuple[str, ...], thumb: int
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(labels: source, label, sex, age band; thumbnail features per representation) of one split, read and
    computed once per process: the ``bias`` and ``demographics`` steps probe the same thumbnails. A shard set's
    folder is named by its content (the data id), so a path always holds the same images."""
    batch = _split(Path(shard_dir), split)
    features = {rep: _features(batch, rep, thumb) for rep in representations}
    return {k: batch[k] for k in ("source", "label", "sex", "age band", "patient")}, features


def _features(batch: dict[str, np.ndarray], representation: str, thumb: int) -> np.ndarray:
    x = apply_representation(representation, torch.as_tensor(batch["image"]), torch.as_tensor(batch["mask"]))
    x = torch.nn.functional.adaptive_avg_pool2d(x, thumb)
    return x.reshape(len(x), -1).numpy()


def patient_test(truth: np.ndarray, pred: np.ndarray, patients: np.ndarray, seed: int, draws: int = 999,
                 level: float = 0.95) -> tuple[float, float, float]:
    """Balanced accuracy's one-sided permutation p (the true values permuted between patients, a
    patient's images together: is the prediction associated with the truth?) and its patient-bootstrap interval."""
    rng = np.random.default_rng(seed)
    classes, y = np.unique(truth, return_inverse=True)
    p_hat = np.searchsorted(classes, pred)
    p_hat = np.where(np.isin(pred, classes), p_hat, -1)
    _, unit = np.unique(np.char.add(patients.astype(str), np.char.add("\x00", truth.astype(str))),
                        return_inverse=True)
    unit_y = np.zeros(unit.max() + 1, int)
    unit_y[unit] = y

    def bal(labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = np.ones_like(labels, float) if weights is None else weights
        rec = [((labels == c) & (p_hat == c)) @ w.T / np.maximum((labels == c) @ w.T, 1e-12)
               if labels.ndim == 1 else (((labels == c) & (p_hat == c)) * w).sum(1) /
               np.maximum(((labels == c) * w).sum(1), 1e-12) for c in range(len(classes))]
        return np.mean(rec, axis=0)

    observed = float(bal(y))
    perm = np.argsort(rng.random((draws, len(unit_y))), axis=1)
    null = bal(unit_y[perm][:, unit])
    p = float((1 + (null >= observed - 1e-12).sum()) / (draws + 1))
    _, patient = np.unique(patients.astype(str), return_inverse=True)
    counts = rng.multinomial(patient.max() + 1, np.full(patient.max() + 1, 1 / (patient.max() + 1)), size=draws)
    boot = bal(np.broadcast_to(y, (draws, len(y))), counts[:, patient].astype(float))
    return p, float(np.percentile(boot, 50 - 50 * level)), float(np.percentile(boot, 50 + 50 * level))


def _probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
           seed: int, patients: np.ndarray | None = None) -> dict[str, float] | None:
    """Fit the logistic probe on train, score on test: balanced accuracy with its patient-bootstrap CI, chance,
    the majority rate, the permutation p over patients, macro one-vs-rest AUROC. None with fewer than two classes
    on either side."""
    classes = sorted(set(y_train))
    keep = np.isin(y_test, classes)
    x_test, y_test = x_test[keep], y_test[keep]
    patients = (np.arange(len(keep)) if patients is None else np.asarray(patients))[keep]
    if len(classes) < 2 or len(set(y_test)) < 2:
        return None
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1, random_state=seed))
    clf.fit(x_train, y_train)
    prob = clf.predict_proba(x_test)
    present = [i for i, c in enumerate(clf.classes_) if 0 < (y_test == c).sum() < len(y_test)]
    auroc = float(np.mean([roc_auc_score(y_test == clf.classes_[i], prob[:, i]) for i in present])) \
        if present else float("nan")
    pred = clf.classes_[prob.argmax(1)]
    correct = int((pred == y_test).sum())
    majority = max((y_test == c).mean() for c in classes)  # the best a constant guess can do
    p, lo, hi = patient_test(np.asarray(y_test), np.asarray(pred), patients, seed)
    return {"n_classes": len(classes), "n_test": len(y_test), "patients": len(set(patients)),
            "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)), "balanced_accuracy_lo": lo,
            "balanced_accuracy_hi": hi, "chance": 1 / len(classes), "accuracy": correct / len(y_test),
            "majority": float(majority), "p_patients": p, "auroc_macro": auroc}


def source_probe(shard_dir: str | Path, representations: Sequence[str], thumb: int = 16,
                 seed: int = 0) -> pl.DataFrame:
    """Per representation: balanced accuracy, chance level and macro AUROC of predicting the source."""
    return source_rows(probes(shard_dir, representations, thumb, seed, kinds=("source",)))


def source_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The plain source probe's rows of a ``probes`` table, in ``source_probe``'s columns."""
    if frame.is_empty():
        return frame
    return frame.filter(pl.col("probe") == "source").drop("probe", "note").rename({"n_classes": "n_sources"})


def probes(shard_dir: str | Path, representations: Sequence[str], thumb: int = 16, seed: int = 0,
           kinds: Sequence[str] = ("source", "label", "source within label")) -> pl.DataFrame:
    """Per representation and probe (``source``, ``label``, ``source within <label>``, and the demographic
    ``sex`` and ``age band``): what a logistic regression on thumbnails reads from the training shard and
    scores on the test shard."""
    reps = tuple(representations)
    (train, features_train), (test, features_test) = (_thumbnails(str(Path(shard_dir).resolve()), split, reps, thumb)
                                                      for split in ("train", "test"))
    if len(set(train["source"])) < 2 and set(kinds) <= {"source", "source within label"}:
        return pl.DataFrame()
    rows = []
    for rep in reps:
        f_train, f_test = features_train[rep], features_test[rep]
        for kind in (k for k in kinds if k in ("source", "label", "sex", "age band")):
            a, b = train[kind] != "", test[kind] != ""  # unknown sex or age: left out of that probe
            got = _probe(f_train[a], train[kind][a], f_test[b], test[kind][b], seed, test["patient"][b])
            if got is not None:
                rows.append({"probe": kind, "representation": rep} | got | {"note": ""})
        if "source within label" not in kinds:
            continue
        estimable = False
        for label in sorted(set(train["label"])):
            a, b = train["label"] == label, test["label"] == label
            if len(set(train["source"][a])) < 2 or len(set(test["source"][b])) < 2:
                continue
            got = _probe(f_train[a], train["source"][a], f_test[b], test["source"][b], seed, test["patient"][b])
            if got is not None:
                estimable = True
                rows.append({"probe": f"source within {label}", "representation": rep} | got | {"note": ""})
        if not estimable:
            rows.append({"probe": "source within label", "representation": rep, "n_classes": 0, "n_test": 0,
                         "patients": 0, "balanced_accuracy": float("nan"), "balanced_accuracy_lo": float("nan"),
                         "balanced_accuracy_hi": float("nan"), "chance": float("nan"), "accuracy": float("nan"),
                         "majority": float("nan"), "p_patients": float("nan"), "auroc_macro": float("nan"),
                         "note": "cannot be estimated: every label comes from one source (on one side of the split)"})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
