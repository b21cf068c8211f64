"""The end of every study CLI: the analysis, the study's W&B summary run, and one closing line."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from cxrray.analysis.run import AnalysisResult, run_analysis
from cxrray.analysis.verdict import verdict_line
from cxrray.config import RunLayout, SweepOutcome, WandbMode


def summary_run(study: str, directory: Path, mode: WandbMode, project: str):
    """The study's own W&B run (id ``<study>-summary``, resumed each time): results and analysis tables."""
    import wandb

    return wandb.init(id=f"{study}-summary", name=f"{study} summary", project=project, group=study,
                      job_type="summary", dir=str(directory), mode=mode, resume="allow", reinit="finish_previous",
                      settings=wandb.Settings(console="off", x_disable_stats=True, silent=True))


def log_summary(run_dir: Path, outcome: SweepOutcome, analysis: AnalysisResult, wandb_mode: WandbMode,
                project: str) -> None:
    """The results table and status counts, every analysis table and figure (as the steps made them), and
    report.html as an artifact, in the study's summary W&B run."""
    if wandb_mode == "disabled" or outcome.results.is_empty():
        return
    import wandb

    study = outcome.results["study"][0]
    run = summary_run(study, run_dir, wandb_mode, project)
    results = outcome.results.select([c for c in outcome.results.columns if outcome.results[c].dtype != pl.Null])
    logged, layout = {"results": wandb.Table(dataframe=results.to_pandas())}, RunLayout(run_dir)
    for art in analysis.artifacts.values():
        logged |= {f"analysis/{name}": wandb.Table(dataframe=frame.to_pandas()) for name, frame in art.tables.items()}
        logged |= {f"figures/{name}": wandb.Image(str(layout.analysis_file(f"{name}.png")), caption=cap)
                   for name, cap in art.figures.items()}
    run.log(logged)
    run.summary.update({"finished": len(outcome.finished), "failed": len(outcome.failed),
                        "skipped": len(outcome.skipped)})
    art = wandb.Artifact(f"{study}-report", type="report")
    art.add_file(str(analysis.report))
    run.log_artifact(art)
    run.finish()


def finish_study(run_dir: Path, outcome: SweepOutcome, total: int, t0: float, wandb_mode: WandbMode = "disabled",
                 project: str = "cxrray") -> int:
    """Print the analysis of ``run_dir`` and a closing line; the exit code is 1 when a trial failed."""
    print()
    analysis = run_analysis(run_dir)
    print(analysis.text + f"\n\nReport: {analysis.report}")
    log_summary(run_dir, outcome, analysis, wandb_mode, project)
    stopped = f" ({len(outcome.stopped)} more stopped early by ASHA)" if outcome.stopped else ""
    print(f"\n[cxrray] {len(outcome.finished)}/{total} trials finished{stopped} in {time.time() - t0:.0f} s; "
          f"results in {run_dir} (predictions.parquet, results.parquet, analysis/, report.html)")
    delong = analysis.artifacts.get("delong")
    findings = delong.tables.get("shortcut_findings", pl.DataFrame()) if delong else pl.DataFrame()
    print(f"[cxrray] {verdict_line(findings)}; report: {analysis.report}")
    return 0 if not outcome.failed else 1
