#!/usr/bin/env python
"""What a trial costs beyond its training loops, at 200 (and, when asked, up to 10,000) tiny trials (issues 28 and 41).

Each point is one real sweep from the command line: the smoke phantom, ``original`` x basecnn x N seeds, 32 px,
1 epoch, one trial at a time (``--max-concurrent 1``), W&B off, statistics only. A trial's cost beyond training
is the time from the previous trial's end to its own, minus its training loops (``train_s`` in its record); the
first trial (it starts the Tune actor, imports torch and reads the shards) is reported apart. Ray Tune's
published figure is about 0.14 s per trial (10,000 one-second trials on 16 CPUs in 715 s against a 625 s floor).
Also: the sweep's wall time, and the driver's largest resident set while the trials ran and after the last one
(the analysis of every trial), read from ``/proc`` every second.

    python bench/many_trials.py           # 200 trials (make bench), about 2 minutes on 2 CPUs
    python bench/many_trials.py 20 200 1000
    python bench/many_trials.py 10000 --keep /tmp/mt   # about 40 minutes; the run folder kept

Above ``FIRST`` (1,000) trials, a second row: the driver's largest resident set over the whole sweep against
its largest over the first 1,000 trials (goal <= 1.1x; the sweep runs as Tune experiments of at most 1,000
trials, ``CXRRAY_EXPERIMENT_TRIALS``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _busy import status_mib

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.1  # s per trial beyond training (issue 41; Ray Tune's published figure is about 0.14 s)
FIRST = 1000  # the driver's memory over the whole sweep is compared with its memory over this many trials
GOAL_GROWTH = 1.1


def sweep(out: Path, trials: int, first: int = FIRST) -> dict:
    cmd = [sys.executable, str(ROOT / "sweeps" / "hide_seek.py"), "--smoke-test", "--representations", "original",
           "--seeds", *map(str, range(trials)), "--max-concurrent", "1", "--wandb", "disabled", "--analysis",
           "statistics", "--out", str(out)]
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        # the driver's resident set while the trials ran (from the end of the first: Ray's start and the ingest
        # are over), up to the ``first``-th trial, and after the last one (the analysis)
        peaks = {"first": 0.0, "trials": 0.0, "analysis": 0.0}
        while proc.poll() is None:
            done, rss = _done(log), status_mib(proc.pid)
            keys = ("analysis",) if done >= trials else ("trials", "first") if 1 <= done <= first else \
                ("trials",) if done else ()
            for key in keys:
                peaks[key] = max(peaks[key], rss)
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
            "rss_first_mib": peaks["first"], "rss_trials_mib": peaks["trials"],
            "rss_analysis_mib": peaks["analysis"]}


def _done(log) -> int:
    """Trials ended so far, from the sweep's last progress line ("[cxrray] 17/200 done: ..."), read from the end
    of its log (cheap at 10,000 trials, unlike listing the trial folders every second)."""
    size = os.fstat(log.fileno()).st_size
    with open(f"/proc/self/fd/{log.fileno()}", "rb") as f:  # its own offset: the sweep's writes share log's
        f.seek(max(size - 16384, 0))
        ends = re.findall(r"\[cxrray\] (\d+)/\d+ (?:done|FAILED|stopped)", f.read().decode(errors="replace"))
    return int(ends[-1]) if ends else 0


def run(counts: tuple[int, ...] = (200,), keep: Path | None = None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            r = sweep((keep or Path(tmp)) / f"n{n}", n)
            rows.append({"benchmark": f"cost per trial beyond training, {n} tiny trials", "value": r["per_trial_mean"],
                         "unit": "s", "goal": f"<= {GOAL_S}", "ok": r["per_trial_mean"] <= GOAL_S,
                         "detail": f"median {r['per_trial_median']:.2f} s; sweep {r['wall_s']:.0f} s wall, training "
                                   f"{r['train_s']:.0f} s: (wall - training) / trials {r['whole_s']:.2f} s with the "
                                   f"fixed costs (Ray start, ingest, analysis); driver {r['rss_trials_mib']:.0f} "
                                   f"MiB at most while the trials ran, {r['rss_analysis_mib']:.0f} MiB in the "
                                   f"analysis"})
            if n > FIRST:
                growth = r["rss_trials_mib"] / r["rss_first_mib"]
                rows.append({"benchmark": f"driver memory, {n} tiny trials / the first {FIRST}", "value": growth,
                             "unit": "x", "goal": f"<= {GOAL_GROWTH}", "ok": growth <= GOAL_GROWTH,
                             "detail": f"{r['rss_first_mib']:.0f} MiB at most over the first {FIRST} trials, "
                                       f"{r['rss_trials_mib']:.0f} MiB over all {n}; the analysis "
                                       f"{r['rss_analysis_mib']:.0f} MiB"})
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]
    keep = Path(args.pop(args.index("--keep") + 1)) if "--keep" in args else None
    counts = tuple(int(a) for a in args if a != "--keep") or (200,)
    for row in run(counts, keep):
        print(f"{row['benchmark']}: {row['value']:.2f} {row['unit']} (goal {row['goal']}; "
              f"{'ok' if row['ok'] else 'MISSED'}) - {row['detail']}", flush=True)
