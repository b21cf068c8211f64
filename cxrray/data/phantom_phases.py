"""Phantom stand-ins for the pretraining datasets of staged pretraining (Fricks et al.).

- ``write_multilabel_phantom``: a ChestX-ray14-like set with ``finding_<Name>``
  columns for the 14 findings. Findings the phantom draws (Pneumonia,
  Infiltration, Consolidation) follow the rendered opacities; the others are
  0; a share of cells is left empty (unknown) to exercise the masked loss.
- ``write_pneumonia_phantom``: an RSNA-like pneumonia set at a chosen
  prevalence (about 24 % for "high", 2 % for "low").

Neither contains COVID-19 (both collections predate it), and by default their
sources are independent of the label, unlike the confounded target phantom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cxrray.data.phantom import write_phantom
from cxrray.data.tasks import NIH14_FINDINGS
from cxrray.registry import UserError


def write_multilabel_phantom(out_dir: str | Path, *, n_patients: int = 120, seed: int = 100,
                             unknown: float = 0.1, size: int = 256, confound: float = 0.0) -> Path:
    """Phantom with ``finding_*`` columns (1 / 0 / empty); labels NOR, or PNA when pneumonia is drawn."""
    path = write_phantom(out_dir, n_patients=n_patients, confound=confound, seed=seed, size=size,
                         label_probs=(0.5, 0.0, 0.25, 0.25))
    df = pl.read_csv(path, infer_schema=False)
    opaque = pl.col("severity").is_in(["Mild", "Moderate", "Severe"])
    drawn = {
        "Pneumonia": pl.col("label").is_in(["OVP", "OBP"]) & opaque,
        "Infiltration": (pl.col("label") == "OVP") & opaque,
        "Consolidation": (pl.col("label") == "OBP") & pl.col("severity").is_in(["Moderate", "Severe"]),
    }
    rng = np.random.default_rng([seed, 14])
    cols = []
    for name in NIH14_FINDINGS:
        value = pl.when(drawn[name]).then(pl.lit("1")).otherwise(pl.lit("0")) if name in drawn else pl.lit("0")
        hidden = pl.Series(rng.random(df.height) < unknown)
        cols.append(pl.when(hidden).then(pl.lit("")).otherwise(value).alias(f"finding_{name}"))
    df = df.with_columns(cols).with_columns(
        pl.when(drawn["Pneumonia"]).then(pl.lit("PNA")).otherwise(pl.lit("NOR")).alias("label"))
    df.write_csv(path)
    return path


def write_pneumonia_phantom(out_dir: str | Path, *, prevalence: float, n_patients: int = 120, seed: int = 200,
                            size: int = 256, confound: float = 0.0) -> Path:
    """Phantom of normal and (viral or bacterial) pneumonia patients at ``prevalence``; at least 5 patients of
    each pneumonia label, so that a small stand-in still has pneumonia in every split (1 / 0.2 = 5 per class)."""
    if not 0.0 < prevalence < 1.0:
        raise UserError(f"prevalence must be in (0, 1), got {prevalence}")
    return write_phantom(out_dir, n_patients=n_patients, confound=confound, seed=seed, size=size,
                         label_probs=(1 - prevalence, 0.0, prevalence / 2, prevalence / 2), min_per_label=5)
