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


def test_figures_draw_the_first_seeds_and_the_tables_every_trial(tmp_path, monkeypatch):
    from cxrray.analysis import calibration

    few, many = (_stored_run(tmp_path / f"s{n}", n) for n in (SEEDS_SHOWN, SEEDS_SHOWN + 6))
    heights, captions, reliability = {}, {}, {}
    real = calibration.plot_reliability

    def spy(table, curves, path, rows, left=0):  # what the reliability figure is given to draw, then drawn
        reliability[path.parent.parent.name] = (table.height, sorted(curves), left)
        real(table, curves, path, rows, left)

    monkeypatch.setattr(calibration, "plot_reliability", spy)
    for run in (few, many):
        result = run_analysis(run, analysis_options("statistics"))
        heights[run.name] = Image.open(run / "analysis" / "auroc_forest.png").size[1]
        captions[run.name] = {n: c for a in result.artifacts.values() for n, c in a.figures.items()}
        assert pl.read_csv(run / "analysis" / "trial_aurocs.csv").height == 2 * int(run.name[1:])
    assert heights[few.name] == heights[many.name]  # the same trials drawn
    assert "the first 4 seeds, 6 more in the tables" in captions[many.name]["auroc_forest"]
    assert "the first 4 seeds, 6 more in the table" in captions[many.name]["roc_curves"]
    assert "seeds" not in captions[few.name]["auroc_forest"] and "first" not in captions[few.name]["roc_curves"]
    assert "the first 4 seeds, 6 more in the table" in captions[many.name]["reliability"]
    assert "first" not in captions[few.name]["reliability"]
    # every trial is in the table the panel titles count; the lines are the first seeds' (a blur of 10,000 before)
    first = sorted(f"{rep}{s:02d}" for rep in ("orig", "lung") for s in range(SEEDS_SHOWN))
    assert reliability[many.name] == (2 * (SEEDS_SHOWN + 6), first, 6)
    assert reliability[few.name] == (2 * SEEDS_SHOWN, first, 0)


def test_the_text_card_and_report_tables_list_the_first_entries_and_name_the_file_with_all(tmp_path, monkeypatch):
    """10,000 trials once made a 2.5 MB terminal table and a 60 MB report: each list stops at its cap and says how
    many more there are and where; the CSV tables keep every trial (caps made small here: 6 seeds)."""
    from cxrray.analysis import aurocs
    from cxrray.report import html

    for module, name, value in ((aurocs, "TEXT_SEEDS", 3), (aurocs, "TEXT_LISTED", 2), (html, "REPORT_ROWS", 5),
                                (html, "CARD_LISTED", 2)):
        monkeypatch.setattr(module, name, value)
    run = _stored_run(tmp_path / "r", 6)
    preds = pl.read_parquet(run / "predictions.parquet")
    flat = pl.col("trial_id").is_in(["lung00", "lung01", "lung02"])  # three models that did not learn
    preds.with_columns(pl.when(flat).then(0.5).otherwise(pl.col("prob_CVP")).alias("prob_CVP"),
                       pl.when(flat).then(0.5).otherwise(pl.col("prob_NCV")).alias("prob_NCV")
                       ).write_parquet(run / "predictions.parquet")
    result = run_analysis(run, analysis_options("statistics"))
    text = result.text
    assert "; the first 3 seeds, 3 more in analysis/auroc_table.csv)" in text
    original_row = next(line for line in text.splitlines() if line.startswith("| original"))
    assert original_row.count("bal. acc.") == 3  # seeds 0-2 listed in the terminal
    table = pl.read_csv(run / "analysis" / "auroc_table.csv")
    assert table.filter(pl.col("representation") == "original")["basecnn"][0].count("bal. acc.") == 6
    assert "3 DEGENERATE trial(s)" in text and text.count("- lungs_removed.basecnn.none.s") == 2
    assert "- and 1 more (analysis/trial_aurocs.csv, column degenerate)" in text
    page = (run / "report.html").read_text()
    assert "the first 5 of 12 rows (all of them: analysis/trial_metrics.csv)" in page
    assert page.count("and 4 more (analysis/trial_aurocs.csv)") == 2  # one per grid cell: 6 seeds, 2 listed
    assert "and 1 more (analysis/trial_aurocs.csv)" in page  # the card's degenerate models
    assert pl.read_csv(run / "analysis" / "trial_aurocs.csv").height == 12


def test_a_column_is_called_constant_only_when_every_row_has_it_not_only_those_shown(monkeypatch):
    from cxrray.report import html

    monkeypatch.setattr(html, "REPORT_ROWS", 5)
    frame = pl.DataFrame({"representation": ["original"] * 8, "trial": [f"t{i}" for i in range(8)],
                          "x": [1.0] * 5 + [2.0] * 3})
    shown = html.table(frame, source="analysis/t.csv")
    assert shown is not None and len(shown.rows) == 5 and shown.total == 8 and shown.source == "analysis/t.csv"
    assert "X" in [h.upper() for h in shown.headers] and "x = " not in shown.constant.lower()
    assert shown.constant.startswith("The same in every row: representation")
