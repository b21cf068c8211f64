"""Shared fixtures: a small phantom, the real mini CXR set, and a local Ray instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REAL_MINI = FIXTURES / "cxr-real-mini" / "manifest.csv"
ASAH = FIXTURES / "pROC-aSAH" / "aSAH.csv"
ROOT = Path(__file__).resolve().parents[1]


def smoke_sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``sweeps/hide_seek.py --smoke-test`` into ``out`` with ``extra`` options, as a user runs it."""
    env = os.environ | {"PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--out", str(out),
                           *extra], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The smallest real sweep on a 2-CPU Ray instance: both trials run at once (the default fills the cluster,
    one CPU each) and each streams its shards while it trains (nothing materialised); its analysis runs the
    model-based steps as Ray tasks on that instance. Before, trials read their shards with Ray tasks, and this is
    the set-up in which the read tasks waited forever."""
    out = tmp_path_factory.mktemp("sweep")
    proc = smoke_sweep(out, "--num-cpus", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.fixture(scope="session")
def phantom_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cxrray.data.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"), n_patients=30, seed=3, confound=1.0)


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory):
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
