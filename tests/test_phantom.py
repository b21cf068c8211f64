import numpy as np
import polars as pl
import pytest

from cxrray.data import phantom
from cxrray.data.images import read_image
from cxrray.data.manifest import LABELS, load_manifest


def _pair(label_a: str, label_b: str, severity: str):
    """Render two images identical in every random draw except the disease label."""
    style = phantom.SOURCES[0]
    out = []
    for label in (label_a, label_b):
        rng = np.random.default_rng(7)
        out.append(phantom.render(label, severity, style, rng, size=128))
    return out


@pytest.mark.parametrize("label", ["CVP", "OVP", "OBP"])
def test_disease_lives_only_inside_the_lungs(label):
    (img_n, mask_n), (img_d, mask_d) = _pair("NOR", label, "Severe")
    assert np.array_equal(mask_n, mask_d)
    diff = np.abs(img_d.astype(np.float64) - img_n)
    assert diff[mask_d == 0].max() < 1e-6  # nothing leaks outside the mask
    assert diff[mask_d == 1].max() > 0.05  # and the disease is visible inside


def test_normal_pcr_positive_shows_no_sign():
    (img_n, _), (img_p, _) = _pair("NOR", "CVP", "Normal-PCR+")
    assert np.abs(img_p - img_n).max() < 1e-6


def test_severity_grows_the_opacity():
    sums = []
    for sev in ("Mild", "Moderate", "Severe"):
        (img_n, m), (img_d, _) = _pair("NOR", "CVP", sev)
        sums.append(float((img_d - img_n)[m == 1].sum()))
    assert sums[0] < sums[1] < sums[2]


def test_masks_are_exact_two_lungs():
    from scipy import ndimage

    _, mask = phantom.render("NOR", "none", phantom.SOURCES[1], np.random.default_rng(0), size=128)
    _, n = ndimage.label(mask)
    assert n == 2 and 0.1 < mask.mean() < 0.3


def test_source_signature_lives_outside_the_lungs():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a_style = phantom.SOURCES[0]
    b_style = phantom.SourceStyle("x", "right", "left", 0.06, a_style.gamma * 0.7, a_style.noise * 2.5, "png")
    img_a, mask = phantom.render("NOR", "none", a_style, rng_a, size=128)
    img_b, _ = phantom.render("NOR", "none", b_style, rng_b, size=128)
    diff = np.abs(img_a - img_b)
    assert diff[mask == 1].max() < 1e-6 and diff[mask == 0].max() > 0.5


def test_written_phantom_is_deterministic_and_readable(tmp_path, phantom_manifest):
    again = phantom.write_phantom(tmp_path, n_patients=30, seed=3, confound=1.0)
    assert again.read_text() == phantom_manifest.read_text()
    df = load_manifest(again)
    a, b = df.row(0, named=True), load_manifest(phantom_manifest).row(0, named=True)
    assert np.array_equal(read_image(a["image_path"]), read_image(b["image_path"]))
    assert set(df["label"]) <= set(LABELS)
    assert df["patient_id"].n_unique() == 30 and df.height > 30  # several images per patient


def test_dicom_sources_round_trip(tmp_path):
    """MONOCHROME1 and MONOCHROME2 DICOMs read back as the rendered image (12-bit quantisation)."""
    import pydicom

    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    for fmt, photometric in (("dcm1", "MONOCHROME1"), ("dcm2", "MONOCHROME2")):
        path = tmp_path / f"{fmt}.dcm"
        phantom._write_image(img, path, fmt, "p1", fmt)
        assert pydicom.dcmread(path).PhotometricInterpretation == photometric
        back = read_image(path)
        lo, hi = img.min(), img.max()  # reader rescales to the data range
        assert np.abs(back - (img - lo) / (hi - lo)).max() < 2 / 4095


@pytest.mark.parametrize("confound,expect", [(1.0, 1.0), (0.0, 0.25)])
def test_confound_controls_source_label_dependence(tmp_path, confound, expect):
    df = pl.read_csv(phantom.write_phantom(tmp_path, n_patients=400, confound=confound, seed=1, size=32))
    pat = df.unique("patient_id")
    home = np.mean([phantom.SOURCES[phantom.HOME_SOURCE[r["label"]]].name == r["source"]
                    for r in pat.iter_rows(named=True)])
    assert abs(home - expect) < 0.06


def test_confound_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="confound"):
        phantom.write_phantom(tmp_path, confound=1.5)


def test_confounds_share_patients_labels_and_images(tmp_path):
    """Phantoms at two confounds hold the same patients, labels, severities and image counts; only the
    sources differ (before, the extra source draw at confound < 1 shifted every later draw)."""
    a = pl.read_csv(phantom.write_phantom(tmp_path / "a", n_patients=40, confound=1.0, seed=2, size=32))
    b = pl.read_csv(phantom.write_phantom(tmp_path / "b", n_patients=40, confound=0.0, seed=2, size=32))
    keys = ["image_path", "patient_id", "label", "severity", "sex", "age"]
    strip = pl.col("image_path").str.replace(r"\.(dcm|png)$", "")
    assert a.select(strip, *keys[1:]).equals(b.select(strip, *keys[1:]))
    assert (a["source"] != b["source"]).any()


def test_female_rarity_turns_that_share_of_female_covid_patients_normal_and_nobody_else(tmp_path):
    import csv

    def patients(**kw) -> dict[str, tuple[str, str]]:
        rows = csv.DictReader(phantom.write_phantom(tmp_path / str(kw), n_patients=400, seed=2, size=32, **kw).open())
        return {r["patient_id"]: (r["sex"], r["label"]) for r in rows}

    plain, rare = patients(), patients(female_rarity=0.6)
    assert plain == patients(female_rarity=0.0)
    changed = {p for p in plain if plain[p] != rare[p]}
    assert changed and all(plain[p] == ("F", "CVP") and rare[p] == ("F", "NOR") for p in changed)
    female_covid = sum(v == ("F", "CVP") for v in plain.values())
    assert 0.45 < len(changed) / female_covid < 0.75  # about 0.6 of them
