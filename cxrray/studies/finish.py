"""The end of every study CLI: the analysis, the study's W&B summary run, and one closing line."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from cxrray.analysis.analyze import AnalysisResult, run_analysis
from cxrray.analysis.shortcut import headline
from cxrray.analysis.steps import AnalysisOptions
from cxrray.config import RunLayout, SweepOutcome, WandbMode
from cxrray.data.tasks import TASKS
from cxrray.explain.fanout import Placement
from cxrray.report.dashboard import Dashboard, dashboard_of
from cxrray.wandb_run import open_run


def summary_id(study: str, run_dir: Path, results: pl.DataFrame) -> str:
    """The summary run's W&B id: the study and a hash of the run directory and the datasets it read, so two
    run directories of one study (a phantom demo, a COVIDx run) never merge into one W&B run."""
    data = sorted(set(results["data_id"])) if "data_id" in results.columns else []
    key = json.dumps([str(Path(run_dir).resolve()), data])
    return f"{study}-summary-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def summary_run(study: str, run_id: str, directory: Path, mode: WandbMode, project: str):
    """The study's own W&B run (resumed by each analysis of the same run directory): results and analysis."""
    return open_run(mode, directory=directory, name=f"{study} summary", id=run_id, project=project, group=study,
                    job_type="summary")


def trial_charts(predictions: Path, aurocs: pl.DataFrame, names: dict[str, str]) -> dict:
    """W&B's native ROC curve and confusion matrix of every analysed trial (test split; read from the gathered
    ``predictions`` table, those trials' test rows only), keyed by run name."""
    import wandb

    charts: dict[str, Any] = {}
    test = pl.scan_parquet(predictions).filter(
        (pl.col("split") == "test") & pl.col("trial_id").is_in(aurocs["trial_id"].implode())).collect()
    for r in aurocs.iter_rows(named=True):
        part = test.filter(pl.col("trial_id") == r["trial_id"])
        classes = TASKS.get(r["task"]).classes
        probs = part.select([f"prob_{c}" for c in classes]).to_numpy()
        y, name = part["target"].to_numpy(), names.get(r["trial_id"], r["trial_id"])
        positive, title = [TASKS.get(r["task"]).positive_index], f"ROC {name} ({r['positive']} vs rest)"
        # (wandb types the values as numbers.Number, which a type checker does not match with int or float)
        charts[f"roc/{name}"] = wandb.plot.roc_curve(y, probs, labels=list(classes), classes_to_plot=positive,  # type: ignore[arg-type]
                                                     title=title)
        charts[f"confusion/{name}"] = wandb.plot.confusion_matrix(y_true=y.tolist(), preds=probs.argmax(1).tolist(),
                                                                  class_names=list(classes), title=f"Confusion {name}")
    return charts


def log_summary(run_dir: Path, outcome: SweepOutcome, analysis: AnalysisResult, wandb_mode: WandbMode,
                project: str) -> None:
    """One W&B log per analysis in the run directory's summary run: the results table, every analysis table
    and figure (as the steps made them), ROC and confusion charts per analysed trial, the verdict line in the
    summary, and report.html as an artifact."""
    if wandb_mode == "disabled" or outcome.results.is_empty():
        return
    import wandb

    study = outcome.results["study"][0]
    run = summary_run(study, summary_id(study, run_dir, outcome.results), run_dir, wandb_mode, project)
    results = outcome.results.select([c for c in outcome.results.columns if outcome.results[c].dtype != pl.Null])
    logged: dict[str, Any] = {"results": wandb.Table(dataframe=results.to_pandas())}
    layout = RunLayout(run_dir)
    for art in analysis.artifacts.values():
        logged |= {f"analysis/{name}": wandb.Table(dataframe=frame.to_pandas()) for name, frame in art.tables.items()}
        logged |= {f"figures/{name}": wandb.Image(str(layout.analysis_file(f"{name}.png")), caption=cap)
                   for name, cap in art.figures.items()}
    aurocs = analysis.artifacts["aurocs"].tables.get("trial_aurocs", pl.DataFrame()) \
        if "aurocs" in analysis.artifacts else pl.DataFrame()
    if not aurocs.is_empty() and layout.predictions.exists():
        logged |= trial_charts(layout.predictions, aurocs,
                               dict(zip(results["trial_id"], results["run_name"], strict=True)))
    run.log(logged, commit=True)
    board = dashboard_of(study, project, {n for a in analysis.artifacts.values() for n in a.tables},
                         {n for a in analysis.artifacts.values() for n in a.figures}, entity=os.environ.get(
                             "WANDB_ENTITY", ""))
    board.write(layout.workspace)
    run.summary.update({"finished": len(outcome.finished), "failed": len(outcome.failed),
                        "skipped": len(outcome.skipped), "verdict": headline(analysis.artifacts).text})
    report = wandb.Artifact(f"{study}-report", type="report")
    report.add_file(str(analysis.report))
    run.log_artifact(report)
    run.finish()
    if wandb_mode == "online":
        push_workspace(board, layout)


def push_workspace(board: Dashboard, layout: RunLayout) -> None:
    """Create or update the study's W&B workspace; a failure (no network, no rights) is one line, never the end
    of the sweep: the definition stays in ``wandb_workspace.json`` for ``python -m cxrray.analysis workspace``."""
    try:
        print(f"[cxrray] W&B workspace: {board.push()}", flush=True)
    except Exception as exc:  # noqa: BLE001  (any W&B or network error: the run itself is complete)
        print(f"[cxrray] W&B workspace not pushed ({type(exc).__name__}: {str(exc)[:200]}); later: python -m "
              f"cxrray.analysis workspace {layout.root}", flush=True)


def finish_study(run_dir: Path, outcome: SweepOutcome, total: int, t0: float, wandb_mode: WandbMode = "disabled",
                 project: str = "cxrray", options: AnalysisOptions = AnalysisOptions()) -> int:
    """Print the analysis of ``run_dir`` (``options``: ``analyze.analysis_options``, chosen and checked before Ray
    starts) and a closing line; the exit code is 1 when a trial failed. The model-based steps run as Ray tasks
    over the instance the trials ran on (one per CPU, or per GPU with ``--gpu``)."""
    print()
    options = replace(options, placement=Placement.of_cluster(bool(options.placement.gpus)))
    analysis = run_analysis(run_dir, options)
    print(analysis.text + f"\n\nReport: {analysis.report}")
    log_summary(run_dir, outcome, analysis, wandb_mode, project)
    for line in analysis.failure_lines():
        print(line, flush=True)
    stopped = f" ({len(outcome.stopped)} more stopped early by ASHA)" if outcome.stopped else ""
    print(f"\n[cxrray] {len(outcome.finished)}/{total} trials finished{stopped} in {time.time() - t0:.0f} s; "
          f"results in {run_dir} (predictions.parquet, results.parquet, analysis/, report.html)")
    print(f"[cxrray] {headline(analysis.artifacts)}; report: {analysis.report}")
    return 0 if not outcome.failed and not analysis.failed else 1
