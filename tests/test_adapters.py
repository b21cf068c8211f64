"""Each adapter on a tiny fixture in its collection's exact file format, made here."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from cxrray.data.adapters import ADAPTERS, convert
from cxrray.data.adapters.base import AdapterError
from cxrray.data.adapters.dicom_folder import salted_id
from cxrray.data.images import write_dicom
from cxrray.data.manifest import load_manifest, read_manifest


def _png(path: Path, value: int = 100, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def _dcm(path: Path, **tags) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dicom(path, np.arange(256, dtype=np.uint16).reshape(16, 16) * 16, **tags)


def test_every_adapter_has_layout_licence_and_citation():
    for name in ADAPTERS.names():
        doc = ADAPTERS.get(name).__doc__
        assert "Layout" in doc or "CSV" in doc, name
        assert "Licence" in doc or "licence" in doc.lower(), name


def test_covidx(tmp_path):
    (tmp_path / "train.txt").write_text("3 a.png COVID-19 cohen\n8 b.png normal rsna\n8 c.png normal rsna\n"
                                        "9 d.png pneumonia rsna\n")
    (tmp_path / "test.txt").write_text("11 e.png COVID-19 sirm\n")
    for s, f in (("train", "a"), ("train", "b"), ("train", "c"), ("train", "d"), ("test", "e")):
        _png(tmp_path / s / f"{f}.png")
    df = load_manifest(convert("covidx", tmp_path))
    assert df["label"].to_list() == ["CVP", "NOR", "NOR", "PNA", "CVP"]
    assert df["split"].to_list() == ["train"] * 4 + ["test"]
    assert df["patient_id"][1] == df["patient_id"][2] == "rsna-8"
    (tmp_path / "train.txt").write_text("3 a.png\n")
    with pytest.raises(AdapterError, match=r"train.txt, line 1"):
        convert("covidx", tmp_path)


def test_nih14(tmp_path):
    (tmp_path / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
        "00000001_000.png,Cardiomegaly|Effusion,0,1,058Y,M,PA,2682,2749,0.143,0.143,\n"
        "00000002_000.png,No Finding,0,2,81,F,AP,2500,2048,0.168,0.168,\n"
        "00000003_000.png,Pneumonia|Infiltration,1,3,45,F,PA,2500,2048,0.168,0.168,\n")
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000002_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000003_000.png\n")
    for i in (1, 2):
        _png(tmp_path / "images_001" / "images" / f"0000000{i}_000.png")
    _png(tmp_path / "images_002" / "images" / "00000003_000.png")
    df = load_manifest(convert("nih14", tmp_path))
    assert df["label"].to_list() == ["OTH", "NOR", "PNA"]
    assert df["age"].to_list() == ["58", "81", "45"] and df["split"].to_list() == ["train", "train", "test"]
    assert df["image_path"][2].endswith("images_002/images/00000003_000.png")
    assert df["finding_Effusion"].to_list() == ["1", "0", "0"] and df["finding_Pneumonia"].to_list() == ["0", "0", "1"]


def test_rsna_reads_header_without_identifying_tags(tmp_path):
    (tmp_path / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\naaa,264,152,213,379,1\naaa,562,152,256,453,1\nbbb,,,,,0\nccc,,,,,0\n")
    (tmp_path / "stage_2_detailed_class_info.csv").write_text(
        "patientId,class\naaa,Lung Opacity\naaa,Lung Opacity\nbbb,Normal\nccc,No Lung Opacity / Not Normal\n")
    for pid, sex in (("aaa", "F"), ("bbb", "M"), ("ccc", "F")):
        _dcm(tmp_path / "stage_2_train_images" / f"{pid}.dcm", PatientSex=sex, PatientAge="051Y",
             ViewPosition="PA", PatientName="Doe^Jane", PatientID=pid)
    path = convert("rsna", tmp_path)
    df = load_manifest(path)
    assert df["label"].to_list() == ["PNA", "NOR", "OTH"] and df["sex"].to_list() == ["F", "M", "F"]
    assert df["age"].to_list() == ["51"] * 3 and df.height == 3  # one row per image, not per box
    assert "Doe" not in path.read_text()


def test_covidgr_severity(tmp_path):
    for f in ("p1.jpg", "p2.jpg", "p3.jpg"):
        _png(tmp_path / "P" / f)
    _png(tmp_path / "N" / "n1.jpg")
    (tmp_path / "severity.csv").write_text("filename,severity\np1.jpg,NORMAL-PCR+\np2.jpg,SEVERE\n")
    df = load_manifest(convert("covidgr", tmp_path))
    names = df["image_path"].map_elements(lambda p: Path(p).name, return_dtype=pl.Utf8)
    assert dict(zip(names, df["severity"], strict=True)) == {"p1.jpg": "Normal-PCR+", "p2.jpg": "Severe", "p3.jpg": "",
                                                              "n1.jpg": "none"}
    (tmp_path / "severity.csv").write_text("filename,severity\np1.jpg,awful\n")
    with pytest.raises(AdapterError, match=r"unknown severity 'awful' for p1.jpg"):
        convert("covidgr", tmp_path)


def test_cohen(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "patientid,offset,sex,age,finding,RT_PCR_positive,view,modality,date,location,folder,filename\n"
        "2,0,M,65,Pneumonia/Viral/COVID-19,Y,PA,X-ray,2020,Hannover,images,a.png\n"
        "3,,F,,Pneumonia/Bacterial/Streptococcus,,AP Supine,X-ray,,,images,b.png\n"
        "4,,F,40,No Finding,,L,X-ray,,Milan,images,c.png\n"
        "5,,M,30,Pneumonia/Viral/SARS,,PA,CT,,Milan,images,d.png\n")
    for f in "abcd":
        _png(tmp_path / "images" / f"{f}.png")
    df = load_manifest(convert("cohen", tmp_path))
    assert df["label"].to_list() == ["CVP", "OBP"]  # lateral view and CT dropped
    assert df["source"].to_list() == ["Hannover", "cohen-unknown"]


def test_montgomery_merges_left_and_right(tmp_path):
    _png(tmp_path / "CXR_png" / "MCUCXR_0001_0.png")
    _png(tmp_path / "CXR_png" / "MCUCXR_0002_1.png")
    left = np.zeros((16, 16), np.uint8)
    left[2:10, 1:6] = 255
    right = np.zeros((16, 16), np.uint8)
    right[2:10, 9:14] = 255
    for name in ("MCUCXR_0001_0.png", "MCUCXR_0002_1.png"):
        (tmp_path / "ManualMask" / "leftMask").mkdir(parents=True, exist_ok=True)
        (tmp_path / "ManualMask" / "rightMask").mkdir(parents=True, exist_ok=True)
        Image.fromarray(left).save(tmp_path / "ManualMask" / "leftMask" / name)
        Image.fromarray(right).save(tmp_path / "ManualMask" / "rightMask" / name)
    df = load_manifest(convert("montgomery", tmp_path))
    merged = np.asarray(Image.open(df["mask_path"][0])) > 0
    assert np.array_equal(merged, (left > 0) | (right > 0))
    assert df["label"].to_list() == ["NOR", "OTH"]


def test_shenzhen(tmp_path):
    _png(tmp_path / "CXR_png" / "CHNCXR_0001_0.png")
    _png(tmp_path / "CXR_png" / "CHNCXR_0002_1.png")
    _png(tmp_path / "mask" / "CHNCXR_0001_0_mask.png", 255)
    df = load_manifest(convert("shenzhen", tmp_path))
    assert df["mask_path"][0].endswith("CHNCXR_0001_0_mask.png") and df["mask_path"][1] == ""


def test_dicom_folder_never_copies_phi_and_salts_ids(tmp_path):
    phi = {"PatientName": "Smith^John", "PatientBirthDate": "19500101", "InstitutionName": "St Elsewhere Hospital",
           "AccessionNumber": "ACC998877"}
    _dcm(tmp_path / "a" / "1.dcm", PatientID="MRN123", PatientSex="M", PatientAge="067Y", ViewPosition="AP", **phi)
    _dcm(tmp_path / "b" / "2.dcm", PatientID="MRN456", PatientSex="F", PatientAge="041Y", ViewPosition="PA", **phi)
    (tmp_path / "3.dcm").write_bytes(b"truncated")
    (tmp_path / "labels.csv").write_text("file,label,source\na/1.dcm,CVP,site1\n2.dcm,NOR,site2\n3.dcm,NOR,site2\n")
    path = convert("dicom_folder", tmp_path, salt="s3cret")
    text = path.read_text()
    for value in (*phi.values(), "MRN123", "MRN456"):
        assert value not in text
    rows, quarantine = read_manifest(path)
    by_name = {Path(r["image_path"]).name: r for r in rows.iter_rows(named=True)}
    assert by_name["1.dcm"]["patient_id"] == salted_id("MRN123", "s3cret") != by_name["2.dcm"]["patient_id"]
    assert (by_name["1.dcm"]["age"], by_name["2.dcm"]["age"]) == ("67", "41")
    assert (by_name["1.dcm"]["source"], by_name["2.dcm"]["source"]) == ("site1", "site2")
    assert quarantine.height == 0 and rows.height == 3  # the truncated file is reported later, by the reader


def test_adapter_cli_turns_bad_input_into_one_line(tmp_path, capsys):
    """A missing root or a root without the documented files: one line naming the path, exit 2 (before: a
    traceback)."""
    from cxrray.data.adapters.__main__ import main

    assert main(["covidx", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == (f"python -m cxrray.data.adapters: error: {tmp_path / 'nowhere'}: "
                                               "not a folder (the collection's root, as downloaded)")
    assert main(["covidx", str(tmp_path)]) == 2
    assert "train.txt: not found (COVIDx split list)" in capsys.readouterr().err


def test_params_answers_help_without_building_models(capsys):
    from cxrray.models.params import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--models" in capsys.readouterr().out
