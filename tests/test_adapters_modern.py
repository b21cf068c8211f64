"""Adapters for today's collections (issue 20, item 2), each on a fixture in the collection's real on-disk
layout built here: CheXpert's uncertainty policies and patients from paths, MIMIC-CXR-JPG's gzipped tables and
pXX/pSUBJECT/sSTUDY folders, PadChest's label lists and birth years, VinDr-CXR's reader votes and DICOM headers,
and CheXmask's run-length masks with their quality threshold reaching quarantine.csv."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrray.data.adapters import convert
from cxrray.data.adapters.chexmask import rle_decode
from cxrray.data.images import write_dicom
from cxrray.data.manifest import read_manifest

FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
            "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
            "Fracture", "Support Devices")


def _jpg(path: Path, seed: int, shape=(40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)).save(path)


def _chexpert(tmp_path: Path) -> Path:
    root = tmp_path / "CheXpert-v1.0-small"
    head = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(FINDINGS)
    lines = {"train.csv": [head], "valid.csv": [head]}
    specs = [("train", 1, 1, "view1_frontal", "Frontal", "PA", "Male", {"Pleural Effusion": "-1.0",
                                                                      "Pneumonia": "1.0"}),
             ("train", 1, 1, "view2_lateral", "Lateral", "", "Male", {"Pleural Effusion": "-1.0"}),
             ("train", 2, 1, "view1_frontal", "Frontal", "AP", "Female", {"No Finding": "1.0"}),
             ("valid", 64541, 1, "view1_frontal", "Frontal", "AP", "Female", {"Pleural Effusion": "1.0"})]
    for k, (split, patient, study, view, fl, appa, sex, found) in enumerate(specs):
        rel = f"{split}/patient{patient:05d}/study{study}/{view}.jpg"
        _jpg(root / rel, k)
        values = [found.get(f, "") for f in FINDINGS]
        lines["valid.csv" if split == "valid" else "train.csv"].append(
            f"CheXpert-v1.0-small/{rel},{sex},{60 + k},{fl},{appa}," + ",".join(values))
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("policy, expected", [("ones", "1"), ("zeros", "0"), ("ignore", "")])
def test_chexpert_uncertainty_policies_patients_views_and_splits(tmp_path, policy, expected):
    root = _chexpert(tmp_path)
    manifest, _ = read_manifest(convert("chexpert", root, uncertain=policy))
    assert manifest["image_path"].to_list() == [str(root / p) for p in (
        "train/patient00001/study1/view1_frontal.jpg", "train/patient00002/study1/view1_frontal.jpg",
        "valid/patient64541/study1/view1_frontal.jpg")]
    first = manifest.row(0, named=True)
    assert first["finding_Pleural_Effusion"] == expected and first["finding_Pneumonia"] == "1"
    assert first["finding_Cardiomegaly"] == "0"  # not mentioned: negative, as the labeler output is read
    assert first["patient_id"] == "chexpert-patient00001" and first["label"] == "PNA" and first["sex"] == "M"
    assert first["study"] == "patient00001/study1"
    assert manifest["label"].to_list() == ["PNA", "NOR", "OTH"] and manifest["split"].to_list() == \
        ["train", "train", "test"]
    every = read_manifest(convert("chexpert", root, views="all"))[0]
    assert every.height == 4 and "LATERAL" in every["view"].to_list()  # "LAT" read as the vocabulary's value


def _gz(path: Path, text: str) -> None:
    with gzip.open(path, "wt") as f:
        f.write(text)


def test_mimic_cxr_jpg_tables_folders_and_split(tmp_path):
    root = tmp_path / "mimic-cxr-jpg"
    root.mkdir()
    images = [("d1", "10000032", "50414267", "PA", "train"), ("d2", "10000032", "50414267", "LATERAL", "train"),
              ("d3", "19999733", "57132437", "AP", "validate"), ("d4", "15000001", "51111111", "AP", "test")]
    _gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", "dicom_id,subject_id,study_id,ViewPosition\n" + "".join(
        f"{d},{s},{st},{v}\n" for d, s, st, v, _ in images))
    _gz(root / "mimic-cxr-2.0.0-split.csv.gz", "dicom_id,study_id,subject_id,split\n" + "".join(
        f"{d},{st},{s},{sp}\n" for d, s, st, _, sp in images))
    labels = {"50414267": {"Pneumothorax": "1.0", "Support Devices": "-1.0"}, "57132437": {"No Finding": "1.0"},
              "51111111": {"Pneumonia": "1.0"}}
    _gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "subject_id,study_id," + ",".join(FINDINGS) + "\n" + "".join(
        f"{s},{st}," + ",".join(labels[st].get(f, "") for f in FINDINGS) + "\n"
        for s, st in {(s, st) for _, s, st, _, _ in images}))
    for k, (d, s, st, _, _) in enumerate(images):
        _jpg(root / f"files/p{s[:2]}/p{s}/s{st}/{d}.jpg", k)
    manifest, quarantine = read_manifest(convert("mimic_cxr", root, uncertain="zeros"))
    assert quarantine.height == 0
    assert [Path(p).name for p in manifest["image_path"]] == ["d1.jpg", "d3.jpg", "d4.jpg"]  # lateral left out
    assert manifest["image_path"][0].endswith("files/p10/p10000032/s50414267/d1.jpg")
    assert manifest["patient_id"].to_list() == ["mimic-10000032", "mimic-19999733", "mimic-15000001"]
    assert manifest["split"].to_list() == ["train", "val", "test"]
    assert manifest["label"].to_list() == ["OTH", "NOR", "PNA"]
    assert manifest["finding_Pneumothorax"][0] == "1" and manifest["finding_Support_Devices"][0] == "0"
    assert manifest["finding_Edema"][0] == ""  # not mentioned: unknown in MIMIC (default blank '')


def test_padchest_label_lists_devices_and_age(tmp_path):
    root = tmp_path / "padchest"
    rows = [("a.png", "0", "20150312", "1950", "M", "PA", "['pneumonia', 'chest drain tube']"),
            ("b.png", "1", "20160101", "1980.0", "F", "AP_horizontal", "['normal']"),
            ("c.png", "1", "20160101", "", "F", "PA", "not a list")]
    lines = ["ImageID,ImageDir,StudyDate_DICOM,PatientID,PatientBirth,PatientSex_DICOM,Projection,Labels"]
    for k, (img, d, date, birth, sex, proj, labels) in enumerate(rows):
        path = root / d / img
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.random.default_rng(k).random((40, 32)) * 4095).astype(np.uint16)).save(path)
        lines.append(f'{img},{d},{date},pat{k},{birth},{sex},{proj},"{labels}"')
    root.mkdir(exist_ok=True)
    (root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv").write_text("\n".join(lines) + "\n")
    manifest, _ = read_manifest(convert("padchest", root))
    a, b, c = manifest.iter_rows(named=True)
    assert (a["label"], a["age"], a["finding_chest_drain_tube"], a["finding_pneumothorax"]) == ("PNA", "65", "1", "0")
    assert (b["label"], b["age"], b["view"]) == ("NOR", "36", "AP SUPINE")  # PadChest's AP_horizontal: lying down
    assert c["finding_pneumonia"] == "" and c["age"] == ""  # an unreadable label list: unknown, not negative


def test_vindr_cxr_reader_votes_and_headers(tmp_path):
    root = tmp_path / "vindr"
    (root / "annotations").mkdir(parents=True)
    names = ["Aortic enlargement", "Pneumothorax", "Pneumonia", "No finding"]
    train = [("img1", "R1", [0, 1, 0, 0]), ("img1", "R2", [0, 1, 0, 0]), ("img1", "R3", [1, 0, 0, 0]),
             ("img2", "R1", [0, 0, 0, 1]), ("img2", "R4", [0, 0, 0, 1]), ("img2", "R5", [0, 0, 1, 0])]
    (root / "annotations" / "image_labels_train.csv").write_text(
        "image_id,rad_id," + ",".join(names) + "\n" + "".join(f"{i},{r}," + ",".join(map(str, v)) + "\n"
                                                            for i, r, v in train))
    (root / "annotations" / "image_labels_test.csv").write_text(
        "image_id," + ",".join(names) + "\nimg3,0,0,1,0\n")
    for k, (split, img) in enumerate((("train", "img1"), ("train", "img2"), ("test", "img3"))):
        (root / split).mkdir(exist_ok=True)
        write_dicom(root / split / f"{img}.dicom", (np.random.default_rng(k).random((40, 32)) * 4000).astype(
            np.uint16), uid_seed=img, PatientSex="F" if k else "M", PatientAge=f"0{45 + k}Y")
    manifest, quarantine = read_manifest(convert("vindr_cxr", root))
    assert quarantine.height == 0
    one, two, three = manifest.iter_rows(named=True)
    assert one["finding_Pneumothorax"] == "1" and one["finding_Aortic_enlargement"] == "0"  # 2 of 3 vs 1 of 3
    assert two["label"] == "NOR" and three["label"] == "PNA" and three["split"] == "test"
    assert (one["sex"], one["age"], two["age"]) == ("M", "45", "46")


def _rle(mask: np.ndarray) -> str:
    """CheXmask's encoding: 1-based (start, length) runs over the row-major flattened mask."""
    flat = np.concatenate([[0], mask.ravel().astype(int), [0]])
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges[1::2] -= edges[::2]
    return " ".join(map(str, edges))


def test_chexmask_masks_decode_exactly_and_low_quality_rows_are_quarantined(tmp_path):
    root = _chexpert(tmp_path)
    convert("chexpert", root)
    h, w = 40, 32
    left, right = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    left[8:34, 3:13], right[8:34, 19:29] = 1, 1
    assert np.array_equal(rle_decode(_rle(left), h, w), left)
    lines = ["Path,Dice RCA (Max),Dice RCA (Mean),Left Lung,Right Lung,Heart,Height,Width"]
    for path, dice in (("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", 0.91),
                       ("CheXpert-v1.0/train/patient00002/study1/view1_frontal.jpg", 0.55)):
        lines.append(f"{path},{dice + 0.02},{dice},{_rle(left)},{_rle(right)},,{h},{w}")
    (tmp_path / "CheXpert.csv").write_text("\n".join(lines) + "\n")
    written = convert("chexmask", root, masks=str(tmp_path / "CheXpert.csv"))
    manifest, quarantine = read_manifest(written)
    mask = np.asarray(Image.open(manifest["mask_path"][0])) > 0
    assert np.array_equal(mask, (left | right) > 0)
    assert quarantine["row"].to_list() == [2, 3]
    assert "mask rejected: CheXmask RCA Dice 0.55 below 0.7" in quarantine["reason"][0]
    assert "mask rejected: no CheXmask mask for this image" in quarantine["reason"][1]
