"""Never join a cluster by accident; never wait for a reservation no node can hold.

Without ``--address`` a sweep starts a Ray instance of its own even where another one is recorded on the machine
(``ray.init()`` alone would join it); ``--address auto`` joins and says which cluster in one line; ``--num-cpus``
with ``--address`` and ``--gpu`` on a cluster without a GPU are one line each, before any trial."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cxrray.registry import UserError
from cxrray.tuning.cluster import ClusterView, autoscaled_types, check_fits, reservations, unfit
from cxrray.tuning.study import Resources

ROOT = Path(__file__).resolve().parents[1]
TWO_CPUS = ClusterView("10.0.0.1:6379", (2.0,), (0.0,), local=False)


def test_a_trial_that_no_node_can_hold_is_one_line_naming_the_cluster():
    with pytest.raises(UserError) as err:
        check_fits(TWO_CPUS, Resources(use_gpu=True))
    assert str(err.value) == ("--gpu: a trial needs 1 CPU(s) and 1 GPU(s) on one node, but the Ray cluster at "
                              "10.0.0.1:6379 has 1 node, 2 CPUs, 0 GPUs: drop --gpu or add GPU nodes")
    with pytest.raises(UserError, match=r"a trial needs 4 CPU.s. and 0 GPU.s. on one node, but the local Ray"):
        check_fits(ClusterView("x", (2.0,), (0.0,)), Resources(cpus_per_worker=4))
    two_nodes = ClusterView("x", (2.0, 2.0), (1.0, 1.0), local=False)
    check_fits(two_nodes, Resources(use_gpu=True, num_workers=2))  # a DDP trial over the two GPU nodes fits
    with pytest.raises(UserError, match=r"needs 3.01 CPUs and 3 GPUs in all"):
        check_fits(two_nodes, Resources(use_gpu=True, num_workers=3, data_cpus=0))
    check_fits(TWO_CPUS, Resources())  # what fits passes silently


def test_an_autoscaling_cluster_counts_what_it_may_add(tmp_path):
    grows = ClusterView("x", (8.0,), (0.0,), local=False, can_add=({"CPU": float("inf"), "GPU": 1.0},))
    check_fits(grows, Resources(use_gpu=True, num_workers=4))  # the autoscaler adds GPU workers for them
    assert "the autoscaler may add nodes of {GPU: 1}" in grows.describe()
    config = tmp_path / "ray_bootstrap_config.yaml"  # what `ray up` leaves on the head, as cluster.yaml says
    config.write_text((ROOT / "cluster.yaml").read_text())
    assert autoscaled_types(None, config) == ({"CPU": float("inf"), "GPU": 1.0},)
    assert autoscaled_types({"CPU": 64, "GPU": 4, "memory": 1e12}, config) == ({"CPU": 64.0, "GPU": 4.0},)
    local = tmp_path / "local.yaml"  # the local provider: a fixed set of machines, nothing to add
    local.write_text("head_node_type: h\navailable_node_types: {h: {resources: {}, max_workers: 0}}\n")
    assert autoscaled_types(None, local) == () and autoscaled_types(None, tmp_path / "absent.yaml") == ()
    assert reservations(Resources(num_workers=2, launcher="train")) == [
        {"CPU": 0.01}, {"CPU": 1.0}, {"CPU": 1.0, "GPU": 0.0}, {"CPU": 1.0, "GPU": 0.0}]
    assert unfit(TWO_CPUS, reservations(Resources(num_workers=2, launcher="train"))) == \
        "needs 3.01 CPUs and 0 GPUs in all"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROBE = """
import sys
import tempfile
from pathlib import Path
import ray
from cxrray.tuning.runner import start_ray
start_ray(Path(sys.argv[1]), num_cpus=1, address=sys.argv[2] or None)
print("GCS", ray.get_runtime_context().gcs_address, len(ray.nodes()))
"""


def test_no_address_starts_its_own_ray_where_another_runs(tmp_path):
    """A Ray cluster recorded on the machine (``ray start --head``): without --address the sweep's Ray is its own
    instance (another GCS address); --address auto joins the recorded one."""
    short = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay under 108 characters
    env = os.environ | {"RAY_TMPDIR": short, "RAY_AUTH_MODE": "disabled"}
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    subprocess.run([ray_bin, "start", "--head", "--num-cpus", "1", "--port", str(port), "--include-dashboard",
                    "false", "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
    try:
        own, joined = [subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / f"run{k}"), address], env=env,
                                      capture_output=True, text=True, timeout=180) for k, address in
                       enumerate(("", "auto"))]
    finally:
        _stop(short)  # only this cluster's processes (`ray stop` would stop every Ray of this user)
        shutil.rmtree(short, ignore_errors=True)
    assert own.returncode == 0 and joined.returncode == 0, own.stderr[-2000:] + joined.stderr[-2000:]
    gcs_own = own.stdout.split("GCS ")[1].split()[0]
    gcs_joined = joined.stdout.split("GCS ")[1].split()[0]
    assert gcs_joined.endswith(f":{port}") and not gcs_own.endswith(f":{port}")


def _stop(temp_dir: str) -> None:
    """Kill the processes of the Ray cluster whose session lives under ``temp_dir``."""
    subprocess.run(["pkill", "-KILL", "-f", temp_dir], capture_output=True, timeout=60)


def _sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--out", str(out),
                           "--wandb", "disabled", *extra], capture_output=True, text=True, timeout=300, env=env,
                          cwd=ROOT)


def test_gpu_without_a_gpu_and_num_cpus_with_an_address_are_one_line_each(tmp_path):
    proc = _sweep(tmp_path / "gpu", "--gpu", "--num-cpus", "2")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "hide_seek.py: error: --gpu: a trial needs 1 CPU(s) and 1 GPU(s) on one node, but the local Ray instance "
        "(this machine) has 1 node, 2 CPUs, 0 GPUs: drop --gpu or add GPU nodes"]
    assert not (tmp_path / "gpu" / "shards").exists() and "2 trials" not in proc.stdout  # before the ingest
    proc = _sweep(tmp_path / "cpus", "--address", "auto", "--num-cpus", "1")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "hide_seek.py: error: --num-cpus 1 sizes a Ray instance of the sweep's own; with --address auto the "
        "cluster's own CPUs count: drop --num-cpus"]
