"""Train on one representation, test on all (as "Mask of truth", Sourget et al. 2024, does).

Each analysed trial's saved model (best on validation) scores every test image of its shards under every
hide-and-seek representation with the model's channel count, through the trial's own input pipeline; the
AUROC of the task's positive class gets its interval clustered by patient. It answers what the
same-representation table cannot: does the model trained on full images still work with the lungs removed
(it reads what is outside the lungs), or with only the lungs? The diagonal reproduces the trial's stored test
AUROC (a check the tests make). Nothing retrains. Step ``transfer``; ``analysis/transfer_matrix.csv`` and a
heatmap per backbone.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from cxrray.analysis.cache import TrialCache
from cxrray.analysis.palette import protocol_sorted
from cxrray.analysis.saliency import load_trial
from cxrray.analysis.steps import Artifacts, LoadedRun, Section, analysis_step
from cxrray.config import RunLayout
from cxrray.data.shards import read_split_local
from cxrray.data.tasks import TASKS
from cxrray.delong import auroc_interval, score_interval
from cxrray.registry import UserError
from cxrray.representations import InputPipeline, hide_seek_representations, out_channels


def trial_transfer(run_dir, trial_id: str, batch_size: int = 64) -> list[dict]:
    """One row per test representation the trial's model takes: AUROC [CI] of its positive class."""
    spec, card, model = load_trial(run_dir, trial_id)
    task = TASKS.get(card.task)
    if task.positive is None:
        return []
    batch = read_split_local(RunLayout(run_dir).shards_of(spec) / "test")
    y = np.asarray([task.class_index(str(x)) for x in batch["label"]]) == task.positive_index
    if y.all() or not y.any():
        return []
    rows = []
    for rep in hide_seek_representations():
        if out_channels(rep) != out_channels(spec.representation):
            continue
        pipe, scores = InputPipeline(rep, card.mean, card.std), []
        with torch.no_grad():
            for i in range(0, len(y), batch_size):
                part = {k: np.asarray(v)[i:i + batch_size] for k, v in batch.items()}
                prob = card.probs(model(pipe.to_inputs(part, torch.device("cpu")))).numpy()
                scores.append(prob[:, task.positive_index])
        ci = auroc_interval(y, np.concatenate(scores), np.asarray(batch["patient_id"]))
        rows.append({"trial_id": trial_id, "train": spec.representation, "test": rep, "backbone": spec.backbone,
                     "seed": spec.seed, "auroc": ci.auc, "ci_lo": ci.lo, "ci_hi": ci.hi, "n_pos": ci.n_pos,
                     "n_neg": ci.n_neg, "deff": ci.deff})
    return rows


VERSION = 1  # of the per-trial result (``cache.TrialCache``): raise it when trial_transfer computes otherwise


def transfer_matrix(run: LoadedRun) -> pl.DataFrame:
    """Every analysed hide-and-seek trial with a saved model, scored on every representation (each trial once:
    its rows are cached and reused by later analyses)."""
    rows, cache = [], TrialCache(run.layout, "transfer", VERSION, {})
    for trial in run.aurocs.iter_rows(named=True):
        if "representation" not in trial or trial.get("method", "standard") != "standard":
            continue  # FuCiTNet's fused two-pass model is scored by its own trial only
        try:
            hit = cache.get(trial["trial_id"])
            if hit is None:
                mine = trial_transfer(run.layout.root, trial["trial_id"])
                cache.put(trial["trial_id"], pl.DataFrame(mine, infer_schema_length=None))
            else:
                mine = hit[0].to_dicts()
            rows += mine
        except UserError as exc:  # a missing model is named in the table, never dropped
            rows.append({"trial_id": trial["trial_id"], "train": trial["representation"], "test": "",
                         "backbone": trial["backbone"], "seed": trial.get("seed", 0), "note": str(exc)})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def plot_transfer(table: pl.DataFrame, path) -> None:
    """A heatmap per backbone: train representation (rows) x test representation (columns), the mean AUROC over
    seeds in each cell (seeds are replicates), diverging at chance so a lost signal reads as white (a neutral
    purple-orange scale: the same AUROC is good on the diagonal and a shortcut off it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [r for r in hide_seek_representations() if r in set(table["train"]) | set(table["test"])]
    backbones = sorted(set(table["backbone"]))
    fig, axes = plt.subplots(1, len(backbones), figsize=(1.1 * len(order) * len(backbones) + 2.5,
                                                         1.0 * len(order) + 1.5), squeeze=False, sharey=True)
    for ax, backbone in zip(axes[0], backbones):
        part = table.filter(pl.col("backbone") == backbone).group_by("train", "test").agg(pl.col("auroc").mean())
        grid = np.full((len(order), len(order)), np.nan)
        for r in part.iter_rows(named=True):
            grid[order.index(r["train"]), order.index(r["test"])] = r["auroc"]
        im = ax.imshow(grid, cmap="PuOr_r", vmin=0.0, vmax=1.0)  # distance from chance, not good or bad
        for i in range(len(order)):
            for j in range(len(order)):
                if grid[i, j] == grid[i, j]:
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if abs(grid[i, j] - 0.5) > 0.3 else "black")
        ax.set_xticks(range(len(order)), order, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(order)), order, fontsize=8)
        ax.set(xlabel="tested on", title=backbone)
    axes[0][0].set_ylabel("trained on")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="test AUROC (0.5 = chance)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


@analysis_step(order=42, models=True)
def transfer(run: LoadedRun) -> Artifacts:
    """Each trial's model scored on every representation of its test images (the transfer matrix)."""
    a = Artifacts()
    a.sections = [Section("Train on one representation, test on all", tables=("transfer_matrix", "transfer_missing"),
                          figures=("transfer_matrix",), group="bias", note=(
                              "rows of the table: a trained model (train) scored on its test images under another "
                              "representation (test), AUROC with its 95 % interval clustered by patient; a model "
                              "trained on original images that keeps its AUROC with the lungs removed reads what "
                              "lies outside them (claimed in the text with the Bonferroni-corrected interval over "
                              "every model tested with the lungs removed)"))]
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
    a.text = (f"\n\nTransfer matrix: {table['trial_id'].n_unique()} model(s) scored on {table['test'].n_unique()} "
              f"representation(s) (analysis/transfer_matrix.csv)." + ("".join(
                  f"\n- trained on {r['train']} ({r['backbone']}, seed {r['seed']}), tested with the lungs removed: "
                  f"AUROC {r['auroc']:.3f} [{r['ci_lo_corrected']:.3f}, {r['ci_hi_corrected']:.3f}] "
                  f"({100 * level:.1f} % interval, Bonferroni over {claims.height}): it reads what lies outside "
                  f"the lungs" for r in kept.iter_rows(named=True)) if off.height else "")) + "".join(
                      f"\n- {r['train']} / {r['backbone']} (seed {r['seed']}): not scored: {r['note']}"
                      for r in missing.iter_rows(named=True))
    if missing.height:
        a.tables["transfer_missing"] = missing
    return a
