"""Step ``bias``: the dataset-design drop of Hasan et al. and the source probes on the run's shards (the step
``demographics`` reads the same thumbnails for sex and age band)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cxrray.analysis.delong import design_drops
from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.explain.probe import probes, source_rows
from cxrray.report.page import Artifacts, Section
from cxrray.representations import hide_seek_representations, lung_hiding
from cxrray.scalars import num


def analysed_shards(run: LoadedRun) -> Path | None:
    """The shard set of the run's analysed trials (the first one's: a study's trials share it), when it has a
    train and a test split."""
    analysed = run.results.filter(pl.col("trial_id").is_in(run.aurocs["trial_id"].implode())) \
        if run.aurocs.height else pl.DataFrame()
    if analysed.is_empty() or "image_size" not in analysed.columns:
        return None
    first = analysed.row(0, named=True)
    shard = run.layout.shards(first["data_id"], first["image_size"])
    return shard if (shard / "train").exists() and (shard / "test").exists() else None


@analysis_step(order=50)
def bias(run: LoadedRun) -> Artifacts:
    """Design drop (AUROC minus the independent design's) and how identifiable the hospital is per representation."""
    a = Artifacts(sections=[Section("Source probe", tables=("source_probe",), group="bias"),
                            Section("Label and within-label source probes", tables=("probes",), group="bias",
                                    note="under a full confound the hospital is the label: only the within-label "
                                         "probe asks whether the hospital itself shows"),
                            Section("Dataset-design bias", tables=("design_drops",), group="bias")])
    drops = design_drops(run.predictions, run.aurocs) if run.aurocs.height else pl.DataFrame()
    if not drops.is_empty():
        a.tables["design_drops"] = drops
        a.text += "\n\nDataset-design bias (AUROC minus the independent design's, 95 % CI):\n" + "\n".join(
            f"- {r['backbone']} {r['task']} {r['design']}: {r['auroc']:.3f} vs independent "
            f"{r['auroc_independent']:.3f}, drop {r['drop']:+.3f} [{r['drop_lo']:+.3f}, {r['drop_hi']:+.3f}], "
            f"p = {r['p']:.3g}" for r in drops.iter_rows(named=True))
    shard = analysed_shards(run)
    if shard is None:
        return a
    every = probes(shard, hide_seek_representations())
    if every.is_empty():
        return a
    a.tables["probes"] = every
    probe = source_rows(every)
    if probe.is_empty():
        return a
    a.tables["source_probe"] = probe
    a.text += (f"\n\nSource probe (logistic regression on 16x16 thumbnails; chance {probe['chance'][0]:.2f} for "
               f"{probe['n_sources'][0]} sources): " + "; ".join(
                   f"{r['representation']} {r['balanced_accuracy']:.2f}" for r in probe.iter_rows(named=True))
               + " balanced accuracy.")
    hidden = probe.filter(pl.col("representation").is_in(lung_hiding()))
    found = hidden.filter(pl.col("p_patients") < 0.05)["representation"].to_list()
    a.text += (f" With the lungs hidden ({', '.join(found)}) the hospital is still identifiable (permutation "
               f"test over patients, p < 0.05)." if found else
               " With the lungs hidden the probe is not better than guessing the majority source.")
    label = every.filter(pl.col("probe") == "label")
    if label.height:
        a.text += " Label probe (the same thumbnails, the class instead of the hospital): " + "; ".join(
            f"{r['representation']} {r['balanced_accuracy']:.2f}" for r in label.iter_rows(named=True)) + "."
    within = every.filter(pl.col("probe").str.starts_with("source within"))
    if within.height and num(within["note"].str.len_chars().max()) > 0 and within["balanced_accuracy"].is_nan().all():
        a.text += " Within-label source probe: cannot be estimated (every label comes from one source)."
    elif within.height:
        a.text += " Within-label source probe (the hospital among images of one label; chance per label): " + "; ".join(
            f"{r['representation']} {r['probe'].removeprefix('source within ')} {r['balanced_accuracy']:.2f} "
            f"(chance {r['chance']:.2f})" for r in within.drop_nans("balanced_accuracy").iter_rows(named=True)) + "."
    return a
