"""Every standard DICOM codec decodes to the uncompressed pixels, and one intensity policy holds across formats:
8-, 12- and 16-bit versions of one real radiograph give the same shard pixels (issue 19, items 4 and 5)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import REAL_MINI
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from cxrray.data.images import read_image, write_dicom
from cxrray.data.shards import decode, load_and_encode


def _real_8bit(size: int = 128) -> np.ndarray:
    """One real CXR of the fixtures, stretched over the full 8-bit range."""
    path = REAL_MINI.parent / "images" / sorted(p.name for p in (REAL_MINI.parent / "images").iterdir())[0]
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L").resize((size, size)), dtype=np.float64)
    return np.round(255 * (arr - arr.min()) / (arr.max() - arr.min())).astype(np.uint8)


def _jpeg_lossless(arr: np.ndarray, precision: int) -> bytes:
    """A lossless JPEG (process 14, predictor 1, one component): no library here encodes one, so a minimal
    encoder with one fixed Huffman table (17 categories, 5-bit codes)."""
    h, w = arr.shape
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big")
    out += bytes([1, 1, 0x11, 0])
    bits = [0, 0, 0, 0, 17] + [0] * 11
    out += b"\xff\xc4" + (3 + 16 + 17).to_bytes(2, "big") + bytes([0, *bits, *list(range(17))])
    out += b"\xff\xda" + (8).to_bytes(2, "big") + bytes([1, 1, 0x00, 1, 0, 0])
    x = arr.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = ((x - pred + 32768) % 65536) - 32768
    stream, nbits = 0, 0
    data = bytearray()
    for d in diff.ravel().tolist():
        cat = 0 if d == 0 else int(abs(d)).bit_length()
        stream, nbits = (stream << 5) | cat, nbits + 5
        if 0 < cat < 16:
            extra = d if d > 0 else d + (1 << cat) - 1
            stream, nbits = (stream << cat) | extra, nbits + cat
        while nbits >= 8:
            byte = (stream >> (nbits - 8)) & 0xFF
            nbits -= 8
            data += bytes([byte, 0]) if byte == 0xFF else bytes([byte])
        stream &= (1 << nbits) - 1
    if nbits:
        byte = ((stream << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) & 0xFF
        data += bytes([byte, 0]) if byte == 0xFF else bytes([byte])
    return bytes(out + data + b"\xff\xd9")


def _encapsulated(path, src, frame: bytes, syntax, bits: int):
    ds = dcmread(src)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.BitsStored, ds.HighBit = bits, bits - 1
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A real radiograph as a 12-bit uncompressed DICOM, and its pixels as read."""
    folder = tmp_path_factory.mktemp("codecs")
    pixels = (_real_8bit().astype(np.uint16) * 4095 // 255).astype(np.uint16)
    path = write_dicom(folder / "plain.dcm", pixels, bits_stored=12, uid_seed="codecs")
    return folder, path, pixels, read_image(path)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name)
def test_pydicom_encoders_round_trip_through_read_image(original, syntax):
    folder, path, pixels, expected = original
    ds = dcmread(path)
    ds.compress(syntax, pixels)
    out = folder / f"{syntax.name.replace(' ', '_')}.dcm"
    ds.save_as(out, enforce_file_format=True)
    assert dcmread(out).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_image(out), expected)


def test_jpeg_lossless_process_14_decodes_exactly(original):
    folder, path, pixels, expected = original
    out = _encapsulated(folder / "ljpeg.dcm", path, _jpeg_lossless(pixels, 12), JPEGLosslessSV1, 12)
    np.testing.assert_array_equal(read_image(out), expected)


def test_jpeg_baseline_decodes_to_the_jpeg_image(original):
    """Lossy: the DICOM's pixels equal Pillow's decoding of the same JPEG bytes (within one grey level of 255)
    and stay close to the original."""
    folder, _path, _, _ = original
    eight = _real_8bit()
    buf = io.BytesIO()
    Image.fromarray(eight).save(buf, format="JPEG", quality=95)
    src = write_dicom(folder / "plain8.dcm", eight, bits_stored=8, uid_seed="codecs8")
    out = _encapsulated(folder / "jpeg.dcm", src, buf.getvalue(), JPEGBaseline8Bit, 8)
    got = read_image(out)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        ref = np.asarray(im, dtype=np.float64)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    assert np.abs(got - ref).max() <= 1.5 / 255
    assert np.abs(got - eight / 255.0).mean() < 0.01


def _shard_pixels(paths: list, size: int = 64) -> np.ndarray:
    batch = {"row": np.arange(len(paths)), "image_path": np.array([str(p) for p in paths], dtype=object),
             "mask_path": np.array([""] * len(paths), dtype=object)}
    out = decode(load_and_encode(batch, size=size, require_masks=False, cover_masks=True, dtype="uint16"))
    assert not any(out["error"]), out["error"]
    return np.asarray(out["image"])


def test_8_12_and_16_bit_versions_of_one_image_give_the_same_shard_pixels(tmp_path):
    eight = _real_8bit()
    twelve = (eight.astype(np.uint32) * 4095 // 255).astype(np.uint16)  # 12-bit values in a 16-bit PNG
    sixteen = eight.astype(np.uint16) * 257
    paths = [tmp_path / "8.png", tmp_path / "12.png", tmp_path / "16.png", tmp_path / "12.dcm"]
    Image.fromarray(eight).save(paths[0])
    Image.fromarray(twelve).save(paths[1])
    Image.fromarray(sixteen).save(paths[2])
    write_dicom(paths[3], twelve, bits_stored=12, uid_seed="bits")
    with Image.open(paths[1]) as im:
        assert im.mode.startswith("I;16")  # truly a 16-bit container
    px = _shard_pixels(paths)
    for k in range(1, 4):
        assert np.abs(px[k] - px[0]).max() <= 1 / 255, paths[k].name  # the same up to 8-bit quantisation
    assert abs(px[1].mean() - px[0].mean()) < 1e-3  # not 16x too dark (the old reading: value / 65535)


def _narrow_real(k: int, size: int = 96) -> np.ndarray:
    """Fixture CXR number ``k`` as its file holds it (8 bits, not stretched: real images use part of the range)."""
    images = sorted((REAL_MINI.parent / "images").iterdir())
    with Image.open(images[k]) as im:
        return np.asarray(im.convert("L").resize((size, size)), dtype=np.uint8)


@pytest.mark.parametrize("k", [0, 7, 21, 40])
def test_narrow_range_twins_at_8_10_12_and_16_bits_decode_alike_and_hash_alike(tmp_path, k):
    """One intensity policy (``images.stretch``) that twins agree with: a real fixture image that does not span
    0-255, stored at 8, 10, 12 and 16 bits (PNG, and a 12-bit DICOM), decodes to the same pixels, and the pixel
    hash of the duplicate check (taken after the policy) is the same, so the twins are caught."""
    from cxrray.data.shards import load_batch

    eight = _narrow_real(k)
    assert eight.min() > 0 or eight.max() < 255  # truly narrow
    paths = [tmp_path / "8.png"]
    Image.fromarray(eight).save(paths[0])
    for bits in (10, 12, 16):
        shifted = (eight.astype(np.uint16) << (bits - 8)).astype(np.uint16)  # the values an n-bit container holds
        paths.append(tmp_path / f"{bits}.png")
        Image.fromarray(shifted).save(paths[-1])
    paths.append(write_dicom(tmp_path / "12.dcm", eight.astype(np.uint16) << 4, bits_stored=12, uid_seed=f"t{k}"))
    decoded = [read_image(p) for p in paths]
    for p, arr in zip(paths[1:], decoded[1:], strict=True):
        assert np.array_equal(arr, decoded[0]), p.name
    assert decoded[0].min() == 0.0 and decoded[0].max() == 1.0
    batch = {"row": np.arange(len(paths)), "image_path": np.array([str(p) for p in paths], dtype=object),
             "mask_path": np.array([""] * len(paths), dtype=object)}
    hashes = load_batch(batch, 64, require_masks=False)["image_hash"]
    assert len(set(hashes)) == 1, hashes
    rounded = (eight.astype(np.uint32) * 4095 // 255).astype(np.uint16)  # re-quantised with rounding: close
    Image.fromarray(rounded).save(tmp_path / "12r.png")
    assert np.abs(read_image(tmp_path / "12r.png") - decoded[0]).max() < 1 / 255


@pytest.mark.parametrize("seed", range(6))
def test_the_8_bit_stretch_table_gives_the_float64_stretch_exactly(seed):
    """The ingest reads 8-bit rasters through a 256-entry table: the very float32 values of stretching in float64
    and casting, on random images, narrow ranges and a constant one (all 0)."""
    from cxrray.data.images import stretch, stretch_u8

    rng = np.random.default_rng(seed)
    lo = int(rng.integers(0, 200))
    arr = rng.integers(lo, lo + [1, 2, 56, 256][seed % 4], size=(37, 53)).clip(0, 255).astype(np.uint8)
    expected = stretch(arr.astype(np.float64)).astype(np.float32)
    got = stretch_u8(arr)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    if seed % 4 == 0:
        assert not got.any()  # one grey level: all 0
