"""Adapters for today's large CXR collections: CheXpert, MIMIC-CXR-JPG, PadChest and VinDr-CXR.

Each keeps the collection's findings as ``finding_<Name>`` columns (1 / 0 / empty = unknown; spaces become
underscores: ``finding_Pleural_Effusion``), so that ``--task finding_<Name>`` trains on any of them, and sets
``label`` NOR (no finding), PNA (pneumonia among the findings) or OTH (anything else).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import polars as pl

from cxrray.data.adapters.base import ADAPTERS, AdapterError, require, rows_frame

CHEXPERT_FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                     "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                     "Pleural Other", "Fracture", "Support Devices")
UNCERTAIN = {"ones": "1", "zeros": "0", "ignore": ""}  # the CheXpert paper's U-Ones, U-Zeros, U-Ignore


def _column(name: str) -> str:
    return "finding_" + re.sub(r"[^0-9A-Za-z]+", "_", name.strip()).strip("_")


def _label(findings: dict[str, str], none_name: str = "No Finding") -> str:
    if findings.get(none_name) == "1":
        return "NOR"
    return "PNA" if findings.get("Pneumonia") == "1" else "OTH"


def _labeler_value(v: object, uncertain: str, blank: str) -> str:
    """A CheXpert-labeler cell (1.0, 0.0, -1.0 uncertain, empty not mentioned) -> '1', '0' or ''."""
    s = "" if v is None else str(v).strip()
    if s in ("1", "1.0"):
        return "1"
    if s in ("0", "0.0"):
        return "0"
    if s in ("-1", "-1.0"):
        return UNCERTAIN[uncertain]
    return blank


def _check_policy(uncertain: str) -> None:
    if uncertain not in UNCERTAIN:
        raise AdapterError(f"uncertain labels: {uncertain!r} is not a policy; valid: {sorted(UNCERTAIN)}")


@ADAPTERS.register("chexpert")
def chexpert(root: Path, uncertain: str = "ones", views: str = "frontal", blank: str = "0") -> pl.DataFrame:
    """CheXpert (Irvin et al. 2019), v1.0 or v1.0-small.

    Layout: ``train.csv`` and ``valid.csv`` (Path, Sex, Age, Frontal/Lateral, AP/PA and the 14 observations:
    1.0 positive, 0.0 negative, -1.0 uncertain, empty not mentioned), images under
    ``train/patientNNNNN/studyN/viewN_frontal.jpg``; the ``Path`` column starts with the release folder
    (``CheXpert-v1.0-small/train/...``), which is ``root`` itself. ``uncertain``: ``ones`` (U-Ones),
    ``zeros`` (U-Zeros) or ``ignore`` (U-Ignore: unknown, left out of that finding's task); ``blank``: what
    "not mentioned" means (0, as the paper's labeler output is read; '' for unknown). The patient is the
    ``patientNNNNN`` folder, the study (``study`` column) its ``studyN`` folder; ``views`` frontal (default)
    or all. ``valid.csv`` (labelled by radiologists) is the test split; the validation split is carved from
    train by patient.
    Licence: Stanford University School of Medicine CheXpert Dataset Research Use Agreement.
    Cite: Irvin et al., AAAI 2019.
    """
    _check_policy(uncertain)
    rows = []
    for split, name, folder in (("train", "train.csv", "train"), ("test", "valid.csv", "valid")):
        table = pl.read_csv(require(root / name, "CheXpert label file"), infer_schema=False)
        missing = sorted({"Path", "Sex", "Age", "Frontal/Lateral"} - set(table.columns))
        if missing:
            raise AdapterError(f"{root / name}: missing column(s) {missing}")
        for r in table.iter_rows(named=True):
            if views == "frontal" and r["Frontal/Lateral"] != "Frontal":
                continue
            parts = Path(r["Path"]).parts
            if folder not in parts:
                raise AdapterError(f"{root / name}: path {r['Path']!r} has no {folder}/ folder")
            rel = Path(*parts[parts.index(folder):])
            findings = {f: _labeler_value(r.get(f), uncertain, blank) for f in CHEXPERT_FINDINGS if f in r}
            rows.append({"image_path": rel.as_posix(), "patient_id": f"chexpert-{rel.parts[1]}",
                         "study": f"{rel.parts[1]}/{rel.parts[2]}", "source": "chexpert", "label": _label(findings),
                         "view": r.get("AP/PA") or ("LAT" if r["Frontal/Lateral"] == "Lateral" else ""),
                         "sex": {"Male": "M", "Female": "F"}.get(r["Sex"], ""), "age": r["Age"] or "",
                         "split": split, **{_column(f): v for f, v in findings.items()}})
    return rows_frame(rows)


def _read(root: Path, stem: str, what: str) -> pl.DataFrame:
    for name in (f"{stem}.csv.gz", f"{stem}.csv"):
        if (root / name).exists():
            return pl.read_csv(root / name, infer_schema=False)
    raise AdapterError(f"{root / (stem + '.csv.gz')}: not found ({what})")


@ADAPTERS.register("mimic_cxr")
def mimic_cxr(root: Path, uncertain: str = "ones", views: str = "frontal", blank: str = "") -> pl.DataFrame:
    """MIMIC-CXR-JPG (Johnson et al. 2019), v2.0.0 / v2.1.0.

    Layout: ``mimic-cxr-2.0.0-metadata.csv(.gz)`` (dicom_id, subject_id, study_id, ViewPosition, ...),
    ``mimic-cxr-2.0.0-chexpert.csv(.gz)`` (subject_id, study_id and the 14 CheXpert-labeler observations per
    study), ``mimic-cxr-2.0.0-split.csv(.gz)`` (dicom_id, split: train / validate / test), images at
    ``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg``. The patient is ``subject_id``; ``uncertain`` as for CheXpert;
    a study's findings go to each of its images; ``views`` frontal keeps PA and AP. Sex and age are not in the
    release (MIMIC-IV's patients table has them). Licence: PhysioNet Credentialed Health Data License 1.5.0.
    Cite: Johnson et al., Sci. Data 6, 317 (2019); PhysioNet.
    """
    _check_policy(uncertain)
    meta = _read(root, "mimic-cxr-2.0.0-metadata", "MIMIC-CXR-JPG metadata")
    labels = _read(root, "mimic-cxr-2.0.0-chexpert", "MIMIC-CXR-JPG CheXpert labels")
    split = _read(root, "mimic-cxr-2.0.0-split", "MIMIC-CXR-JPG split")
    table = meta.join(labels, on=["subject_id", "study_id"], how="left").join(
        split.select("dicom_id", "split"), on="dicom_id", how="left")
    rows = []
    for r in table.iter_rows(named=True):
        view = r.get("ViewPosition") or ""
        if views == "frontal" and view not in ("PA", "AP"):
            continue
        findings = {f: _labeler_value(r.get(f), uncertain, blank) for f in CHEXPERT_FINDINGS if f in r}
        sid = r["subject_id"]
        rows.append({"image_path": f"files/p{sid[:2]}/p{sid}/s{r['study_id']}/{r['dicom_id']}.jpg",
                     "patient_id": f"mimic-{sid}", "source": "mimic", "label": _label(findings), "view": view,
                     "split": {"validate": "val"}.get(r["split"] or "", r["split"] or ""),
                     **{_column(f): v for f, v in findings.items()}})
    return rows_frame(rows)


PADCHEST_FINDINGS = ("normal", "pneumonia", "pneumothorax", "cardiomegaly", "pleural effusion", "atelectasis",
                     "consolidation", "nodule", "mass", "emphysema", "fibrosis", "infiltrates", "COPD signs",
                     "chest drain tube", "pacemaker")


@ADAPTERS.register("padchest")
def padchest(root: Path, findings: tuple[str, ...] = PADCHEST_FINDINGS) -> pl.DataFrame:
    """PadChest (Bustos et al. 2020).

    Layout: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (ImageID, ImageDir, StudyDate_DICOM,
    PatientID, PatientBirth, PatientSex_DICOM, Projection, Labels as a list such as "['pneumonia',
    'infiltrates']", ...), 16-bit PNGs at ``<ImageDir>/<ImageID>``. Each of ``findings`` becomes a column (1
    when among the image's labels, else 0; devices such as chest drains and pacemakers too: the shortcuts to
    test); age = study year - birth year. Licence: PadChest Dataset Research Use Agreement (BIMCV).
    Cite: Bustos et al., Med. Image Anal. 66, 101797 (2020).
    """
    matches = sorted(root.glob("PADCHEST_chest_x_ray_images_labels_*.csv"))
    table = pl.read_csv(require(matches[0] if matches else root / "PADCHEST_chest_x_ray_images_labels_160K.csv",
                                "PadChest label file"), infer_schema=False)
    rows = []
    for r in table.iter_rows(named=True):
        try:
            labels = {str(x).strip() for x in ast.literal_eval(r["Labels"] or "[]")}
        except (ValueError, SyntaxError):
            labels = set()  # unreadable list: every finding unknown
            known = False
        else:
            known = True
        year, birth = (r.get("StudyDate_DICOM") or "")[:4], (r.get("PatientBirth") or "").split(".")[0]
        row = {f: ("1" if f in labels else "0") if known else "" for f in findings}
        rows.append({"image_path": f"{r['ImageDir']}/{r['ImageID']}", "patient_id": f"padchest-{r['PatientID']}",
                     "source": "padchest", "label": "NOR" if labels == {"normal"} else
                     "PNA" if "pneumonia" in labels else "OTH",
                     "view": r.get("Projection") or "", "sex": r.get("PatientSex_DICOM") or "",
                     "age": str(int(year) - int(birth)) if year.isdigit() and birth.isdigit() else "",
                     **{_column(f): v for f, v in row.items()}})
    return rows_frame(rows)


@ADAPTERS.register("vindr_cxr")
def vindr_cxr(root: Path, agree: int = 2) -> pl.DataFrame:
    """VinDr-CXR (Nguyen et al. 2022).

    Layout: ``annotations/image_labels_train.csv`` (image_id, rad_id, then one 0/1 column per finding:
    "Aortic enlargement", ..., "Pneumothorax", ..., "Pneumonia", "Tuberculosis", "Other disease", "No
    finding"; three radiologists per training image), ``annotations/image_labels_test.csv`` (the consensus of
    five, one row per image), DICOMs at ``train/<image_id>.dicom`` and ``test/<image_id>.dicom``. A training
    finding is positive when at least ``agree`` of the image's readers marked it (2 of 3: majority). Every image
    is its own de-identified patient (no patient id is released); sex and age come from the DICOM headers.
    Licence: PhysioNet Credentialed Health Data License 1.5.0. Cite: Nguyen et al., Sci. Data 9, 429 (2022).
    """
    import pydicom

    rows = []
    for split in ("train", "test"):
        table = pl.read_csv(require(root / "annotations" / f"image_labels_{split}.csv", "VinDr-CXR labels"),
                            infer_schema=False)
        names = [c for c in table.columns if c not in ("image_id", "rad_id")]
        votes = table.group_by("image_id", maintain_order=True).agg(
            *[pl.col(c).cast(pl.Int64, strict=False).sum() for c in names], pl.len().alias("_readers"))
        for r in votes.iter_rows(named=True):
            need = min(agree, r["_readers"])
            findings = {c: "1" if (r[c] or 0) >= need else "0" for c in names}
            path = root / split / f"{r['image_id']}.dicom"
            sex = age = ""
            if path.exists():
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientSex", "PatientAge"])
                sex = str(ds.get("PatientSex", "")).strip()
                m = re.fullmatch(r"0*(\d+)Y?", str(ds.get("PatientAge", "")).strip())
                age = m.group(1) if m else ""
            rows.append({"image_path": f"{split}/{r['image_id']}.dicom", "patient_id": f"vindr-{r['image_id']}",
                         "source": "vindr", "label": _label(findings, "No finding"), "sex": sex, "age": age,
                         "split": split, **{_column(c): v for c, v in findings.items()}})
    return rows_frame(rows)
