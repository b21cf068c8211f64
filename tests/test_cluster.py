"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head node without CPUs and two
worker nodes of 2 CPUs, each with its own custom resource), driven by the sweep CLI with ``--address``.

Each trial reserves 2 CPUs (its worker and its Ray Data bundle), so two concurrent trials must run on the two
nodes (``node_id`` per trial in results.parquet). Then a worker node is removed while a trial trains on it: the
sweep still finishes, every trial exactly once, the interrupted one resumed from its checkpoint on the shared
run directory, on the other node. What survives: a worker node (here) and the driver (test_reliability); what
does not: the head node (the GCS holds the cluster's state).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    c = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=2, resources={f"node_{k}": 1}) for k in ("a", "b")]
    c.wait_for_nodes()
    yield c, nodes
    c.shutdown()


def _sweep(out: Path, address: str, *extra: str) -> subprocess.Popen:
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--out", str(out),
                             "--address", address, "--max-concurrent", "2", "--wandb", "disabled", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def _each_test_image_once(out: Path, results: pl.DataFrame) -> None:
    test = pl.read_parquet(out / "predictions.parquet").filter(pl.col("split") == "test")
    per = test.group_by("trial_id").agg(pl.len().alias("n"), pl.col("row").n_unique().alias("rows"))
    assert per.height == results.height and (per["n"] == per["rows"]).all()
    assert per["n"].n_unique() == 1


def test_trials_run_on_two_nodes(cluster, tmp_path):  # about 20 s here, in CI
    c, nodes = cluster
    out = tmp_path / "spread"
    proc = _sweep(out, c.address, "--epochs", "3")
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout[-3000:]
    results = pl.read_parquet(out / "results.parquet")
    assert set(results["status"]) == {"finished"}
    assert set(results["node_id"]) == {n.node_id for n in nodes}  # one trial per node, at the same time
    _each_test_image_once(out, results)


@pytest.mark.slow  # about 30 s here; make test-all
def test_losing_a_worker_node_mid_trial(cluster, tmp_path):
    c, nodes = cluster
    out = tmp_path / "lost"
    proc = _sweep(out, c.address, "--epochs", "60", "--checkpoint-every-s", "0", "--max-failures", "2")
    by_id = {n.node_id: n for n in nodes}
    victim, deadline = None, time.time() + 300
    while victim is None and time.time() < deadline and proc.poll() is None:
        for trial in (out / "trials").glob("*") if (out / "trials").exists() else []:
            log = trial / "attempts.log"
            if (trial / "resume.pt").exists() and log.exists():  # training, with a checkpoint behind it
                node = log.read_text().split("node=")[-1].strip()
                if node in by_id:
                    victim = (trial, node)
                    c.remove_node(by_id[node])
                    break
        time.sleep(0.05)
    stdout, _ = proc.communicate(timeout=900)
    assert victim is not None, "no trial was caught training: " + stdout[-2000:]
    assert proc.returncode == 0, stdout[-3000:]
    results = pl.read_parquet(out / "results.parquet")
    assert set(results["status"]) == {"finished"} and results.height == 2
    _each_test_image_once(out, results)
    trial, lost = victim
    attempts = (trial / "attempts.log").read_text().splitlines()
    assert len(attempts) == 2, attempts
    start = int(attempts[1].split("start_epoch=")[1].split()[0])
    assert start >= 1  # went on from its checkpoint on the shared run directory, not from scratch
    assert attempts[1].split("node=")[1] != lost  # on the node that is left
