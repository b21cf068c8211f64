"""Run every benchmark module in bench/ (each has ``run() -> rows``) and print one table of measured
ratios against their goals. Each module runs in a fresh process, so one benchmark's thread pools
(BLAS, OpenMP, Ray) cannot slow the next; each ratio is still measured side by side inside its module.

``--against DIR`` runs each module also in another checkout (say, ``git worktree add /tmp/before REV``),
right before this one, with that checkout's package first on ``PYTHONPATH`` (so its Ray workers and
subprocesses import it too): the before / after table of a change, measured side by side in one run.
``--only a,b`` runs those modules (file names without ``.py``). A module that fails is a failed row; the others
still run."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# The module is imported by its own name from its folder, so a process pool's workers can import what they are
# sent (``operating_characteristics``' rows: loaded as an anonymous module, its functions could not be pickled).
RUNNER = ("import importlib, json, pathlib, sys; p = pathlib.Path(sys.argv[1]); sys.path.insert(0, str(p.parent)); "
          "print('CXRRAY-BENCH ' + json.dumps(importlib.import_module(p.stem).run(), default=lambda o: o.item()))")
# (numpy scalars in a row, a ``np.bool_`` verdict of ``ok`` say, are written as the Python values they hold)
HERE = Path(__file__).resolve().parent


def measure(bench: Path, root: Path) -> list[dict] | None:
    """The rows of ``bench`` run in a fresh process against the package in ``root``; None when it failed."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(bench)], capture_output=True, text=True, cwd=root,
                          env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("CXRRAY-BENCH ")), None)
    if proc.returncode or line is None:
        print(f"{bench} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(line[len("CXRRAY-BENCH "):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout: run each benchmark there too, just before")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    args = parser.parse_args(argv)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    benches = sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_")
                     and (not only or p.stem in only))
    rows, before = [], {}
    for path in benches:
        if args.against is not None:
            old = args.against / "bench" / path.name
            for r in (measure(old, args.against.resolve()) or []) if old.exists() else []:
                before[r["benchmark"]] = r
        got = measure(path, HERE.parent)
        if got is None:  # said above with its error; the other benchmarks still run
            got = [{"benchmark": path.stem, "value": float("nan"), "unit": "", "goal": "runs", "ok": False,
                    "detail": "FAILED: its error is printed above"}]
        for r in got:  # as each is measured: a long run cut short keeps what it has
            b = before.get(r["benchmark"])
            print(f"[run_all] {r['benchmark']}: {b['value'] if b else '(new)'} -> {r['value']:.2f} {r['unit']}",
                  flush=True)
        rows += got
    then = f" {'before':>12}" if args.against is not None else ""
    print(f"{'benchmark':34}{then} {'measured':>12} {'goal':>8}  ok   detail")
    for r in rows:
        b = before.get(r["benchmark"])
        old = (f" {b['value']:>10.2f} {b['unit']:1}" if b else f" {'(new)':>12}") if args.against is not None else ""
        print(f"{r['benchmark']:34}{old} {r['value']:>10.2f} {r['unit']:1} {r['goal']:>8}  "
              f"{'-' if r['goal'] == 'info' else 'yes' if r['ok'] else 'NO':3}  {r['detail']}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
