"""Source probe: how identifiable is the hospital from each representation?

A multinomial logistic regression (scikit-learn) on 16 x 16 thumbnails of the
representation is trained on the run's training shard to predict ``source``
and scored on its test shard (patient-level splits, as every trial). Balanced
accuracy against chance (1 / number of sources), macro one-vs-rest AUROC, and a
one-sided binomial test of the accuracy against the majority-source rate:
if the hospital is identifiable from ``lungs_removed`` or ``lungs_boxed_out``,
any classifier can learn it, and with a source-label confound it is a shortcut.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cxrray.data.shards import read_split_local
from cxrray.representations import apply_representation


def _split(shard_dir: Path, split: str) -> dict[str, np.ndarray]:
    batch = read_split_local(shard_dir / split)
    return {"image": batch["image"][:, None], "mask": batch["mask"][:, None].astype(np.float32),
            "source": batch["source"]}


def _features(batch: dict[str, np.ndarray], representation: str, thumb: int) -> np.ndarray:
    x = apply_representation(representation, torch.as_tensor(batch["image"]), torch.as_tensor(batch["mask"]))
    x = torch.nn.functional.adaptive_avg_pool2d(x, thumb)
    return x.reshape(len(x), -1).numpy()


def source_probe(shard_dir: str | Path, representations: Sequence[str], thumb: int = 16,
                 seed: int = 0) -> pl.DataFrame:
    """Per representation: balanced accuracy, chance level and macro AUROC of predicting the source."""
    shard_dir = Path(shard_dir)
    train, test = _split(shard_dir, "train"), _split(shard_dir, "test")
    sources = sorted(set(train["source"]))
    if len(sources) < 2:
        return pl.DataFrame()
    keep = np.isin(test["source"], sources)
    rows = []
    for rep in representations:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1, random_state=seed))
        clf.fit(_features(train, rep, thumb), train["source"])
        xt, yt = _features(test, rep, thumb)[keep], test["source"][keep]
        prob = clf.predict_proba(xt)
        present = [i for i, s in enumerate(clf.classes_) if 0 < (yt == s).sum() < len(yt)]
        auroc = float(np.mean([roc_auc_score(yt == clf.classes_[i], prob[:, i]) for i in present])) \
            if present else float("nan")
        pred = clf.classes_[prob.argmax(1)]
        correct = int((pred == yt).sum())
        majority = max((yt == s).mean() for s in sources)  # the best a constant guess can do
        rows.append({"representation": rep, "n_sources": len(sources), "n_test": int(keep.sum()),
                     "balanced_accuracy": float(balanced_accuracy_score(yt, pred)), "chance": 1 / len(sources),
                     "accuracy": correct / len(yt), "majority": float(majority),
                     "p_vs_majority": float(stats.binomtest(correct, len(yt), majority, "greater").pvalue),
                     "auroc_macro": auroc})
    return pl.DataFrame(rows)
