"""Adapters for the public CXR collections the five studies used."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from cxrray.data.adapters.base import ADAPTERS, AdapterError, require, rows_frame
from cxrray.data.tasks import NIH14_FINDINGS

COVIDX_CLASSES = {"normal": "NOR", "pneumonia": "PNA", "covid-19": "CVP", "covid": "CVP", "positive": "CVP",
                  "negative": "NOR"}


@ADAPTERS.register("covidx")
def covidx(root: Path) -> pl.DataFrame:
    """COVIDx (Wang & Wong 2020), versions 3-5.

    Layout: ``train.txt`` and ``test.txt`` (space separated: patient id,
    filename, class, data source), images in ``train/`` and ``test/``. Classes
    normal / pneumonia / COVID-19 become NOR / PNA / CVP; the data source
    (cohen, fig1, actmed, sirm, rsna) is the manifest source; the official
    split is kept (val is carved from train by patient later).
    Licence: per source (see the COVID-Net repository); code AGPL-3.0.
    Cite: Wang, Lin & Wong, Sci. Rep. 10, 19549 (2020).
    """
    rows = []
    for split in ("train", "test"):
        listing = require(root / f"{split}.txt", "COVIDx split list")
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 4:
                raise AdapterError(f"{listing}, line {n}: expected 'patient filename class source', got {line!r}")
            pid, fname, cls, source = parts[0], parts[1], parts[2].lower(), parts[-1]
            rows.append({"image_path": f"{split}/{fname}", "patient_id": f"{source}-{pid}", "source": source,
                         "label": COVIDX_CLASSES.get(cls, cls), "split": split})
    return rows_frame(rows)


def _nih_age(v: str) -> str:
    m = re.fullmatch(r"0*(\d+)([YMD]?)", str(v).strip())
    if not m:
        return ""
    age = int(m.group(1))
    return str({"M": age // 12, "D": 0}.get(m.group(2), age))


@ADAPTERS.register("nih14")
def nih14(root: Path) -> pl.DataFrame:
    """NIH ChestX-ray14 (Wang et al. 2017).

    Layout: ``Data_Entry_2017.csv`` (Image Index, Finding Labels with '|'
    between findings, Follow-up #, Patient ID, Patient Age, Patient Gender,
    View Position, ...), the official ``train_val_list.txt`` / ``test_list.txt``,
    images in ``images/`` or ``images_0NN/images/``. Every finding becomes a
    ``finding_<Name>`` column (task NIH14); label NOR for 'No Finding', PNA
    when Pneumonia is among the findings, else OTH. Ages like '058Y' are read.
    Licence: CC0 (NIH Clinical Center). Cite: Wang et al., CVPR 2017.
    """
    entries = pl.read_csv(require(root / "Data_Entry_2017.csv", "ChestX-ray14 label file"), infer_schema=False)
    need = {"Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position"}
    if need - set(entries.columns):
        raise AdapterError(f"{root / 'Data_Entry_2017.csv'}: missing column(s) {sorted(need - set(entries.columns))}")
    split_of = {}
    for split, name in (("train", "train_val_list.txt"), ("test", "test_list.txt")):
        listing = root / name
        if listing.exists():
            split_of.update(dict.fromkeys(listing.read_text().split(), split))
    where = {p.name: p.relative_to(root).as_posix() for p in root.glob("images*/**/*.png")}
    rows = []
    for r in entries.iter_rows(named=True):
        findings = set(r["Finding Labels"].split("|"))
        label = "NOR" if findings == {"No Finding"} else "PNA" if "Pneumonia" in findings else "OTH"
        row = {"image_path": where.get(r["Image Index"], f"images/{r['Image Index']}"),
               "patient_id": f"nih-{r['Patient ID']}", "source": "nih", "label": label,
               "view": r["View Position"], "sex": r["Patient Gender"], "age": _nih_age(r["Patient Age"])}
        row |= {f"finding_{f}": "1" if f in findings else "0" for f in NIH14_FINDINGS}
        if split_of:
            row["split"] = split_of.get(r["Image Index"], "train")
        rows.append(row)
    return rows_frame(rows)


@ADAPTERS.register("rsna")
def rsna(root: Path) -> pl.DataFrame:
    """RSNA Pneumonia Detection Challenge (2018).

    Layout: ``stage_2_train_labels.csv`` (patientId, x, y, width, height,
    Target; one row per box), ``stage_2_detailed_class_info.csv`` (patientId,
    class: Lung Opacity / Normal / No Lung Opacity / Not Normal), DICOMs in
    ``stage_2_train_images/<patientId>.dcm``. Lung Opacity -> PNA, Normal ->
    NOR, otherwise OTH. Sex, age and view come from the DICOM header (read
    without pixels); no identifying tag is copied.
    Licence: RSNA / Kaggle competition terms (NIH CC0 images).
    Cite: Shih et al., Radiology: AI 1(1) (2019).
    """
    import pydicom

    labels = pl.read_csv(require(root / "stage_2_train_labels.csv", "RSNA labels"), infer_schema=False)
    info = pl.read_csv(require(root / "stage_2_detailed_class_info.csv", "RSNA class info"), infer_schema=False)
    classes = info.unique("patientId", keep="first").select("patientId", "class")
    target = labels.group_by("patientId").agg(pl.col("Target").cast(pl.Int64).max())
    rows = []
    for r in target.join(classes, on="patientId", how="left").sort("patientId").iter_rows(named=True):
        rel = f"stage_2_train_images/{r['patientId']}.dcm"
        sex = age = view = ""
        if (root / rel).exists():
            ds = pydicom.dcmread(root / rel, stop_before_pixels=True,
                                 specific_tags=["PatientSex", "PatientAge", "ViewPosition"])
            sex, age = str(ds.get("PatientSex", "")), str(ds.get("PatientAge", ""))
            view = str(ds.get("ViewPosition", ""))
        label = "PNA" if r["Target"] == 1 else "NOR" if r["class"] == "Normal" else "OTH"
        rows.append({"image_path": rel, "patient_id": f"rsna-{r['patientId']}", "source": "rsna", "label": label,
                     "sex": sex, "age": _nih_age(age) if age else "", "view": view})
    return rows_frame(rows)


COVIDGR_SEVERITY = {"normal-pcr+": "Normal-PCR+", "normal_pcr+": "Normal-PCR+", "mild": "Mild",
                    "moderate": "Moderate", "severe": "Severe"}


@ADAPTERS.register("covidgr")
def covidgr(root: Path) -> pl.DataFrame:
    """COVIDGR-1.0 (Tabik et al. 2020): one hospital, one machine, PA views.

    Layout: ``P/`` (RT-PCR positive) and ``N/`` (negative) image folders; the
    severity of each positive (RALE: NORMAL-PCR+, MILD, MODERATE, SEVERE) in
    ``severity.csv`` (filename, severity) as distributed with the data; a
    positive without a severity row is kept with an empty severity. Every image
    is its own patient (the release has no patient ids), source 'granada'.
    Licence: research use (University of Granada). Cite: Tabik et al., IEEE JBHI 24(12) (2020).
    """
    sev = {}
    if (root / "severity.csv").exists():
        table = pl.read_csv(root / "severity.csv", infer_schema=False)
        fcol, scol = table.columns[:2]
        for r in table.iter_rows(named=True):
            key = r[scol].strip().lower()
            if key not in COVIDGR_SEVERITY:
                raise AdapterError(f"{root / 'severity.csv'}: unknown severity {r[scol]!r} for {r[fcol]}")
            sev[Path(r[fcol]).name] = COVIDGR_SEVERITY[key]
    rows = []
    for folder, label in (("P", "CVP"), ("N", "NOR")):
        for p in sorted(require(root / folder, f"COVIDGR {folder} folder").iterdir()):
            if p.suffix.lower() not in {".jpg", ".jpeg", ".png"}:
                continue
            rows.append({"image_path": f"{folder}/{p.name}", "patient_id": f"covidgr-{p.stem}", "source": "granada",
                         "label": label, "view": "PA",
                         "severity": sev.get(p.name, "") if label == "CVP" else "none"})
    return rows_frame(rows)


def _cohen_label(finding: str) -> str:
    f = finding.lower()
    if "covid-19" in f:
        return "CVP"
    if f.startswith("pneumonia/viral"):
        return "OVP"
    if f.startswith("pneumonia/bacterial"):
        return "OBP"
    if f.startswith("pneumonia"):
        return "PNA"
    return "NOR" if f in {"no finding", "normal"} else "OTH"


@ADAPTERS.register("cohen")
def cohen(root: Path) -> pl.DataFrame:
    """COVID-19 image data collection (Cohen et al. 2020).

    Layout: ``metadata.csv`` (patientid, offset, sex, age, finding, view,
    modality, location, folder, filename, ...) and ``images/``. Only X-ray rows
    in frontal views (PA, AP, AP Supine, AP semi erect) are kept. The finding
    hierarchy maps to labels: .../COVID-19 -> CVP, Pneumonia/Viral -> OVP,
    Pneumonia/Bacterial -> OBP, other Pneumonia -> PNA, No Finding -> NOR,
    else OTH. ``location`` (hospital or city) is the source.
    Licence: per image (mostly CC BY / CC BY-NC-SA; see its metadata).
    Cite: Cohen et al., arXiv:2006.11988 (2020).
    """
    meta = pl.read_csv(require(root / "metadata.csv", "Cohen metadata"), infer_schema=False)
    need = {"patientid", "finding", "view", "modality", "filename"}
    if need - set(meta.columns):
        raise AdapterError(f"{root / 'metadata.csv'}: missing column(s) {sorted(need - set(meta.columns))}")
    frontal = {"PA", "AP", "AP Supine", "AP semi erect"}
    rows = []
    for r in meta.fill_null("").iter_rows(named=True):
        if r["modality"] != "X-ray" or r["view"] not in frontal:
            continue
        rows.append({"image_path": f"{r.get('folder') or 'images'}/{r['filename']}",
                     "patient_id": f"cohen-{r['patientid']}", "source": r.get("location") or "cohen-unknown",
                     "label": _cohen_label(r["finding"]), "view": r["view"], "sex": r.get("sex", ""),
                     "age": re.sub(r"[^0-9.]", "", r.get("age", "") or "")})
    return rows_frame(rows)
