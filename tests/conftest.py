"""Shared fixtures: a small phantom, the real mini CXR set, and a local Ray instance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REAL_MINI = FIXTURES / "cxr-real-mini" / "manifest.csv"
ASAH = FIXTURES / "pROC-aSAH" / "aSAH.csv"


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
