"""The end of every study CLI: the analysis, its tables and figures in W&B, and one closing line."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from cxrray.analysis.tables import analyze
from cxrray.training.tracking import summary_run
from cxrray.tuning.runner import SweepOutcome

TABLES = ("trial_aurocs", "trial_metrics", "delong_pairs", "shortcut_findings", "saliency_in_lungs",
          "source_probe", "design_drops", "severity_accuracy")
FIGURES = ("auroc_forest", "roc_curves", "saliency_in_lungs", "gradcam_grid")


def log_analysis(run_dir: Path, study: str, wandb_mode: str, project: str) -> None:
    """The analysis tables and figures, and report.html as an artifact, in the study's summary W&B run."""
    if wandb_mode == "disabled":
        return
    import wandb

    out = run_dir / "analysis"
    run = summary_run(study, run_dir, wandb_mode, project)
    logged = {f"analysis/{t}": wandb.Table(dataframe=pl.read_csv(out / f"{t}.csv").to_pandas())
              for t in TABLES if (out / f"{t}.csv").exists()}
    logged |= {f"figures/{f}": wandb.Image(str(out / f"{f}.png")) for f in FIGURES if (out / f"{f}.png").exists()}
    run.log(logged)
    if (run_dir / "report.html").exists():
        art = wandb.Artifact(f"{study}-report", type="report")
        art.add_file(str(run_dir / "report.html"))
        run.log_artifact(art)
    run.finish()


def finish_study(run_dir: Path, outcome: SweepOutcome, total: int, t0: float, wandb_mode: str = "disabled",
                 project: str = "cxrray") -> int:
    """Print the analysis of ``run_dir`` and a closing line; the exit code is 1 when a trial failed."""
    print()
    print(analyze(run_dir))
    if not outcome.results.is_empty():
        log_analysis(run_dir, outcome.results["study"][0], wandb_mode, project)
    stopped = f" ({len(outcome.stopped)} more stopped early by ASHA)" if outcome.stopped else ""
    print(f"\n[cxrray] {len(outcome.finished)}/{total} trials finished{stopped} in {time.time() - t0:.0f} s; "
          f"results in {run_dir} (predictions.parquet, results.parquet, analysis/, report.html)")
    return 0 if not outcome.failed else 1
