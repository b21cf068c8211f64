"""Saliency-inside-lungs per cell, with bootstrap CIs, and Grad-CAM grids (seed figure 3 of Sadre et al.).
Step ``saliency``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.config import RunLayout
from cxrray.explain.cache import TrialCache
from cxrray.explain.fanout import Placement, fan_out
from cxrray.explain.saliency import bootstrap_ci, trial_saliency
from cxrray.explain.sanity import RHO_MAX
from cxrray.plots.figures import plot_gradcam_grid, plot_saliency_bars
from cxrray.registry import UserError
from cxrray.report.page import Artifacts, Section
from cxrray.scalars import num
from cxrray.verdicts.verdict import StepWord, Verdict

EXPLAINABLE = ("standard",)  # methods whose model.pt Grad-CAM explains (FuCiTNet's fused model is not)
VERSION = 1  # of the per-trial result (``cache.TrialCache``): raise it when trial_saliency computes otherwise
GRID = ("seen", "pred", "mask", "classes", "prob", "truth")  # what the Grad-CAM grid draws of a trial's maps


class Randomisation(StepWord):
    """The saliency maps' model-randomisation check (Adebayo et al. 2018)."""

    PASSES = ("passes", Verdict.NO_SHORTCUT)
    FAILS = ("fails: untrustworthy", Verdict.SHORTCUT)
    NOT_TESTED = ("not tested", Verdict.DEGENERATE)


def grid_maps(maps: dict, per_class: int = 2) -> dict[str, np.ndarray]:
    """Of a trial's maps, the images the Grad-CAM grid shows (the first ``per_class`` test images of each true
    class): all the cache keeps, so an entry stays small at any image size."""
    classes = np.asarray(maps["all_classes"])
    picks = np.concatenate([np.flatnonzero(maps["truth"] == c)[:per_class] for c in classes]).astype(int)
    return {k: np.asarray(maps[k])[picks] for k in GRID} | {"all_classes": classes}


@dataclass(frozen=True)
class SaliencyJob:
    """One trial's saliency with its sanity checks: ``limit`` test images, ``lime`` of them with LIME too."""

    run_dir: str
    trial_id: str
    limit: int
    lime: int


def saliency_job(job: SaliencyJob) -> tuple[pl.DataFrame, dict] | UserError | ValueError:
    """The job's (rows, grid maps); the error instead when the model is missing (``UserError``) or the task has
    no per-class map (``ValueError``: multilabel, hierarchical), so one trial never stops the others."""
    try:
        rows, maps = trial_saliency(job.run_dir, job.trial_id, limit=job.limit, lime=job.lime)
    except (UserError, ValueError) as exc:
        return exc
    return rows, grid_maps(maps)


def _saliencies(cache: TrialCache, run_dir: Path, trial_ids: list[str], limit: int, lime: int,
                placement: Placement) -> dict[str, tuple[pl.DataFrame, dict] | UserError | ValueError]:
    """Each trial's saliency rows and grid maps: from the cache, else computed (as ``fanout`` places the jobs,
    on CPUs: Grad-CAM and its checks run in float32) and stored."""
    found: dict[str, tuple[pl.DataFrame, dict] | UserError | ValueError] = {}
    for trial_id in trial_ids:
        hit = cache.get(trial_id)
        if hit is not None:
            found[trial_id] = hit
    todo = [t for t in trial_ids if t not in found]
    jobs = [SaliencyJob(str(run_dir), t, limit, lime) for t in todo]
    for trial_id, result in zip(todo, fan_out(saliency_job, jobs, placement.workers), strict=True):
        if not isinstance(result, Exception):
            cache.put(trial_id, *result)
        found[trial_id] = result
    return {t: r if isinstance(r, Exception) else
            (r[0], r[1] | {"all_classes": tuple(str(c) for c in r[1]["all_classes"])}) for t, r in found.items()}


def sanity_summary(rows: pl.DataFrame) -> dict:
    """A trial's sanity checks: mean rank correlation with the randomised model's maps and the verdict it gives
    (``sanity.RHO_MAX``), mean ROAD score with its patient-bootstrap CI."""
    rho = rows["randomisation_rho"].to_numpy() if "randomisation_rho" in rows.columns else np.array([np.nan])
    score = rows["road"].to_numpy() if "road" in rows.columns else np.array([np.nan])
    mean_rho = float(np.nanmean(rho)) if (~np.isnan(rho)).any() else np.nan
    has_road = ~np.isnan(score)
    lo, hi = bootstrap_ci(score[has_road], groups=rows["patient_id"].to_numpy()[has_road]) if has_road.any() \
        else (np.nan, np.nan)
    verdict = (Randomisation.NOT_TESTED if mean_rho != mean_rho else Randomisation.FAILS if mean_rho >= RHO_MAX
               else Randomisation.PASSES).word
    return {"randomisation_rho": mean_rho, "randomisation": verdict,
            "road": float(np.mean(score[has_road])) if has_road.any() else np.nan, "road_lo": lo, "road_hi": hi}


def saliency_tables(run_dir: Path, aurocs: pl.DataFrame, limit: int = 64, lime: int = 0,
                    placement: Placement = Placement()) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, dict]]:
    """(per-image shares, per-trial summary with CIs, maps per trial) for every softmax trial in ``aurocs``;
    ``lime`` images per trial also get a LIME share."""
    per_image, summary, maps = [], [], {}
    cache = TrialCache(RunLayout(Path(run_dir)), "saliency", VERSION, {"limit": limit, "lime": lime})
    explained = aurocs.filter(pl.col("method").is_in(EXPLAINABLE)) if "method" in aurocs.columns else aurocs
    found = _saliencies(cache, Path(run_dir), explained["trial_id"].to_list(), limit, lime, placement)
    for r in explained.iter_rows(named=True):  # (not explained: FuCiTNet's fused two-pass model)
        entry: dict[str, Any] = {k: r[k] for k in ("trial_id", "representation", "backbone", "seed") if k in r}
        result = found[r["trial_id"]]
        if isinstance(result, UserError):  # the model or its card is missing: the trial is named, never dropped
            summary.append(entry | {"note": str(result), "randomisation": Randomisation.NOT_TESTED.word})
            continue
        if isinstance(result, ValueError):  # multilabel / hierarchical: no per-class map
            continue
        rows, m = result
        per_image.append(rows)
        maps[r["trial_id"]] = m | {"representation": r["representation"], "backbone": r["backbone"]}
        for col in ("lung_share_pred", "box_share_pred", "lung_share_counter", "lime_share_pred")[:3 + bool(lime)]:
            v = rows[col].to_numpy()
            lo, hi = bootstrap_ci(v, groups=rows["patient_id"].to_numpy())  # by patient
            entry |= {col: float(np.nanmean(v)) if (~np.isnan(v)).any() else np.nan, f"{col}_lo": lo,
                      f"{col}_hi": hi}
        entry |= {"lung_area": num(rows["lung_area"].mean()), "box_area": num(rows["box_area"].mean()),
                  "cam_layer": rows["cam_layer"][0], "cam_cells": rows["cam_cells"][0], "note": rows["note"][0]}
        entry |= sanity_summary(rows)
        summary.append(entry)
    if not summary:
        return pl.DataFrame(), pl.DataFrame(), {}
    return (pl.concat(per_image) if per_image else pl.DataFrame(), pl.DataFrame(summary, infer_schema_length=None),
            maps)


def _line(r: dict, lime: bool) -> str:
    """One trial's saliency in words: its note (a missing model, too few cells), or its shares and checks."""
    if r["note"] or r.get("lung_share_pred") is None:
        return str(r["note"])
    if r["lung_share_pred"] != r["lung_share_pred"]:
        return "no Grad-CAM signal (every map empty)"
    text = (f"{r['lung_share_pred']:.2f} [{r['lung_share_pred_lo']:.2f}, {r['lung_share_pred_hi']:.2f}] of the "
            f"Grad-CAM mass in the lungs (lung area {r['lung_area']:.2f}); {r['box_share_pred']:.2f} in the lung box "
            f"(box area {r['box_area']:.2f}); map {r['cam_cells']} at {r['cam_layer']}")
    if lime and r.get("lime_share_pred") == r.get("lime_share_pred"):
        text += f"; LIME {r['lime_share_pred']:.2f} [{r['lime_share_pred_lo']:.2f}, {r['lime_share_pred_hi']:.2f}]"
    if r["randomisation"].startswith("fails"):
        text += (f"; UNTRUSTWORTHY: the map barely changes when the model's top layers are randomised (rank "
                 f"correlation {r['randomisation_rho']:.2f})")
    elif r["randomisation"] == Randomisation.PASSES.word:
        text += (f"; passes the randomisation check (rank correlation {r['randomisation_rho']:.2f}), ROAD "
                 f"{r['road']:+.3f} [{r['road_lo']:+.3f}, {r['road_hi']:+.3f}]")
    return text


@analysis_step(order=40, models=True)
def saliency(run: LoadedRun) -> Artifacts:
    """Grad-CAM (and LIME) shares inside the lungs (CSV, bar chart) and example grids; a line per trial."""
    a = Artifacts(sections=[Section("Saliency inside the lungs", tables=("saliency_in_lungs",),
                                    figures=("saliency_in_lungs", "gradcam_grid"), group="saliency",
                                    verdict="randomisation", note=(
                                        f"randomisation: the maps recomputed after re-initialising the CAM layer and "
                                        f"the head (Adebayo et al. 2018); a mean rank correlation of {RHO_MAX} or "
                                        f"more with the trained model's maps means the map does not explain the "
                                        f"model, and its in-lung share is untrustworthy. ROAD (Rong et al. 2022): "
                                        f"above 0 when the map ranks first the pixels the model uses"
                                        f"{run.model_seeds_note()}"))])
    limit, lime = run.options.saliency, min(run.options.lime, run.options.saliency)
    if not limit or not run.aurocs.height:
        return a
    per_image, summary, maps = saliency_tables(run.layout.root, run.model_trials(), limit, lime,
                                                     run.options.placement)
    if summary.is_empty():
        return a
    a.tables |= {"saliency_per_image": per_image, "saliency_in_lungs": summary}
    explained = summary.filter(pl.col("lung_share_pred").is_not_null()) if "lung_share_pred" in summary.columns \
        else pl.DataFrame()
    if explained.is_empty():
        a.text = "\n\nSaliency inside the lungs: no model could be explained:\n" + "\n".join(
            f"- {r['representation']} / {r['backbone']}: {r['note']}" for r in summary.iter_rows(named=True))
        return a
    plot_saliency_bars(explained, run.figure("saliency_in_lungs"))
    plot_gradcam_grid(maps, run.figure("gradcam_grid"))
    a.figures |= {"saliency_in_lungs": "Grad-CAM mass inside the lungs per trial, by representation and backbone",
                  "gradcam_grid": "Grad-CAM of the predicted class on the image each model saw, two test images "
                                  "per true class; white: the lungs where the model saw them"}
    lines = [f"- {r['representation']} / {r['backbone']}: " + _line(r, bool(lime))
             for r in summary.iter_rows(named=True)]
    a.text = "\n\nSaliency inside the lungs (predicted class, 95 % bootstrap CI by patient; maps placed by the " \
             "layer's geometry):\n" + "\n".join(lines)
    return a
