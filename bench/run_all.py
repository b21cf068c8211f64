"""Run every benchmark module in bench/ (each has ``run() -> rows``) and print one table of measured
ratios against their goals. Each module runs in a fresh process, so one benchmark's thread pools
(BLAS, OpenMP, Ray) cannot slow the next; each ratio is still measured side by side inside its module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUNNER = ("import importlib.util, json, sys; spec = importlib.util.spec_from_file_location('m', sys.argv[1]); "
          "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
          "print('CXRRAY-BENCH ' + json.dumps(m.run()))")


def main() -> int:
    rows = []
    for path in sorted(p for p in Path(__file__).parent.glob("*.py")
                       if p.name != "run_all.py" and not p.name.startswith("_")):
        proc = subprocess.run([sys.executable, "-c", RUNNER, str(path)], capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("CXRRAY-BENCH ")), None)
        if proc.returncode or line is None:
            print(f"{path.name} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows += json.loads(line[len("CXRRAY-BENCH "):])
    print(f"{'benchmark':34} {'measured':>12} {'goal':>8}  ok   detail")
    for r in rows:
        print(f"{r['benchmark']:34} {r['value']:>10.2f} {r['unit']:1} {r['goal']:>8}  "
              f"{'-' if r['goal'] == 'info' else 'yes' if r['ok'] else 'NO':3}  {r['detail']}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
