#!/usr/bin/env python
"""The analysis' peak memory from 1,000 to 10,000 tiny trials (issue 41: "the analysis over 10,000 trials without
holding every trial's predictions at once, peak memory flat in trials").

Each point is a synthetic stored run of the shape ``bench/many_trials.py`` sweeps (``original`` x basecnn x N
seeds; 13 validation and 13 test images a trial, 2 images a patient, sex, age, view and source), analysed with
``--analysis statistics`` in a fresh process that reports its own largest resident set (``VmHWM``) after the
imports (the base: torch, kornia, polars) and at the end of the analysis, before the interpreter's teardown.
The row: the peak at 10,000 trials against the peak at 1,000 (goal <= 1.1x), and the growth above the base.

    python bench/analysis_memory.py                       # about 4 minutes on 2 CPUs
    PYTHONPATH=/tmp/before python bench/analysis_memory.py  # the same against another checkout
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from cxrray.config import RunLayout
from cxrray.tuning.gather import gather_predictions

GOAL = 1.1
SIZES = (1000, 10_000)
IMAGES = 13  # per split and trial
CHILD = """
import sys, time
from pathlib import Path

def hwm():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024

from cxrray.analysis.analyze import run_analysis
from cxrray.analysis.steps import analysis_options
base = hwm()
t0 = time.perf_counter()
run_analysis(Path(sys.argv[1]), analysis_options("statistics"))
print("CXRRAY-MEM", base, hwm(), time.perf_counter() - t0)
"""


def tiny_run(root: Path, trials: int, seed: int = 0) -> Path:
    """A run folder of ``trials`` tiny trials (the shape of ``many_trials``' sweep), every trial on the same images,
    its predictions gathered from a file per trial by the sweep's own ``gather_predictions``."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, first in (("val", 1), ("test", 1 + IMAGES)):
        patient = np.arange(IMAGES) // 2 + first
        y = np.arange(IMAGES) // 2 % 2 == 0
        rows.append(pl.DataFrame({"row": np.arange(first, first + IMAGES), "patient_id": [f"p{p}" for p in patient],
                                  "source": np.where(patient % 3 == 0, "a", "b"), "label": np.where(y, "CVP", "NOR"),
                                  "severity": "", "sex": np.where(patient % 2 == 0, "F", "M"),
                                  "age": (20 + patient * 7 % 70).astype(str), "view": np.where(patient % 4 == 0, "AP",
                                                                                                "PA"),
                                  "target": y.astype(np.int64), "split": split}))
    one = pl.concat(rows)
    ids = [f"t{k:05d}" for k in range(trials)]
    y = np.tile(one["target"].to_numpy(), trials)
    score = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1, len(y)))))
    preds = pl.concat([one] * trials).with_columns(pl.Series("prob_NCV", 1 - score), pl.Series("prob_CVP", score),
                                                    pl.Series("trial_id", np.repeat(ids, one.height)))
    res = pl.DataFrame({"study": "hide_seek", "representation": "original", "backbone": "basecnn", "task": "CL2",
                        "pretraining": "none", "design": "random", "seed": np.arange(trials), "fold": 0,
                        "trial_id": ids, "run_name": [f"original.basecnn.none.s{k}" for k in range(trials)],
                        "status": "finished", "init": "random", "best_val_auroc": 0.9})
    layout = RunLayout(root)
    parts = root / "parts"  # one file per trial, gathered as a sweep gathers them (row groups of BATCH trials)
    parts.mkdir(parents=True, exist_ok=True)
    files = []
    for k, part in enumerate(preds.iter_slices(one.height)):
        files.append(parts / f"{k}.parquet")
        part.write_parquet(files[-1])
    gather_predictions(files, layout.predictions)
    res.write_parquet(layout.results)
    return root


def measured(run: Path) -> tuple[float, float, float]:
    """(base MiB, peak MiB, seconds) of the analysis of ``run`` in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(run)], capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("CXRRAY-MEM")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"analysis of {run} failed:\n{proc.stderr[-2000:]}")
    base, peak, wall = (float(x) for x in line.split()[1:])
    return base, peak, wall


def run(sizes: tuple[int, ...] = SIZES) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        points = {}
        for n in sizes:
            t0 = time.perf_counter()
            folder = tiny_run(Path(tmp) / f"n{n}", n)
            points[n] = measured(folder)
            print(f"{n} trials: base {points[n][0]:.0f} MiB, peak {points[n][1]:.0f} MiB, analysis "
                  f"{points[n][2]:.0f} s (with the run's making {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    small, large = points[sizes[0]], points[sizes[-1]]
    ratio = large[1] / small[1]
    detail = "; ".join(f"{n:,} trials: peak {p:.0f} MiB ({p - b:+.0f} above the import base {b:.0f}), {w:.0f} s"
                       for n, (b, p, w) in points.items())
    return [{"benchmark": f"analysis peak memory, {sizes[-1]:,} / {sizes[0]:,} tiny trials", "value": ratio,
             "unit": "x", "goal": f"<= {GOAL}", "ok": ratio <= GOAL, "detail": detail}]


if __name__ == "__main__":
    for r in run():
        print(f"{r['benchmark']}: {r['value']:.2f}x (goal {r['goal']}; {'ok' if r['ok'] else 'MISSED'}) - "
              f"{r['detail']}")
