#!/usr/bin/env python
"""What a trial costs beyond its training loops, at 20, 200 (and, when asked, 1,000) tiny trials (issue 28, item 4).

Each point is one real sweep from the command line: the smoke phantom, ``original`` x basecnn x N seeds, 32 px,
1 epoch, one trial at a time (``--max-concurrent 1``), W&B off, statistics only. A trial's cost beyond training
is the time from the previous trial's end to its own, minus its training loops (``train_s`` in its record); the
first trial (it starts the Tune actor, imports torch and reads the shards) is reported apart. Ray Tune's
published figure is about 0.14 s per trial (10,000 one-second trials on 16 CPUs in 715 s against a 625 s floor).
Also: the sweep's wall time, and the driver's largest resident set while the trials ran and after the last one
(the analysis of every trial), read from ``/proc`` every second.

    python bench/many_trials.py           # 20 and 200 trials, about 15 minutes on 2 CPUs
    python bench/many_trials.py 20 200 1000
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.5


def sweep(out: Path, trials: int) -> dict:
    cmd = [sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--representations", "original",
           "--seeds", *map(str, range(trials)), "--max-concurrent", "1", "--wandb", "disabled", "--analysis",
           "statistics", "--out", str(out)]
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        peaks = [0.0, 0.0]  # the driver's resident set while trials run, and after the last one (the analysis)
        while proc.poll() is None:
            done = len(list((out / "trials").glob("*/predictions.parquet"))) if (out / "trials").exists() else 0
            peaks[done >= trials] = max(peaks[done >= trials], _rss_mib(proc.pid))
            time.sleep(1.0)
        wall = time.time() - t0
        if proc.returncode:
            log.seek(0)
            raise RuntimeError(log.read()[-4000:])
    records = sorted((json.loads(p.read_text()) for p in (out / "trials").glob("*/trial.json")),
                     key=lambda r: r["finished"])
    extra = [b["finished"] - a["finished"] - b["train_s"] for a, b in itertools.pairwise(records)]
    return {"trials": len(records), "wall_s": wall, "train_s": sum(r["train_s"] for r in records),
            "per_trial_median": statistics.median(extra), "per_trial_mean": statistics.fmean(extra),
            "whole_s": (wall - sum(r["train_s"] for r in records)) / len(records),
            "rss_trials_mib": peaks[0], "rss_analysis_mib": peaks[1]}


def _rss_mib(pid: int) -> float:
    """Resident set of process ``pid`` in MiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS")), 0.0)
    except OSError:
        return 0.0


def run(counts: tuple[int, ...] = (20, 200)) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            r = sweep(Path(tmp) / f"n{n}", n)
            rows.append({"benchmark": f"cost per trial beyond training, {n} tiny trials", "value": r["per_trial_mean"],
                         "unit": "s", "goal": f"<= {GOAL_S}", "ok": r["per_trial_mean"] <= GOAL_S,
                         "detail": f"median {r['per_trial_median']:.2f} s; sweep {r['wall_s']:.0f} s wall, training "
                                   f"{r['train_s']:.0f} s: (wall - training) / trials {r['whole_s']:.2f} s with the "
                                   f"fixed costs (Ray start, ingest, analysis); driver {r['rss_trials_mib']:.0f} "
                                   f"MiB at most while the trials ran, {r['rss_analysis_mib']:.0f} MiB in the "
                                   f"analysis"})
    return rows


if __name__ == "__main__":
    counts = tuple(int(a) for a in sys.argv[1:]) or (20, 200)
    for row in run(counts):
        print(f"{row['benchmark']}: {row['value']:.2f} {row['unit']} (goal {row['goal']}; "
              f"{'ok' if row['ok'] else 'MISSED'}) - {row['detail']}", flush=True)
