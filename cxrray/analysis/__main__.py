"""``python -m cxrray.analysis RUN_DIR``: rerun the analysis from stored predictions."""

from __future__ import annotations

import argparse
import sys

from cxrray.analysis.tables import analyze


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cxrray.analysis", description=__doc__)
    p.add_argument("run_dir", help="a sweep's run directory (holds predictions.parquet, results.parquet)")
    args = p.parse_args(argv)
    print(analyze(args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
