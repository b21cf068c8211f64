"""A folder of DICOMs (e.g. a hospital export) with a small label CSV."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from cxrray.data.adapters.base import ADAPTERS, AdapterError, require, rows_frame

# The only header fields read. Names, birth dates, institution, accession
# numbers and every other identifying tag are never read, so they cannot leak.
HEADER_FIELDS = ["PatientID", "PatientSex", "PatientAge", "ViewPosition", "NumberOfFrames"]


def salted_id(patient_id: str, salt: str) -> str:
    """A stable pseudonym: the first 16 hex digits of sha256(salt + id)."""
    return hashlib.sha256((salt + patient_id).encode()).hexdigest()[:16]


@ADAPTERS.register("dicom_folder")
def dicom_folder(root: Path, labels: str | Path | None = None, salt: str | None = None) -> pl.DataFrame:
    """Every ``*.dcm`` below ``root``, labelled by a CSV (default ``root/labels.csv``).

    The CSV has columns ``file`` (path relative to root, or file name) and
    ``label``, optionally ``severity`` and ``source`` (default 'dicom').
    Patient id, sex, age and view come from the header (read without pixels);
    with ``salt`` the patient id is replaced by ``salted_id``. A file without a
    label row is kept with label '' (quarantined by the manifest check, so it is
    reported by row rather than silently dropped). Licence and citation: the
    user's own data.
    """
    import pydicom

    table = pl.read_csv(require(Path(labels) if labels else root / "labels.csv", "label CSV"), infer_schema=False)
    if not {"file", "label"} <= set(table.columns):
        raise AdapterError(f"label CSV needs columns file,label; found {table.columns}")
    by_file = {r["file"]: r for r in table.fill_null("").iter_rows(named=True)}
    rows = []
    for path in sorted(root.rglob("*.dcm")):
        rel = path.relative_to(root).as_posix()
        meta = by_file.get(rel) or by_file.get(path.name) or {}
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_FIELDS)
            pid = str(ds.get("PatientID", "")) or path.stem
            sex, age = str(ds.get("PatientSex", "")), str(ds.get("PatientAge", ""))
            view = str(ds.get("ViewPosition", ""))
        except Exception:  # noqa: BLE001  (an unreadable header: keep the row, the image reader reports the file later)
            pid, sex, age, view = path.stem, "", "", ""
        rows.append({"image_path": rel, "patient_id": salted_id(pid, salt) if salt else pid,
                     "source": meta.get("source") or "dicom", "label": meta.get("label", ""),
                     "severity": meta.get("severity", ""), "view": view, "sex": sex,
                     "age": age.rstrip("Y").lstrip("0") if age.endswith("Y") else ""})
    return rows_frame(rows)
