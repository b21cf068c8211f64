"""Run every benchmark module in bench/ (each has ``run() -> rows``) and print one table of measured ratios against their goals."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main() -> int:
    rows = []
    for path in sorted(p for p in Path(__file__).parent.glob("*.py") if p.name != "run_all.py"):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        rows += mod.run()
    print(f"{'benchmark':34} {'measured':>12} {'goal':>8}  ok   detail")
    for r in rows:
        print(f"{r['benchmark']:34} {r['value']:>10.2f} {r['unit']:1} {r['goal']:>8}  "
              f"{'-' if r['goal'] == 'info' else 'yes' if r['ok'] else 'NO':3}  {r['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
