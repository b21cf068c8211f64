"""Segmentation metrics per class (lung and background), as in seed table 2 of PROTOCOLS.md."""

from __future__ import annotations

import numpy as np


def overlap_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, Jaccard, precision, recall and F1 for lung (1) and background (0) of one image."""
    out: dict[str, float] = {}
    for name, p, t in (("lung", pred > 0, truth > 0), ("background", pred == 0, truth == 0)):
        tp, fp, fn = np.sum(p & t), np.sum(p & ~t), np.sum(~p & t)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        out |= {f"{name}_dice": float(dice), f"{name}_jaccard": float(tp / (tp + fp + fn) if tp + fp + fn else 1.0),
                f"{name}_precision": float(precision), f"{name}_recall": float(recall),
                f"{name}_f1": float(2 * precision * recall / (precision + recall) if precision + recall else 0.0)}
    return out
