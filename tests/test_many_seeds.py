"""A run of many seeds: the per-trial figures draw the first ``SEEDS_SHOWN`` seeds and say so; the tables keep
every trial (10,000 tiny trials once made a forest plot 360,000 pixels tall and 3 GB of memory)."""

import numpy as np
import polars as pl
from PIL import Image

from cxrray.analysis.analyze import run_analysis
from cxrray.analysis.steps import analysis_options
from cxrray.plots.figures import SEEDS_SHOWN, first_seeds


def _stored_run(root, seeds: int, images: int = 40):
    rng = np.random.default_rng(0)
    patient = np.arange(images) // 2
    y = (patient % 5 < 2).astype(int)
    base = {"row": np.arange(1, images + 1), "patient_id": [f"p{i}" for i in patient], "source": "a",
            "label": np.where(y, "CVP", "NOR"), "severity": "", "sex": np.where(patient % 2, "F", "M"),
            "age": 40 + patient, "view": "PA", "target": y, "split": "test"}
    preds, res = [], []
    for rep in ("original", "lungs_removed"):
        for s in range(seeds):
            tid = f"{rep[:4]}{s:02d}"
            score = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(0, 1, images))))
            preds.append(pl.DataFrame(base | {"prob_NCV": 1 - score, "prob_CVP": score, "trial_id": tid}))
            res.append({"study": "hide_seek", "representation": rep, "backbone": "basecnn", "task": "CL2",
                        "pretraining": "none", "design": "random", "seed": s, "fold": 0, "trial_id": tid,
                        "run_name": f"{rep}.basecnn.none.s{s}", "status": "finished", "init": "random",
                        "best_val_auroc": 0.9})
    root.mkdir()
    pl.concat(preds).write_parquet(root / "predictions.parquet")
    pl.DataFrame(res).write_parquet(root / "results.parquet")
    return root


def test_first_seeds_keeps_the_lowest_seeds_and_counts_the_rest():
    aurocs = pl.DataFrame({"seed": [3, 0, 7, 1, 0, 5], "trial_id": list("abcdef")})
    kept, left = first_seeds(aurocs, 2)
    assert sorted(kept["trial_id"]) == ["b", "d", "e"] and left == 3
    assert first_seeds(aurocs.drop("seed"), 2)[1] == 0


def test_figures_draw_the_first_seeds_and_the_tables_every_trial(tmp_path):
    few, many = (_stored_run(tmp_path / f"s{n}", n) for n in (SEEDS_SHOWN, SEEDS_SHOWN + 6))
    heights, captions = {}, {}
    for run in (few, many):
        result = run_analysis(run, analysis_options("statistics"))
        heights[run.name] = Image.open(run / "analysis" / "auroc_forest.png").size[1]
        captions[run.name] = {n: c for a in result.artifacts.values() for n, c in a.figures.items()}
        assert pl.read_csv(run / "analysis" / "trial_aurocs.csv").height == 2 * int(run.name[1:])
    assert heights[few.name] == heights[many.name]  # the same trials drawn
    assert "the first 4 seeds, 6 more in the tables" in captions[many.name]["auroc_forest"]
    assert "the first 4 seeds, 6 more in the table" in captions[many.name]["roc_curves"]
    assert "seeds" not in captions[few.name]["auroc_forest"] and "first" not in captions[few.name]["roc_curves"]
