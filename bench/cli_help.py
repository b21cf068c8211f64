#!/usr/bin/env python
"""``--help`` of every cxrray command: wall time (min / median / max of several runs) and whether torch or Ray
were imported to answer it (they must not be: help is read before anything heavy is needed).

    python bench/cli_help.py            # 5 runs per command
    python bench/cli_help.py --runs 3 --json bench/cli_help.json

Each run is a fresh interpreter, as a user's is. The test suite checks the imports (``tests/test_cli_help.py``);
this benchmark owns the timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {  # name -> how to run it (a script path or -m module)
    "hide_seek": ["sweeps/hide_seek.py"], "source_bias": ["sweeps/source_bias.py"],
    "staged_pretraining": ["sweeps/staged_pretraining.py"], "validate": ["sweeps/validate.py"],
    "analysis": ["-m", "cxrray.analysis"], "segmentation": ["-m", "cxrray.segmentation"],
    "adapters": ["-m", "cxrray.data.adapters"], "params": ["-m", "cxrray.models.params"],
    "cxrray": ["-m", "cxrray.studies.command"], "cxrray hide-seek": ["-m", "cxrray.studies.command", "hide-seek"],
}
PROBE = """import runpy, sys
target, argv = sys.argv[1], sys.argv[2:]
sys.argv = [target, *argv]
try:
    runpy.run_module(target, run_name="__main__", alter_sys=True) if not target.endswith(".py") else \\
        runpy.run_path(target, run_name="__main__")
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "ray", "timm", "kornia") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def help_run(command: list[str], extra: tuple[str, ...] = ("--help",)) -> tuple[float, str, list[str]]:
    """(seconds, the help text, heavy modules imported) for one fresh ``--help`` run."""
    target = command[1] if command[0] == "-m" else str(ROOT / command[0])
    words = command[2:] if command[0] == "-m" else command[1:]  # a subcommand, as in ``cxrray hide-seek``
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, target, *words, *extra], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    seconds = time.perf_counter() - t0
    heavy = proc.stderr.rsplit("HEAVY=", 1)[-1].strip()
    return seconds, proc.stdout, [m for m in heavy.split(",") if m]


GOAL_S = 1.0  # a --help answers within a second, with none of torch, timm, kornia, Ray imported


def measure(runs: int = 3) -> dict[str, dict]:
    """Per command: min / median / max seconds of ``runs`` fresh ``--help`` runs, and the heavy modules imported;
    plus, side by side, the import of torch and Ray alone (what every --help paid before)."""
    rows = {}
    for name, command in COMMANDS.items():
        times, heavy = [], []
        for _ in range(runs):
            seconds, _, heavy = help_run(command)
            times.append(seconds)
        rows[name] = {"min_s": min(times), "median_s": statistics.median(times), "max_s": max(times),
                      "heavy": heavy}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, ray, timm, kornia"], check=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    rows["import torch+ray+timm+kornia"] = {"min_s": min(times), "median_s": statistics.median(times),
                                            "max_s": max(times), "heavy": ["(reference)"]}
    return rows


def run() -> list[dict]:
    """``make bench`` rows: each command's median --help time against the goal (and no heavy import)."""
    rows = measure()
    ref = rows.pop("import torch+ray+timm+kornia")["median_s"]
    out = [{"benchmark": f"--help {name}", "value": r["median_s"], "unit": "s", "goal": f"< {GOAL_S:g}",
            "ok": r["median_s"] < GOAL_S and not r["heavy"],
            "detail": f"heavy imports: {', '.join(r['heavy']) or 'none'}; {ref / r['median_s']:.0f}x faster than "
                      f"importing torch+ray+timm+kornia ({ref:.2f} s)"} for name, r in rows.items()]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="fresh interpreters per command")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    rows = measure(args.runs)
    print(f"{'command':30s} {'min s':>7s} {'median':>7s} {'max s':>7s}  heavy imports")
    for name, r in rows.items():
        heavy = ", ".join(r["heavy"]) or "none"
        print(f"{name:30s} {r['min_s']:7.2f} {r['median_s']:7.2f} {r['max_s']:7.2f}  {heavy}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
