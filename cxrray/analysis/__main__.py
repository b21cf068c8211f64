"""``python -m cxrray.analysis RUN_DIR``: rerun the analysis from stored predictions.
``python -m cxrray.analysis plan ...``: how many test patients a confident verdict needs (by simulation).
``python -m cxrray.analysis workspace RUN_DIR``: create or update the run's W&B workspace from its definition."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cxrray.declared import OneLineParser, add_arguments, from_arguments
from cxrray.registry import UnknownNameError, UserError


def plan(argv: list[str]) -> int:
    """The ``plan`` command: simulated test sets of growing size judged by the verdict rule."""
    from cxrray.verdicts.plan import PlanQuestion, format_plan

    p = OneLineParser(prog="python -m cxrray.analysis plan", description=(
        "Test patients needed for a confident shortcut (hidden AUROC above chance + margin) or no_shortcut (inside "
        "it), by simulating clustered test sets and judging each with the verdict rule."))
    add_arguments(p, PlanQuestion, defaults=True)  # each option's type, range and help: PlanQuestion's fields
    question = PlanQuestion(**from_arguments(PlanQuestion, vars(p.parse_args(argv))))
    print(format_plan(question.answer(), question.auroc_hidden, question.auroc_original))
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
    p = OneLineParser(prog="python -m cxrray.analysis", description=__doc__)
    p.add_argument("run_dir", nargs="?", help="a sweep's run directory (its --out: holds predictions.parquet, "
                   "results.parquet)")
    p.add_argument("--out", help="the same run directory, spelled as the sweeps spell it")
    p.add_argument("--analysis", choices=["all", "statistics"], default="all", help="all steps (default), or "
                   "statistics: no step that loads the saved models (saliency, transfer)")
    from cxrray.analysis.steps import AnalysisOptions, analysis_options
    from cxrray.explain.fanout import Placement
    from cxrray.verdicts.verdict import Rules

    groups: dict[str, Any] = {}
    for record in (AnalysisOptions, Placement, Rules):  # every other option: declared once, on its record
        add_arguments(p, record, defaults=True, ranged=False, groups=groups)  # (ranges: the records' own checks)
    given = vars(p.parse_args(argv))
    if (given["run_dir"] is None) == (given["out"] is None):
        p.error("give the run directory once: RUN_DIR or --out RUN_DIR")
    run_dir = Path(given["run_dir"] or given["out"])
    from cxrray.analysis.analyze import run_analysis  # torch (saliency) loads after --help
    from cxrray.runlock import claim

    try:  # each option is checked by the record that declares it (Rules, AnalysisOptions, Placement)
        chosen = AnalysisOptions(**from_arguments(AnalysisOptions, given), rules=Rules(**from_arguments(
            Rules, given)), placement=Placement(**from_arguments(Placement, given)))
        options = analysis_options(given["analysis"], chosen)
        if run_dir.is_dir():
            claim(run_dir)  # never while a sweep writes the same run directory
        result = run_analysis(run_dir, options)
    except (UserError, UnknownNameError) as exc:  # bad input (a damaged run file: named; --skip bogus) in one line
        print(f"python -m cxrray.analysis: error: {exc}", file=sys.stderr)
        return 2
    print(result.text + f"\n\nReport: {result.report}")
    for line in result.failure_lines():  # a failed step: the others and the report stand; exit 1 at the end
        print(line, file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
