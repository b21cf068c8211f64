"""A phantom whose finding lies just inside the lung border, where segmentation masks fall short.

Masks from a U-Net or CheXmask tend to underestimate the lungs (Sourget et al. 2024), so ``lungs_removed`` can
still show a rim of lung. This phantom plants exactly that: a COVID-19 (CVP) patient's lungs are white in a
band of width ``band`` (a fraction of the image side) just inside the true lung border, and nowhere else; the
mask shipped with every image is the true lung shrunk by the same band (the mask misses the rim). Sources are
independent of the label. At mask dilation 0, ``lungs_removed`` keeps the rim and a model still tells CVP from
the rest (the verdict reads "shortcut"); grown by more than the band's width at the model's resolution, the mask
hides the rim and the model is at chance: the known answer of the mask-dilation axis (``--mask-dilation``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from cxrray.data.manifest import REQUIRED_COLUMNS
from cxrray.data.phantom import SIGNATURE, SOURCES, phantom_dir, render, save_image, write_manifest
from cxrray.registry import UserError

BAND = 2 / 64  # the rim's width: 2 px at the demo's 64 px, 8 px in the 256 px phantom image
WIDE = 1.15  # wider lungs than the other phantoms: the shrunk mask keeps a plausible lung area (the ingest gate)
RIM = 0.85  # the rim's brightness (lung is 0.16, soft tissue 0.45): a pleural-line-like white band


def _shrunk(lung: np.ndarray, px: int) -> np.ndarray:
    """The lung eroded by ``px`` pixels (a square structuring element, as ``representations.base.dilate``)."""
    return ndimage.binary_erosion(lung, structure=np.ones((3, 3), bool), iterations=px) if px else lung


def _rim(px: int):
    """Brighten the lung's outer ``px`` pixels (the band a mask shrunk by ``px`` misses)."""

    def draw(img, lung, body, yy, xx) -> None:
        img[lung & ~_shrunk(lung, px)] = RIM

    return draw


def write_border_phantom(out_dir: str | Path, *, n_patients: int = 160, prevalence: float = 0.5, seed: int = 0,
                         size: int = 256, band: float = BAND,
                         images_per_patient: tuple[int, int] = (1, 2)) -> Path:
    """Write images, shrunk masks and ``manifest.csv`` (labels CVP and NOR, task CL2); return the manifest."""
    if not 0.0 < prevalence < 1.0:
        raise UserError(f"prevalence must be in (0, 1), got {prevalence}")
    px = round(band * size)
    if not 0 < px < size // 8:
        raise UserError(f"band must be between 1 pixel and 1/8 of the image ({size} px), got {band}")
    out = phantom_dir(out_dir)
    rows = []
    for p in range(n_patients):
        rng = np.random.default_rng([seed, p, 29])
        positive = rng.random() < prevalence
        style = SOURCES[int(rng.integers(len(SOURCES)))].at_strength(SIGNATURE)
        sex, age, scale = ("M", "F")[rng.integers(2)], int(rng.integers(18, 90)), rng.normal(WIDE, 0.03)
        pid = f"pb{seed}-{p:05d}"
        for k in range(int(rng.integers(images_per_patient[0], images_per_patient[1] + 1))):
            img, lung = render("NOR", "none", style, rng, size=size,
                               anatomy={"scale": scale, "shift": tuple(rng.normal(0, 0.015, 2))},
                               extra=_rim(px) if positive else None)
            mask = _shrunk(lung.astype(bool), px).astype(np.uint8)  # the mask misses the rim, as masks do
            stem = f"{pid}_{k}"
            rows.append(save_image(out, stem, img, mask, style, pid, f"pb{seed}-{stem}") | {
                "patient_id": pid, "source": style.name, "label": "CVP" if positive else "NOR",
                "severity": "Moderate" if positive else "none", "view": "PA", "sex": sex, "age": str(age)})
    return write_manifest(out, rows, list(REQUIRED_COLUMNS))
