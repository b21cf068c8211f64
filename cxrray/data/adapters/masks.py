"""Lung-mask collections: Montgomery and Shenzhen (Jaeger et al. 2014)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from cxrray.data.adapters.base import ADAPTERS, AdapterError, require, rows_frame


def _tb_label(stem: str) -> str:
    return "OTH" if stem.endswith("_1") else "NOR"  # ..._0 normal, ..._1 tuberculosis


@ADAPTERS.register("montgomery")
def montgomery(root: Path) -> pl.DataFrame:
    """Montgomery County CXR set (NLM).

    Layout: ``CXR_png/MCUCXR_NNNN_L.png`` (L = 0 normal, 1 tuberculosis) and
    ``ManualMask/leftMask/`` + ``ManualMask/rightMask/`` with one PNG each per
    image. The two masks are merged into ``masks_merged/<name>.png``.
    Licence: public domain (NLM). Cite: Jaeger et al., Quant. Imaging Med. Surg. 4(6) (2014).
    """
    out = root / "masks_merged"
    out.mkdir(exist_ok=True)
    rows = []
    for img in sorted(require(root / "CXR_png", "Montgomery images").glob("*.png")):
        left, right = root / "ManualMask" / "leftMask" / img.name, root / "ManualMask" / "rightMask" / img.name
        mask_rel = ""
        if left.exists() and right.exists():
            a, b = np.asarray(Image.open(left).convert("L")), np.asarray(Image.open(right).convert("L"))
            if a.shape != b.shape:
                raise AdapterError(f"{left} and {right}: left/right masks differ in size {a.shape} vs {b.shape}")
            Image.fromarray((((a > 0) | (b > 0)) * 255).astype(np.uint8)).save(out / img.name)
            mask_rel = f"masks_merged/{img.name}"
        rows.append({"image_path": f"CXR_png/{img.name}", "mask_path": mask_rel, "patient_id": f"mc-{img.stem}",
                     "source": "montgomery", "label": _tb_label(img.stem), "view": "PA"})
    return rows_frame(rows)


@ADAPTERS.register("shenzhen")
def shenzhen(root: Path) -> pl.DataFrame:
    """Shenzhen No. 3 Hospital CXR set (NLM).

    Layout: ``CXR_png/CHNCXR_NNNN_L.png`` (L = 0 normal, 1 tuberculosis) and
    lung masks in ``mask/CHNCXR_NNNN_L_mask.png`` (community masks, both lungs
    in one file; not every image has one).
    Licence: public domain (NLM). Cite: Jaeger et al., Quant. Imaging Med. Surg. 4(6) (2014).
    """
    rows = []
    for img in sorted(require(root / "CXR_png", "Shenzhen images").glob("*.png")):
        mask = root / "mask" / f"{img.stem}_mask.png"
        rows.append({"image_path": f"CXR_png/{img.name}",
                     "mask_path": f"mask/{mask.name}" if mask.exists() else "",
                     "patient_id": f"sz-{img.stem}", "source": "shenzhen", "label": _tb_label(img.stem),
                     "view": "PA"})
    return rows_frame(rows)
