"""``python -m cxrray.analysis RUN_DIR``: rerun the analysis from stored predictions."""

from __future__ import annotations

import argparse
import sys

from cxrray.registry import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cxrray.analysis", description=__doc__)
    p.add_argument("run_dir", nargs="?", help="a sweep's run directory (its --out: holds predictions.parquet, "
                   "results.parquet)")
    p.add_argument("--out", help="the same run directory, spelled as the sweeps spell it")
    p.add_argument("--saliency", type=int, default=32, help="test images per trial for Grad-CAM (0: skip)")
    p.add_argument("--lime", type=int, default=0, help="of those, images per trial also explained with LIME "
                   "(COVID-CXNet's second method; about 0.5 s per image at 64 px on a CPU)")
    p.add_argument("--no-transfer", action="store_true", help="skip the transfer matrix (each saved model scored "
                   "on every representation of its test images)")
    p.add_argument("--family", nargs="+", default=["study", "task", "seed", "fold"],
                   help="columns that define one family of DeLong tests, adjusted together (Bonferroni, Holm); "
                        "e.g. --family study compares every pair of trials of the study")
    args = p.parse_args(argv)
    if (args.run_dir is None) == (args.out is None):
        p.error("give the run directory once: RUN_DIR or --out RUN_DIR")
    from cxrray.analysis.run import analyze  # torch (saliency) loads after --help is answered

    try:
        print(analyze(args.run_dir or args.out, saliency=args.saliency, family=tuple(args.family), lime=args.lime,
                      transfer=not args.no_transfer))
    except UserError as exc:  # bad input in one line; a bug keeps its traceback
        print(f"python -m cxrray.analysis: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
