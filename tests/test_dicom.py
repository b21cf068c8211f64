"""DICOM reading with real pydicom files written here."""

import numpy as np
import pytest

from cxrray.data.images import ImageReadError, read_image, write_dicom


def _write(path, arr, photometric="MONOCHROME2", bits=12, **tags):
    return write_dicom(path, arr, photometric=photometric, bits_stored=bits, modality="CR", **tags)


RAMP = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)


def test_monochrome1_is_inverted(tmp_path):
    a = read_image(_write(tmp_path / "m2.dcm", RAMP))
    b = read_image(_write(tmp_path / "m1.dcm", RAMP, "MONOCHROME1"))
    assert np.allclose(a, 1 - b, atol=1e-6)


def test_rescale_slope_intercept_applied(tmp_path):
    plain = read_image(_write(tmp_path / "a.dcm", RAMP))
    # A negative slope reverses intensities: only visible if the modality LUT is applied.
    rescaled = read_image(_write(tmp_path / "b.dcm", RAMP, RescaleSlope=-2, RescaleIntercept=100))
    assert np.allclose(rescaled, 1 - plain, atol=1e-6)


def test_voi_window_applied(tmp_path):
    img = read_image(_write(tmp_path / "w.dcm", RAMP, WindowCenter=1024, WindowWidth=512))
    raw = RAMP.astype(float)
    assert img[raw <= 700].max() == pytest.approx(0, abs=1e-6)  # below the window: black
    assert img[raw >= 1300].min() == pytest.approx(1, abs=1e-6)  # above: white
    inside = (raw > 800) & (raw < 1250)
    assert 0 < img[inside].min() < img[inside].max() < 1


def test_16_bit_full_range_without_clipping(tmp_path):
    arr = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    img = read_image(_write(tmp_path / "16.dcm", arr, bits=16))
    assert img.min() == 0 and img.max() == 1
    assert len(np.unique(img)) == len(np.unique(arr))  # no values collapsed
    assert np.all(np.diff(img.ravel()) >= 0)


def test_multiframe_is_rejected_by_name(tmp_path):
    frames = np.stack([RAMP, RAMP])
    path = _write(tmp_path / "mf.dcm", frames)
    with pytest.raises(ImageReadError, match=r"mf.dcm: multi-frame DICOM \(2 frames\)"):
        read_image(path)


def test_truncated_dicom_names_the_file(tmp_path):
    path = _write(tmp_path / "t.dcm", RAMP)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ImageReadError, match=r"t.dcm: unreadable image"):
        read_image(path)
