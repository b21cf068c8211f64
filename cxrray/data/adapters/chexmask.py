"""CheXmask lung masks (Gaggion et al. 2024) for a collection already converted by its adapter.

CheXmask releases HybridGNet masks for ChestX-ray14 (ChestX-ray8), CheXpert, MIMIC-CXR-JPG, PadChest and
VinDr-CXR as one CSV per collection: an image id column (its name differs per collection: ``Image Index``,
``Path``, ``dicom_id``, ``ImageID``, ``image_id``), ``Dice RCA (Max)`` and ``Dice RCA (Mean)`` (the mask's
quality estimated by reverse classification accuracy), ``Left Lung``, ``Right Lung`` and ``Heart`` as
run-length codes (pairs of 1-based start and length over the row-major flattened image), and, in the
``OriginalResolution`` release, ``Height`` and ``Width``. The two lungs become one mask PNG per image; a mask
whose ``Dice RCA (Mean)`` is below ``min_dice`` is kept but rejected (``mask_rejected``), so the sweep puts
its row in ``quarantine.csv`` with the reason. Licence: PhysioNet Credentialed Health Data License 1.5.0 (masks
of credentialed collections) / the source collection's. Cite: Gaggion et al., Sci. Data 11, 511 (2024).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from cxrray.data.adapters.base import ADAPTERS, AdapterError, require

ID_COLUMNS = ("Image Index", "ImageID", "Path", "dicom_id", "image_id", "Image ID")


def rle_decode(code: str, height: int, width: int) -> np.ndarray:
    """A CheXmask run-length code -> (height, width) uint8 {0, 1}."""
    mask = np.zeros(height * width, np.uint8)
    runs = np.asarray(str(code or "").split(), dtype=np.int64)
    if len(runs) % 2:
        raise ValueError(f"run-length code with an odd number of values ({len(runs)})")
    for start, length in zip(runs[0::2] - 1, runs[1::2], strict=True):
        mask[start:start + length] = 1
    return mask.reshape(height, width)


def _key(path: str) -> str:
    """How an image is matched: its last three path parts when the id is a path (CheXpert's
    patient/study/view), else its file name without the extension."""
    parts = Path(path).parts
    return "/".join(parts[-3:]) if len(parts) > 1 else Path(path).stem


@ADAPTERS.register("chexmask")
def chexmask(root: Path, masks: str | None = None, min_dice: float = 0.7) -> pl.DataFrame:
    """CheXmask lung masks (Gaggion et al. 2024) for a collection its adapter already converted.

    Layout: ``root/cxrray_manifest.csv`` (written by the collection's adapter) and the CheXmask
    ``OriginalResolution`` CSV ``masks`` of that collection (an image id column, ``Dice RCA (Mean)``, ``Left
    Lung`` and ``Right Lung`` as run-length codes, ``Height``, ``Width``). Adds ``mask_path``
    (``masks_chexmask/<name>.png``), ``mask_dice`` and ``mask_rejected`` ('', or why the mask is not used).
    Licence: PhysioNet Credentialed Health Data License 1.5.0. Cite: Gaggion et al., Sci. Data 11, 511 (2024).
    """
    if not masks:
        raise AdapterError("chexmask: give the CheXmask CSV of this collection (--masks FILE)")
    manifest = pl.read_csv(require(root / "cxrray_manifest.csv", "the collection's manifest (run its adapter "
                                                                 "first)"), infer_schema=False)
    table = pl.read_csv(require(Path(masks), "CheXmask CSV"), infer_schema=False)
    id_col = next((c for c in ID_COLUMNS if c in table.columns), None)
    need = {"Dice RCA (Mean)", "Left Lung", "Right Lung", "Height", "Width"} - set(table.columns)
    if id_col is None or need:
        raise AdapterError(f"{masks}: not a CheXmask OriginalResolution CSV (missing "
                           f"{sorted(need) or ['an image id column: ' + ' / '.join(ID_COLUMNS)]})")
    by_key = {_key(r[id_col]): r for r in table.iter_rows(named=True)}
    out_dir = root / "masks_chexmask"
    out_dir.mkdir(exist_ok=True)
    paths, dice, rejected = [], [], []
    for image in manifest["image_path"].to_list():
        r = by_key.get(_key(image))
        if r is None:
            paths.append(manifest.filter(pl.col("image_path") == image)["mask_path"][0] or "")
            dice.append("")
            rejected.append("" if paths[-1] else "no CheXmask mask for this image")
            continue
        h, w = int(float(r["Height"])), int(float(r["Width"]))
        try:
            lungs = rle_decode(r["Left Lung"], h, w) | rle_decode(r["Right Lung"], h, w)
        except ValueError as exc:
            raise AdapterError(f"{masks}, image {r[id_col]}: {exc}") from None
        name = _key(image).replace("/", "_") + ".png"
        Image.fromarray(lungs * 255).save(out_dir / name)
        d = float(r["Dice RCA (Mean)"])
        paths.append(f"masks_chexmask/{name}")
        dice.append(f"{d:.4f}")
        rejected.append("" if d >= min_dice else f"CheXmask RCA Dice {d:.2f} below {min_dice}")
    return manifest.with_columns(pl.Series("mask_path", paths), pl.Series("mask_dice", dice),
                                 pl.Series("mask_rejected", rejected))
