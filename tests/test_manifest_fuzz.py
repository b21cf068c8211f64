"""Fuzzing the manifest reader (issue 19, item 7): generated manifests (column orders, encodings, line endings,
empty, odd and wrongly typed values, huge, tiny and broken image files) never produce a traceback. Either the
whole file is refused in one line (``ManifestError``), or every data row is accounted for exactly once: used
(read into pixels), or in quarantine with a reason naming the file and row."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from cxrray.data.images import write_dicom
from cxrray.data.manifest import ALL_LABELS, REQUIRED_COLUMNS, ManifestError, read_manifest
from cxrray.data.shards import load_batch


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One file of each kind the generated rows point at."""
    d = tmp_path_factory.mktemp("fuzzfiles")
    rng = np.random.default_rng(0)
    gray = (rng.random((64, 64)) * 255).astype(np.uint8)
    lungs = np.zeros((64, 64), np.uint8)
    lungs[10:54, 8:28] = lungs[10:54, 36:56] = 255
    out = {"png": d / "ok.png", "mask": d / "mask.png", "rgb": d / "rgb.jpg", "png16": d / "deep.png",
           "dcm": d / "ok.dcm", "huge": d / "huge.png", "tiny": d / "tiny.png", "broken": d / "broken.png",
           "empty": d / "empty.png", "text": d / "notes.txt", "black_mask": d / "black.png"}
    Image.fromarray(gray).save(out["png"])
    Image.fromarray(lungs).save(out["mask"])
    Image.fromarray(np.stack([gray] * 3, -1)).save(out["rgb"])
    Image.fromarray(gray.astype(np.uint16) * 16).save(out["png16"])
    write_dicom(out["dcm"], gray.astype(np.uint16) * 16, uid_seed="fuzz")
    Image.fromarray((rng.random((3000, 2500)) * 255).astype(np.uint8)).save(out["huge"])
    Image.fromarray(gray[:4, :4]).save(out["tiny"])
    out["broken"].write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(200))
    out["empty"].write_bytes(b"")
    out["text"].write_text("not an image")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(out["black_mask"])
    return out


ODD = st.sampled_from(["", " ", "NaN", "null", "None", "-1", "1e9", "3.5", "é", "患者", "a,b", '"q"', "x" * 300,
                       "\t", "0"])
IMAGE_KINDS = ["png", "rgb", "png16", "dcm", "huge", "tiny", "broken", "empty", "text", "missing", "folder", "blank"]


def _mostly(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A valid value four times in five, an odd one otherwise."""
    return st.integers(0, 4).flatmap(lambda k: ODD if k == 0 else valid)


@st.composite
def manifests(draw):
    n = draw(st.integers(0, 12))
    columns = list(REQUIRED_COLUMNS) + draw(st.lists(st.sampled_from(["split", "extra", "finding_Mass"]),
                                                     max_size=2, unique=True))
    if draw(st.integers(0, 9)) == 0:  # sometimes a required column is missing: the file is refused
        columns.remove(draw(st.sampled_from(REQUIRED_COLUMNS)))
    columns = draw(st.permutations(columns))
    rows = []
    for _ in range(n):
        row = {}
        for c in columns:
            if c == "image_path":
                row[c] = draw(st.sampled_from(IMAGE_KINDS))
            elif c == "mask_path":
                row[c] = draw(st.sampled_from(["mask", "mask", "black_mask", "blank", "missing", "broken"]))
            elif c == "label":
                row[c] = draw(_mostly(st.sampled_from(ALL_LABELS)))
            elif c == "patient_id":
                row[c] = draw(_mostly(st.sampled_from(["p1", "p2", "p3", "患者-4"])))
            elif c == "split":
                row[c] = draw(_mostly(st.sampled_from(["train", "val", "test"])))
            elif c == "age":
                row[c] = draw(_mostly(st.sampled_from(["", "34", "71.5", " 8 "])))
            elif c == "severity":
                row[c] = draw(_mostly(st.sampled_from(["", "Mild", "Severe"])))
            else:
                row[c] = draw(ODD)
        rows.append(row)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return columns, rows, encoding, newline


def _cell(value: str, kind_paths: dict[str, str]) -> str:
    value = kind_paths.get(value, value)
    return f'"{value}"' if any(ch in value for ch in ',"\n') and not value.startswith('"') else value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=manifests())
def test_every_row_is_used_or_quarantined_or_the_file_is_refused_in_one_line(files, spec):
    columns, rows, encoding, newline = spec
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "sub").mkdir()
        kind_paths = {k: str(v) for k, v in files.items()} | {"missing": str(folder / "gone.png"),
                                                             "folder": str(folder / "sub"), "blank": ""}
        lines = [",".join(columns)] + [",".join(_cell(r[c], kind_paths) for c in columns) for r in rows]
        path = folder / "manifest.csv"
        try:
            path.write_bytes(newline.join(lines).encode(encoding, errors="replace"))
        except UnicodeEncodeError:
            event("not encodable")
            return
        try:
            good, quarantine = read_manifest(path)
        except ManifestError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            event("file refused: " + str(exc).split(": ", 1)[1][:40])
            return
        event(f"rows: {good.height} used, {quarantine.height} quarantined")
        assert set(good["row"]).isdisjoint(quarantine["row"])
        assert sorted([*good["row"], *quarantine["row"]]) == list(range(1, good.height + quarantine.height + 1))
        assert all(f"{path}, row {r}:" in reason
                   for r, reason in zip(quarantine["row"], quarantine["reason"], strict=True))
        if good.height:
            batch = {c: good[c].to_numpy() for c in ("row", "image_path", "mask_path")}
            out = load_batch(batch, 32, require_masks=False)
            for k, error in enumerate(out["error"]):
                if error:  # the reason names the file
                    assert good["image_path"][k] in error or good["mask_path"][k] in error, error
                else:
                    assert out["image"][k].shape == (32, 32) and np.isfinite(out["image"][k]).all()
