"""Step ``demographics``: the demographic probe, the patient's sex and age band read from the run's thumbnails of
each representation (the shards the step ``bias`` probes for the hospital)."""

from __future__ import annotations

import polars as pl

from cxrray.analysis.bias import analysed_shards
from cxrray.analysis.steps import LoadedRun, analysis_step
from cxrray.explain.probe import probes
from cxrray.report.page import Artifacts, Section
from cxrray.representations import hide_seek_representations, lung_hiding


@analysis_step(order=51)
def demographics(run: LoadedRun) -> Artifacts:
    """The demographic probe: the patient's sex and age band read from thumbnails of each representation."""
    a = Artifacts(sections=[Section("Demographic probe (sex, age band)", tables=("demographic_probe",),
                                    group="bias", note="the patient's sex and age band read from 16x16 thumbnails "
                                    "of each representation; above the majority rate with the lungs hidden, "
                                    "demography is a shortcut any classifier can take")])
    shard = analysed_shards(run)
    demographic = probes(shard, hide_seek_representations(), kinds=("sex", "age band")) if shard else None
    if demographic is None or demographic.is_empty():
        return a
    a.tables["demographic_probe"] = demographic.drop("note")
    read = demographic.filter(pl.col("representation").is_in(lung_hiding()) & (pl.col("p_patients") < 0.05))
    a.text = ("\n\nDemographic probe (sex and age band from thumbnails): " + ("; ".join(
        f"{r['probe']} readable from {r['representation']} (balanced accuracy {r['balanced_accuracy']:.2f}, "
        f"p {r['p_patients']:.2g})" for r in read.iter_rows(named=True)) if read.height else
        "with the lungs hidden, neither sex nor age band is readable above the majority rate") + ".")
    return a
