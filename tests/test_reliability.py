"""Reliability end to end, through the sweep command: a killed training process, planted bad input and
PHI, and a patient planted in two splits."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pydicom

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
PHI = {"PatientName": "Quimby^Harriet", "PatientBirthDate": "19471103", "InstitutionName": "Lakeside Mercy Infirmary",
       "AccessionNumber": "ACC5550193", "ReferringPhysicianName": "Okafor^Bartholomew"}


def _sweep_args(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--out", str(out), *extra]


def test_killed_training_process_retries_from_its_checkpoint(tmp_path):
    """SIGKILL the process training a trial after its first epoch checkpoint: Tune retries the trial, which
    goes on from that checkpoint (attempts.log) and finishes."""
    out = tmp_path / "run"
    proc = subprocess.Popen(_sweep_args(out, "--representations", "original", "--epochs", "40", "--wandb", "disabled",
                                        "--checkpoint-every-s", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    killed, deadline = None, time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        for trial in (out / "trials").glob("*") if (out / "trials").exists() else ():
            log = trial / "attempts.log"
            if (trial / "resume.pt").exists() and log.exists() and not (trial / "predictions.parquet").exists():
                pid = int(log.read_text().split("pid=")[-1].split()[0])
                os.kill(pid, signal.SIGKILL)  # the trial's training process, not the driver
                killed = trial
        time.sleep(0.05)
    stdout, _ = proc.communicate(timeout=600)
    assert killed is not None, "the trial finished before it could be killed: " + stdout[-2000:]
    assert proc.returncode == 0, stdout[-3000:]
    starts = [line.split()[1] for line in (killed / "attempts.log").read_text().splitlines()]
    assert len(starts) == 2 and starts[0] == "start_epoch=0"
    assert int(starts[1].split("=")[1]) >= 1  # went on from a checkpoint, not from scratch
    assert (killed / "predictions.parquet").exists()
    assert pl.read_parquet(out / "results.parquet")["status"].to_list() == ["finished"]


def _plant(data: Path) -> dict[str, int]:
    """Copy of the phantom with PHI in every DICOM header and one row each of: corrupt PNG, truncated
    DICOM, missing mask, unknown label. Returns the 1-based manifest row of each plant."""
    df = pl.read_csv(data / "manifest.csv", infer_schema=False)
    for p in df["image_path"]:
        if p.endswith(".dcm"):
            ds = pydicom.dcmread(data / p)
            for k, v in PHI.items():
                setattr(ds, k, v)
            ds.save_as(data / p)
    pngs = [i for i, p in enumerate(df["image_path"]) if p.endswith(".png")]
    dcms = [i for i, p in enumerate(df["image_path"]) if p.endswith(".dcm")]
    rows = {"corrupt": pngs[0], "truncated": dcms[0], "nomask": pngs[1], "label": pngs[2]}
    (data / df["image_path"][rows["corrupt"]]).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00 cut short")
    blob = (data / df["image_path"][rows["truncated"]]).read_bytes()
    (data / df["image_path"][rows["truncated"]]).write_bytes(blob[: len(blob) // 3])
    (data / df["mask_path"][rows["nomask"]]).unlink()
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == rows["label"]).then(pl.lit("COVID-ish"))
                         .otherwise(pl.col("label")).alias("label"))
    df.write_csv(data / "manifest.csv")
    return {k: v + 1 for k, v in rows.items()} | {"_files": df}


def _texts(path: Path):
    """Every file's content as text; parquet decoded (its compressed bytes would hide a string)."""
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
        yield " ".join(str(v) for c in df.columns if df[c].dtype in (pl.Utf8, pl.Categorical) for v in df[c])
    else:
        yield path.read_bytes().decode("latin-1")


def test_planted_bad_input_and_phi(tmp_path):
    """Every planted bad row is reported by file and row while the rest trains; PHI planted in every DICOM
    header appears nowhere in the run directory (tables, W&B offline files, report)."""
    from cxrray.data.phantom import write_phantom

    data = write_phantom(tmp_path / "data", n_patients=36, seed=5).parent
    plants = _plant(data)
    files = plants.pop("_files")
    out = tmp_path / "run"
    proc = subprocess.run(_sweep_args(out, "--manifest", str(data / "manifest.csv"), "--epochs", "2"),
                          capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    q = pl.read_csv(out / "quarantine.csv")
    assert sorted(q["row"].to_list()) == sorted(plants.values())
    reason = dict(zip(q["row"].to_list(), q["reason"].to_list(), strict=True))
    for kind, row in plants.items():
        name = Path(files["image_path"][row - 1]).name
        assert name in reason[row] or kind == "label", (kind, reason[row])
    assert "unknown label 'COVID-ish'" in reason[plants["label"]]
    assert "no lung mask" in reason[plants["nomask"]] or "not found" in reason[plants["nomask"]]
    results = pl.read_parquet(out / "results.parquet")
    assert (results["status"] == "finished").all() and results.height == 2
    shard = next((out / "shards").iterdir())
    ingested = sum(pl.read_parquet(shard / split).height for split in ("train", "val", "test"))
    assert ingested + len(plants) == files.height  # everything else was processed
    scanned = [p for p in out.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000]
    assert any(p.suffix == ".wandb" for p in scanned) and (out / "report.html") in scanned
    for p in scanned:
        for text in _texts(p):
            for value in (*PHI.values(), "Quimby", "Okafor", "Lakeside"):
                assert value not in text, f"PHI {value!r} found in {p}"


def test_patient_in_two_splits_refuses_to_start(tmp_path):
    from cxrray.data.phantom import write_phantom

    manifest = write_phantom(tmp_path / "data", n_patients=20, seed=1)
    df = pl.read_csv(manifest, infer_schema=False)
    counts = df.group_by("patient_id").len().filter(pl.col("len") > 1)
    pid = counts["patient_id"].sort()[0]
    order = {q: i for i, q in enumerate(sorted(set(df["patient_id"])))}  # whole patients to a split ...
    split = ["test" if order[q] % 5 == 0 else "train" for q in df["patient_id"]]
    second = [i for i, q in enumerate(df["patient_id"]) if q == pid][1]
    split[second] = "train" if split[second] == "test" else "test"  # ... except one image of one patient
    df.with_columns(pl.Series("split", split)).write_csv(manifest)
    proc = subprocess.run(_sweep_args(tmp_path / "run", "--manifest", str(manifest)), capture_output=True, text=True,
                          timeout=120, env=ENV, cwd=ROOT)
    assert proc.returncode == 2
    assert "appear in more than one split" in proc.stderr and pid in proc.stderr
    assert not (tmp_path / "run" / "ray").exists() and not (tmp_path / "run" / "trials").exists()
