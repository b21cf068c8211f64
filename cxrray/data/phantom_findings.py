"""A phantom for any finding: pneumothorax, with a chest drain as the device shortcut.

Pneumothorax classifiers are known to read chest drains, the treatment rather than the disease (Oakden-Rayner
et al. 2020). This phantom plants exactly that: a positive patient's lung shows the finding **inside the lung
field** (a lucent rim without lung markings at the apex and side of one lung, edged by a bright pleural line),
and, with probability ``drain``, a drain tube runs in from the chest wall **outside the lung field**. With a
drain on most positives a model can tell positives without looking at the lungs (``lungs_removed`` keeps the
tube): the hide-and-seek verdict must say shortcut; with ``drain`` 0 it must not. The finding is the column
``finding_Pneumothorax`` (task ``finding_Pneumothorax``); labels are NOR (negative) and OTH (positive). Sources
are independent of the finding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrray.data.manifest import REQUIRED_COLUMNS
from cxrray.data.phantom import SIGNATURE, SOURCES, phantom_dir, render, save_image, write_manifest
from cxrray.registry import UserError

FINDING = "finding_Pneumothorax"


def _pneumothorax(side: int, depth: float):
    """Draw a pneumothorax in the left (0) or right (1) lung: the outer ``depth`` of the lung, at its apex and
    lateral edge, loses its markings (darker) behind a thin bright pleural line."""

    def draw(img, lung, body, yy, xx) -> None:
        this = lung & ((xx < 0.5) if side == 0 else (xx > 0.5))
        out = np.abs(xx - 0.5) - 0.17  # lateral distance from the lung's centre line
        rim = this & ((out > 0.11 - depth) | (yy < 0.2 + depth))
        edge = this & ~rim & ((np.abs(out - (0.11 - depth)) < 0.012) | (np.abs(yy - (0.2 + depth)) < 0.012))
        img[rim] = 0.06  # air: no lung markings, darker than the lung
        img[edge] += 0.2

    return draw


def _drain(side: int, lower: float):
    """A drain tube entering from the lateral chest wall at height ``lower``, outside the lung field."""

    def draw(img, lung, body, yy, xx) -> None:
        x_wall = 0.02 if side == 0 else 0.98
        path = np.abs(yy - (lower + 0.35 * (xx - x_wall) ** 2)) < 0.016
        near = (np.abs(xx - x_wall) < 0.32)
        img[path & near & ~lung] = 0.92

    return draw


def write_pneumothorax_phantom(out_dir: str | Path, *, n_patients: int = 160, prevalence: float = 0.4,
                               drain: float = 1.0, seed: int = 0, size: int = 256,
                               images_per_patient: tuple[int, int] = (1, 2)) -> Path:
    """Write images, masks and ``manifest.csv`` (with ``finding_Pneumothorax``); return the manifest path."""
    for name, value in (("prevalence", prevalence), ("drain", drain)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name} must be in [0, 1], got {value}")
    out = phantom_dir(out_dir)
    rows = []
    for p in range(n_patients):
        rng = np.random.default_rng([seed, p, 17])
        positive = rng.random() < prevalence
        has_drain = positive and rng.random() < drain
        style = SOURCES[int(rng.integers(len(SOURCES)))].at_strength(SIGNATURE)
        side, depth, lower = int(rng.integers(2)), rng.uniform(0.04, 0.08), rng.uniform(0.62, 0.7)
        sex, age, scale = ("M", "F")[rng.integers(2)], int(rng.integers(18, 90)), rng.normal(1.0, 0.05)
        pid = f"px{seed}-{p:05d}"
        for k in range(int(rng.integers(images_per_patient[0], images_per_patient[1] + 1))):
            draws = ([_pneumothorax(side, depth)] if positive else []) + ([_drain(side, lower)] if has_drain else [])
            img, mask = render("NOR", "none", style, rng, size=size,
                               anatomy={"scale": scale, "shift": tuple(rng.normal(0, 0.015, 2))},
                               extra=(lambda *a, ds=draws: [d(*a) for d in ds]) if draws else None)
            stem = f"{pid}_{k}"
            rows.append(save_image(out, stem, img, mask, style, pid, f"px{seed}-{stem}") | {
                "patient_id": pid, "source": style.name, "label": "OTH" if positive else "NOR", "severity": "",
                "view": "AP" if has_drain else "PA", "sex": sex, "age": str(age), FINDING: "1" if positive else "0"})
    return write_manifest(out, rows, [*REQUIRED_COLUMNS, FINDING])
