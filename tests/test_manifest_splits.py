import shutil

import polars as pl
import pytest
from conftest import REAL_MINI

from cxrray.data.images import ImageReadError, read_image
from cxrray.data.manifest import ManifestError, load_manifest, manifest_fingerprint, read_manifest
from cxrray.data.splits import LeakageError, assign_splits, check_no_leakage


def test_real_mini_manifest_loads():
    df = load_manifest(REAL_MINI)
    assert df.height == 111
    assert df["row"].to_list() == list(range(1, 112))
    assert (df["mask_path"] != "").sum() == 46
    img = read_image(df["image_path"][0])
    assert img.shape == (256, 256) and 0.0 <= img.min() < img.max() <= 1.0


def _copy_manifest(tmp_path, edit) -> str:
    text = REAL_MINI.read_text().splitlines()
    text = edit(text)
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(text) + "\n")
    for sub in ("images", "masks"):
        (tmp_path / sub).symlink_to(REAL_MINI.parent / sub)
    return path


def test_missing_column_names_file_and_column(tmp_path):
    path = _copy_manifest(tmp_path, lambda t: [",".join(line.split(",")[:-1]) for line in t])
    with pytest.raises(ManifestError, match=r"manifest.csv: missing column\(s\) \['age'\]"):
        load_manifest(path)


def test_wrong_column_name_is_reported(tmp_path):
    path = _copy_manifest(tmp_path, lambda t: [t[0].replace("patient_id", "patient"), *t[1:]])
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['patient_id'\]"):
        load_manifest(path)


def test_bad_label_names_row(tmp_path):
    def edit(t):
        t[5] = t[5].replace(",CVP,", ",COVID,")
        return t

    path = _copy_manifest(tmp_path, edit)
    with pytest.raises(ManifestError, match=r"manifest.csv, row 5: unknown label 'COVID'"):
        load_manifest(path)


def test_row_problems_are_quarantined_and_the_rest_kept(tmp_path):
    def edit(t):
        t[3] = t[3].replace(",CVP,", ",COVID,")  # row 3: unknown label
        t[7] = t[7].rsplit(",", 1)[0] + ",forty"  # row 7: bad age
        t.append(t[10])  # row 111 + 1: duplicate of row 10
        parts = t[12].split(",")
        parts[2] = ""  # row 12: no patient
        t[12] = ",".join(parts)
        return t

    rows, quarantine = read_manifest(_copy_manifest(tmp_path, edit))
    assert quarantine["row"].to_list() == [3, 7, 12, 112]
    reasons = quarantine["reason"].to_list()
    assert "row 3: unknown label 'COVID'" in reasons[0] and "row 7: non-numeric age 'forty'" in reasons[1]
    assert "row 12: empty patient_id" in reasons[2] and "row 112: duplicate of row 10" in reasons[3]
    assert rows.height == 112 - 4 and not set(rows["row"]) & {3, 7, 12, 112}


def test_unreadable_image_names_file(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match=r"x.png: unreadable image"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "missing.png")


def test_fingerprint_ignores_location(tmp_path):
    a = load_manifest(REAL_MINI)
    shutil.copytree(REAL_MINI.parent, tmp_path / "moved")
    b = load_manifest(tmp_path / "moved" / "manifest.csv")
    assert manifest_fingerprint(a) == manifest_fingerprint(b)
    assert manifest_fingerprint(a) != manifest_fingerprint(a.head(110))


def test_patient_level_stratified_splits():
    df = assign_splits(load_manifest(REAL_MINI), seed=0)
    per_patient = df.group_by("patient_id").agg(pl.col("split").n_unique())
    assert per_patient["split"].max() == 1
    for label in ("CVP", "NOR", "OBP", "OVP"):
        assert set(df.filter(pl.col("label") == label)["split"]) == {"train", "val", "test"}
    share = df.group_by("split").len().to_dict(as_series=False)
    counts = dict(zip(share["split"], share["len"], strict=True))
    assert counts["train"] > counts["val"] and counts["train"] > counts["test"]
    assert assign_splits(load_manifest(REAL_MINI), seed=0).equals(df)
    assert not assign_splits(load_manifest(REAL_MINI), seed=1)["split"].equals(df["split"])


def test_leakage_is_refused_with_patient_and_rows():
    df = assign_splits(load_manifest(REAL_MINI), seed=0)
    pid = df["patient_id"][0]
    rows = df.filter(pl.col("patient_id") == pid)["row"].to_list()
    assert len(rows) > 1
    leaked = df.with_columns(pl.when(pl.col("row") == rows[0]).then(pl.lit("test")).otherwise(pl.col("split"))
                             .alias("split"))
    leaked = leaked.with_columns(pl.when(pl.col("row") == rows[1]).then(pl.lit("train"))
                                 .otherwise(pl.col("split")).alias("split"))
    with pytest.raises(LeakageError, match=f"{pid} in \\['test', 'train'\\]"):
        check_no_leakage(leaked)
    with pytest.raises(LeakageError):
        assign_splits(leaked)  # a given split column is checked, never trusted


def test_official_train_test_split_gets_a_val_partition_by_patient():
    df = load_manifest(REAL_MINI)
    patients = df["patient_id"].unique().sort().to_list()
    test_patients = set(patients[::4])
    official = df.with_columns(pl.when(pl.col("patient_id").is_in(list(test_patients))).then(pl.lit("test"))
                               .otherwise(pl.lit("train")).alias("split"))
    out = assign_splits(official, seed=0)
    assert set(out.filter(pl.col("split") == "test")["patient_id"]) == test_patients  # kept as given
    assert set(out["split"]) == {"train", "val", "test"} and out.height == df.height
    check_no_leakage(out)


def test_split_allocation_is_exact_and_small_strata_reach_the_test_split():
    """Rounding per stratum put every patient of a one- or two-patient stratum into train (round(0.6) = 1):
    such strata never reached the test split and the totals drifted. The allocation is exact over the whole
    set, and a small stratum reaches test about as often as the test fraction says."""
    rows = [{"patient_id": f"p{i:03d}", "label": f"L{i % 40}", "source": "s"} for i in range(40)]  # 40 singletons
    rows += [{"patient_id": f"q{i:03d}", "label": "BIG", "source": "s"} for i in range(60)]
    df = pl.DataFrame(rows)
    test_hits = 0
    for seed in range(10):
        split = assign_splits(df, (0.6, 0.2, 0.2), seed=seed)
        counts = dict(split.group_by("split").len().iter_rows())
        assert counts == {"train": 60, "val": 20, "test": 20}  # exact: round(fraction * 100 patients)
        big = dict(split.filter(pl.col("label") == "BIG").group_by("split").len().iter_rows())
        assert abs(big["train"] - 36) <= 2 and abs(big["test"] - 12) <= 2  # the large stratum keeps its share
        test_hits += split.filter(pl.col("label").str.starts_with("L") & (pl.col("split") == "test")).height
    assert 0.12 < test_hits / (10 * 40) < 0.28  # singletons reach test at about the test fraction (0.2)


def test_a_class_smaller_than_the_folds_is_said_once_not_warned_per_repeat(capsys, recwarn):
    """scikit-learn warned "The least populated class ..." at every repeat (and design); cxrray says it once."""
    from cxrray.data.splits import kfold_splits

    df = pl.DataFrame({"row": range(30), "patient_id": [f"p{i}" for i in range(30)],
                       "label": ["CVP"] * 3 + ["NOR"] * 27})
    folds = list(kfold_splits(df, k=5, repeats=2))
    assert len(folds) == 10 and not [w for w in recwarn if "least populated" in str(w.message)]
    assert capsys.readouterr().out.splitlines() == [
        "[cxrray] CVP has 3 patient(s) for 5 folds: some folds' test split holds none of them (their verdicts say "
        "too_few)"]
