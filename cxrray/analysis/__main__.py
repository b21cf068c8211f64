"""``python -m cxrray.analysis RUN_DIR``: rerun the analysis from stored predictions.
``python -m cxrray.analysis plan ...``: how many test patients a confident verdict needs (by simulation).
``python -m cxrray.analysis workspace RUN_DIR``: create or update the run's W&B workspace from its definition."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxrray.registry import UnknownNameError, UserError


def ranged(lo: float, hi: float, kind: type = float, *, open_lo: bool = False, open_hi: bool = False) -> Callable:
    """An argparse type: a number of ``kind`` in [lo, hi] (an open end excludes it); anything else is argparse's
    one-line error naming the option, before any work."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if value < lo or value > hi or (open_lo and value == lo) or (open_hi and value == hi):
            ends = f"{'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: {ends}")
        return value
    return parse


def plan(argv: list[str]) -> int:
    """The ``plan`` command: simulated test sets of growing size judged by the verdict rule."""
    p = argparse.ArgumentParser(prog="python -m cxrray.analysis plan", description=(
        "Test patients needed for a confident shortcut (hidden AUROC above chance + margin) or no_shortcut (inside "
        "it), by simulating clustered test sets and judging each with the verdict rule."))
    p.add_argument("--auroc-hidden", type=ranged(0, 1), required=True, help="true AUROC of the lung-hiding model")
    p.add_argument("--auroc-original", type=ranged(0, 1), default=0.9, help="true AUROC of the original model")
    p.add_argument("--images", type=ranged(1, 1000, int), default=2, help="images per patient (1..images, uniform)")
    p.add_argument("--icc", type=ranged(0, 1, open_hi=True), default=0.5, help="intra-patient correlation of the "
                   "scores, in [0, 1)")
    p.add_argument("--prevalence", type=ranged(0, 1, open_lo=True, open_hi=True), default=0.4,
                   help="share of positive patients, in (0, 1)")
    p.add_argument("--trials", type=ranged(1, 100_000, int), default=2, help="lung-hiding trials tested together "
                   "(Bonferroni m)")
    p.add_argument("--power", type=ranged(0, 1, open_lo=True, open_hi=True), default=0.8,
                   help="share of test sets that must reach the verdict, in (0, 1)")
    p.add_argument("--reps", type=ranged(20, 100_000, int), default=200, help="simulated test sets per size "
                   "(at least 20: fewer cannot estimate a share of 80 %%)")
    p.add_argument("--margin", type=ranged(0, 0.5, open_lo=True, open_hi=True), default=0.1,
                   help="equivalence margin around AUROC 0.5, in (0, 0.5)")
    args = p.parse_args(argv)
    from cxrray.verdicts.plan import format_plan, patients_needed
    from cxrray.verdicts.verdict import Rules

    result = patients_needed(args.auroc_hidden, args.auroc_original, args.images, args.icc, args.prevalence,
                             args.trials, Rules(margin_auroc=args.margin), args.power, args.reps)
    print(format_plan(result, args.auroc_hidden, args.auroc_original))
    return 0


def workspace(argv: list[str]) -> int:
    """The ``workspace`` command: push a run's W&B workspace definition (``wandb_workspace.json``)."""
    p = argparse.ArgumentParser(prog="python -m cxrray.analysis workspace", description=(
        "Create or update the W&B workspace of a run directory from its wandb_workspace.json (written by every "
        "analysis with W&B on; push it once the offline runs are synced with `wandb sync`)."))
    p.add_argument("run_dir", type=Path, help="the sweep's run directory (its --out)")
    p.add_argument("--entity", help="W&B entity (default: the definition's, else the API key's default)")
    p.add_argument("--show", action="store_true", help="print the panels and the keys they read; send nothing")
    args = p.parse_args(argv)
    from cxrray.config import RunLayout
    from cxrray.report.dashboard import Dashboard
    from cxrray.wandb_run import NO_KEY, key_problem, wandb_key, wandb_reachable

    path = RunLayout(args.run_dir).workspace
    if not path.exists():
        print(f"python -m cxrray.analysis workspace: error: {path}: no workspace definition (a sweep or analysis "
              f"with --wandb offline or online writes it)", file=sys.stderr)
        return 2
    board = Dashboard.read(path)
    if args.show:
        for s in board.sections:
            print(s.name)
            for panel in s.panels:
                print(f"  {panel.kind:5s} {panel.title}: {', '.join(panel.keys)}")
        return 0
    prog = "python -m cxrray.analysis workspace"
    why = NO_KEY if not wandb_key() else wandb_reachable()
    if why:  # a missing or rejected key, a server that is down: one line, the definition stays for later
        print(f"{prog}: error: {why}; the workspace stays defined in {path}", file=sys.stderr)
        return 2 if key_problem(why) else 1
    try:
        url = board.push(args.entity)
    except Exception as exc:  # noqa: BLE001  (W&B raises many types: rights, a project that does not exist ...)
        print(f"{prog}: error: W&B refused the workspace ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
              file=sys.stderr)
        return 1
    print(f"[cxrray] W&B workspace: {url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plan"]:
        return plan(argv[1:])
    if argv[:1] == ["workspace"]:
        return workspace(argv[1:])
    p = argparse.ArgumentParser(prog="python -m cxrray.analysis", description=__doc__)
    p.add_argument("run_dir", nargs="?", help="a sweep's run directory (its --out: holds predictions.parquet, "
                   "results.parquet)")
    p.add_argument("--out", help="the same run directory, spelled as the sweeps spell it")
    p.add_argument("--saliency", type=int, default=32, help="test images per trial for Grad-CAM (0: skip)")
    p.add_argument("--lime", type=int, default=0, help="of those, images per trial also explained with LIME "
                   "(COVID-CXNet's second method; about 0.5 s per image at 64 px on a CPU)")
    p.add_argument("--no-transfer", action="store_true", help="skip the transfer matrix (each saved model scored "
                   "on every representation of its test images)")
    p.add_argument("--analysis", choices=["all", "statistics"], default="all", help="all steps (default), or "
                   "statistics: no step that loads the saved models (saliency, transfer)")
    p.add_argument("--skip", nargs="+", default=[], metavar="STEP", help="registered analysis steps not to run "
                   "(e.g. transfer saliency); the report says which ran")
    p.add_argument("--transfer-patients", type=int, default=1000, help="score the transfer matrix on a random "
                   "sample of this many test patients when a split has more (the same for every model; default "
                   "1000: about 24 CPU-hours at paper scale instead of hundreds; 0: every patient)")
    p.add_argument("--model-seeds", type=int, default=1, help="saliency and the transfer matrix explain the models "
                   "of the run's first N seeds (default 1: seeds are a cell's replicates; 0: every seed)")
    p.add_argument("--workers", type=int, default=1, help="saliency and transfer jobs at once, as Ray tasks on a "
                   "local Ray instance of this many CPUs (default 1: in this process, no Ray)")
    p.add_argument("--gpu", action="store_true", help="score the transfer matrix on the GPU; saliency "
                   "stays on the CPUs")
    p.add_argument("--family", nargs="+", default=["study", "task", "seed", "fold"],
                   help="columns that define one family of DeLong tests, adjusted together (Bonferroni, Holm); "
                        "e.g. --family study compares every pair of trials of the study")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise error of the shortcut verdicts "
                   "(Bonferroni over the lung-hiding trials or cells)")
    p.add_argument("--equivalence-auroc", type=float, default=0.1, help="no_shortcut needs the hidden AUROC's "
                   "interval inside 0.5 +/- this margin")
    p.add_argument("--equivalence-retained", type=float, default=0.5, help="... and, with a usable original, "
                   "the retained fraction's interval inside +/- this margin")
    args = p.parse_args(argv)
    if (args.run_dir is None) == (args.out is None):
        p.error("give the run directory once: RUN_DIR or --out RUN_DIR")
    from cxrray.analysis.steps import analysis_options
    from cxrray.explain.fanout import Placement
    from cxrray.report.analyze import run_analysis  # torch (saliency) loads after --help
    from cxrray.runlock import claim
    from cxrray.verdicts.verdict import Rules

    try:  # each option is checked by the record that declares it (Rules, AnalysisOptions, Placement)
        rules = Rules(args.alpha, args.equivalence_auroc, args.equivalence_retained)
        options = analysis_options(
            args.analysis, tuple(args.skip), saliency=args.saliency, family=tuple(args.family), lime=args.lime,
            transfer=not args.no_transfer, rules=rules, placement=Placement(args.workers, int(args.gpu)),
            transfer_patients=args.transfer_patients, model_seeds=args.model_seeds)
        if Path(args.run_dir or args.out).is_dir():
            claim(Path(args.run_dir or args.out))  # never while a sweep writes the same run directory
        result = run_analysis(args.run_dir or args.out, options)
    except (UserError, UnknownNameError) as exc:  # bad input (a damaged run file: named; --skip bogus) in one line
        print(f"python -m cxrray.analysis: error: {exc}", file=sys.stderr)
        return 2
    print(result.text + f"\n\nReport: {result.report}")
    for line in result.failure_lines():  # a failed step: the others and the report stand; exit 1 at the end
        print(line, file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
