"""``bench/run_all.py`` (``make bench``): a benchmark whose rows come from a process pool runs (its functions must
be importable by the pool's workers; numpy scalars in its rows), and a benchmark that fails is a failed row while
the others still run."""

import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

POOLED = '''
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def _square(x):
    return x * x


def run():
    with ProcessPoolExecutor(2) as pool:
        total = sum(pool.map(_square, range(4)))
    ok = np.int64(total) == 14  # a numpy bool, as a benchmark's comparison of numpy values gives
    return [{"benchmark": "pooled", "value": np.float64(total), "unit": "", "goal": "== 14", "ok": ok,
             "detail": "sum of squares in a pool"}]
'''


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_pooled_benchmark_runs_and_a_failed_one_leaves_the_others_to_run(tmp_path, monkeypatch, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "a_broken.py").write_text("def run():\n    raise RuntimeError('no device here')\n")
    (bench / "b_pooled.py").write_text(POOLED)
    run_all = _run_all()
    rows = run_all.measure(bench / "b_pooled.py", ROOT)
    assert rows == [{"benchmark": "pooled", "value": 14.0, "unit": "", "goal": "== 14", "ok": True,
                     "detail": "sum of squares in a pool"}]
    monkeypatch.setattr(run_all, "HERE", bench)
    assert run_all.main([]) == 1  # one failed: the run is not ok ...
    out = capsys.readouterr()
    assert "RuntimeError: no device here" in out.err
    table = out.out.splitlines()
    broken = next(line for line in table if line.startswith("a_broken"))
    assert "NO" in broken and "FAILED" in broken and math.isnan(float(broken.split()[1]))
    assert any(line.startswith("pooled") and "yes" in line for line in table)  # ... and the next one still ran
