"""Train on one representation, test on all (as "Mask of truth", Sourget et al. 2024, does).

Each analysed trial's saved model (best on validation) scores every test image of its shards under every
hide-and-seek representation with the model's channel count, through the trial's own input pipeline; the
AUROC of the task's positive class gets its interval clustered by patient. It answers what the
same-representation table cannot: does the model trained on full images still work with the lungs removed
(it reads what is outside the lungs), or with only the lungs? The diagonal reproduces the trial's stored test
AUROC (a check the tests make). Nothing retrains. The scoring streams each test split once for many models
(``scoring.ScoreJob``), in this process or as Ray tasks on CPUs or GPUs (``fanout``). Step ``transfer``;
``analysis/transfer_matrix.csv`` and a heatmap per backbone.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.data.tasks import TASKS
from cxrray.explain.cache import TrialCache
from cxrray.explain.fanout import fan_out
from cxrray.explain.scoring import Scored, jobs_for, score_models
from cxrray.plots.palette import protocol_sorted
from cxrray.plots.steps import plot_transfer
from cxrray.records import TrialRecord
from cxrray.report.page import Artifacts, Section
from cxrray.scalars import num
from cxrray.stats.interval import auroc_interval, score_interval


def transfer_rows(record: TrialRecord, scored: Scored) -> list[dict]:
    """One row per test representation the trial's model took: AUROC [CI] of its task's positive class."""
    spec = record.spec
    task = TASKS.get(spec.task)
    if task.positive is None:
        return []
    y = np.asarray([task.class_index(str(x)) for x in scored.labels]) == task.positive_index
    if y.all() or not y.any():
        return []
    rows = []
    for rep, probs in scored.probs[spec.trial_id].items():
        ci = auroc_interval(y, probs[:, task.positive_index], scored.patients)
        rows.append({"trial_id": spec.trial_id, "train": spec.representation, "test": rep, "backbone": spec.backbone,
                     "seed": spec.seed, "auroc": ci.auc, "ci_lo": ci.lo, "ci_hi": ci.hi, "n_pos": ci.n_pos,
                     "n_neg": ci.n_neg, "patients": len(set(scored.patients)), "deff": ci.deff})
    return rows


VERSION = 2  # of the per-trial result (``cache.TrialCache``): raise it when the scoring computes otherwise


def transfer_matrix(run: LoadedRun) -> pl.DataFrame:
    """Every analysed hide-and-seek trial with a saved model, scored on every representation. Each trial is
    scored once (its rows cached and reused by later analyses); the trials not yet scored go to ``ScoreJob`` s,
    one read of each test split per job, run where ``run.options.placement`` says."""
    placement = run.options.placement
    cache = TrialCache(run.layout, "transfer", VERSION, {"patients": run.options.transfer_patients} | (
        {} if placement.precision == "fp32" else {"precision": placement.precision}))
    rows: dict[str, list[dict]] = {}
    records: dict[str, TrialRecord] = {}
    trials = {t["trial_id"]: t for t in run.model_trials().iter_rows(named=True)}
    for trial in trials.values():
        if "representation" not in trial or trial.get("method", "standard") != "standard":
            continue  # FuCiTNet's fused two-pass model is scored by its own trial only
        tid = trial["trial_id"]
        hit = cache.get(tid)
        if hit is not None:
            rows[tid] = hit[0].to_dicts()
            continue
        try:
            records[tid] = TrialRecord.read(run.layout.trial(tid))
        except (OSError, ValueError, KeyError) as exc:
            rows[tid] = [_missing(trial, f"trial {tid}: no readable trial record ({exc})")]
    splits = {t: str(run.layout.shards_of(r.spec) / "test") for t, r in records.items()}
    jobs = jobs_for(run.layout.root, splits, placement.device, placement.precision, placement.scorers,
                    run.options.transfer_patients)
    for scored in fan_out(score_models, jobs, placement.scorers, bool(placement.gpus)):
        for tid, why in scored.errors.items():
            rows[tid] = [_missing(trials[tid], why)]
        for tid in scored.probs:
            rows[tid] = transfer_rows(records[tid], scored)
            cache.put(tid, pl.DataFrame(rows[tid], infer_schema_length=None))
    ordered = [row for trial in trials for row in rows.get(trial, [])]
    return pl.DataFrame(ordered, infer_schema_length=None) if ordered else pl.DataFrame()


def _missing(trial: dict, note: str) -> dict:
    """A trial whose model could not be scored: named in the table, never dropped."""
    return {"trial_id": trial["trial_id"], "train": trial["representation"], "test": "",
            "backbone": trial["backbone"], "seed": trial.get("seed", 0), "note": note}


@analysis_step(order=42, models=True)
def transfer(run: LoadedRun) -> Artifacts:
    """Each trial's model scored on every representation of its test images (the transfer matrix)."""
    a, cap = Artifacts(), run.options.transfer_patients
    sampled = (f"; at most {cap} test patients a split (a random sample, the same for every model)" if cap else "") \
        + run.model_seeds_note()
    a.sections = [Section("Train on one representation, test on all", tables=("transfer_matrix", "transfer_missing"),
                          figures=("transfer_matrix",), group="bias", note=(
                              "rows of the table: a trained model (train) scored on its test images under another "
                              "representation (test), AUROC with its 95 % interval clustered by patient; a model "
                              "trained on original images that keeps its AUROC with the lungs removed reads what "
                              "lies outside them (claimed in the text with the Bonferroni-corrected interval over "
                              f"every model tested with the lungs removed){sampled}"))]
    if not run.aurocs.height or not run.options.transfer:
        return a
    table = transfer_matrix(run)
    if table.is_empty():
        return a
    missing = table.filter(pl.col("note").is_not_null()) if "note" in table.columns else table.clear()
    table = table.filter(pl.col("note").is_null()).drop("note") if "note" in table.columns else table
    if table.is_empty():
        a.tables["transfer_missing"] = missing
        a.text = "\n\nTransfer matrix: no model could be loaded:\n" + "\n".join(
            f"- {r['train']} / {r['backbone']}: {r['note']}" for r in missing.iter_rows(named=True))
        return a
    table = protocol_sorted(table.rename({"train": "representation"}), "representation").rename(
        {"representation": "train"})
    a.tables["transfer_matrix"] = table
    plot_transfer(table, run.figure("transfer_matrix"))
    a.figures["transfer_matrix"] = ("Each model (rows: the representation it was trained on) scored on every "
                                    "representation of its test images (columns); mean test AUROC over seeds; "
                                    "white is chance")
    off = table.filter(pl.col("train") != pl.col("test"))
    claims = off.filter(pl.col("test") == "lungs_removed")  # each a claim "reads outside the lungs": Bonferroni
    level = 1 - 0.05 / max(claims.height, 1)
    lo, hi = score_interval(claims["auroc"].to_numpy(), (claims["n_pos"] / claims["deff"]).to_numpy(),
                            (claims["n_neg"] / claims["deff"]).to_numpy(), level)
    claims = claims.with_columns(pl.Series("ci_lo_corrected", np.atleast_1d(lo)),
                                 pl.Series("ci_hi_corrected", np.atleast_1d(hi)))
    kept = claims.filter(pl.col("ci_lo_corrected") > 0.5)
    most = int(num(table["patients"].max()))
    a.text = (f"\n\nTransfer matrix: {table['trial_id'].n_unique()} model(s) scored on {table['test'].n_unique()} "
              f"representation(s) of up to {most} test patients (analysis/transfer_matrix.csv)."
              + ("".join(
                  f"\n- trained on {r['train']} ({r['backbone']}, seed {r['seed']}), tested with the lungs removed: "
                  f"AUROC {r['auroc']:.3f} [{r['ci_lo_corrected']:.3f}, {r['ci_hi_corrected']:.3f}] "
                  f"({100 * level:.1f} % interval, Bonferroni over {claims.height}): it reads what lies outside "
                  f"the lungs" for r in kept.iter_rows(named=True)) if off.height else "")) + "".join(
                      f"\n- {r['train']} / {r['backbone']} (seed {r['seed']}): not scored: {r['note']}"
                      for r in missing.iter_rows(named=True))
    if missing.height:
        a.tables["transfer_missing"] = missing
    return a
