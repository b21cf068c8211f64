"""Read CXR images (PNG, JPEG, DICOM) and lung masks into float arrays.

Images come back as float32 in [0, 1], 2-D, with 0 = black (air) whatever the
file's photometric convention; masks come back as uint8 {0, 1}. Any failure is
an ``ImageReadError`` that names the file, so the caller can add the row.

One intensity policy, whatever the format and the bit depth: every image (DICOM after its modality and VOI
LUTs; an 8-bit PNG or JPEG; a 16-bit PNG or TIFF whether it holds 10, 12 or 16 significant bits) is stretched
from its darkest to its brightest pixel, as a viewer without a window shows it. Why this one: the container's
nominal range (value / 255, value / 65535) says how the file was stored, not what was imaged, and real images
rarely use their whole range (none of the 46 human-masked fixture CXRs spans 0-255), so a nominal-range policy
reads the 8-bit and the 12-bit copy of one radiograph differently (up to 0.165 apart) and lets a source's bit
depth become a brightness signature. The stretch divides integer differences exactly, so every copy whose values
are an integer multiple of another's (bit shifts, x257, 12 bits in a 16-bit container) decodes to the very same
pixels and the duplicate check, which hashes the decoded pixels, names it; a copy re-quantised with rounding is
within half of one of its grey levels. Robust percentiles were not chosen: they clip burn-in text and markers,
the very shortcuts this tool measures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DICOM_SUFFIXES = {".dcm", ".dicom"}


class ImageReadError(ValueError):
    """An image or mask that cannot be used; the message names the file."""


def stretch(arr: np.ndarray) -> np.ndarray:
    """Darkest pixel to 0, brightest to 1 (float64); a constant image is all 0. For integer-valued pixels the
    result depends only on the ratios of their differences (exact subtraction, one correctly rounded division)."""
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise ImageReadError(f"{path}: multi-frame DICOM ({ds.NumberOfFrames} frames) is not a radiograph")
    arr = ds.pixel_array
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: expected one grayscale frame, got pixel shape {arr.shape}")
    arr = apply_modality_lut(arr, ds).astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        arr = apply_voi_lut(arr, ds, prefer_lut=True).astype(np.float64)
    arr = stretch(arr)
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        arr = 1.0 - arr  # MONOCHROME1: high values are dark
    return arr.astype(np.float32)


def _read_raster(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # more than 8 bits
            return stretch(np.asarray(im, dtype=np.float64)).astype(np.float32)
        return stretch_u8(np.asarray(im.convert("L")))


def stretch_u8(arr: np.ndarray) -> np.ndarray:
    """``stretch`` of 8-bit pixels as float32, through a 256-entry table computed in float64: the same values as
    stretching the whole image in float64 and casting, at a third of the time (the ingest's largest cost)."""
    lo, hi = int(arr.min()), int(arr.max())
    if hi == lo:
        return np.zeros(arr.shape, np.float32)
    table = ((np.arange(256, dtype=np.float64) - lo) / (hi - lo)).astype(np.float32)
    return table[arr]


def read_image(path: str | Path) -> np.ndarray:
    """Read a radiograph as float32 [0, 1] (H, W); raise ``ImageReadError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    try:
        arr = _read_dicom(path) if path.suffix.lower() in DICOM_SUFFIXES else _read_raster(path)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise ImageReadError(f"{path}: not a 2-D image (shape {arr.shape})")
    return arr


def write_dicom(path: str | Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                uid_seed: str | None = None, modality: str = "DX", **tags) -> Path:
    """Write a DX radiograph DICOM with pydicom (phantom sources and test fixtures).

    ``uid_seed`` makes the UIDs deterministic; ``tags`` are set as DICOM attributes.
    """
    from pydicom.dataset import Dataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

    uid = (lambda *extra: generate_uid(entropy_srcs=[uid_seed, *extra])) if uid_seed else (lambda *_: generate_uid())
    ds = Dataset()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = uid()
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.Modality = modality
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits_stored)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a lung mask as uint8 {0, 1} (any non-zero pixel is lung)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: mask file not found")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"))
    except Exception as exc:
        raise ImageReadError(f"{path}: unreadable mask ({type(exc).__name__}: {exc})") from exc
    return (arr > 0).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A lung mask at ``size``, covering: a pixel is lung when the image resize draws on any lung pixel
    for it. Nearest-neighbour masks leave a rim of partly-lung pixels outside the mask, through which
    lung content leaks into ``lungs_removed`` / ``lungs_boxed_out`` (seen on the unconfounded phantom)."""
    if mask.shape == (size, size):
        return mask.astype(np.uint8)
    return (resize((mask > 0).astype(np.float32), size) > 1e-6).astype(np.uint8)


def resize(arr: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """Resize to ``size`` x ``size`` (bilinear for images, nearest for masks)."""
    if arr.shape == (size, size):
        return arr
    if nearest:
        im = Image.fromarray(arr.astype(np.uint8))
        return np.asarray(im.resize((size, size), Image.Resampling.NEAREST))
    im = Image.fromarray(arr.astype(np.float32), mode="F")
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
