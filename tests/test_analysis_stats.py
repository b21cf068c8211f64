"""Analysis statistics from stored predictions: metrics, DeLong families with Holm/Bonferroni, shortcut rule."""

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from cxrray.analysis import metrics
from cxrray.analysis.analyze import run_analysis
from cxrray.analysis.aurocs import trial_aurocs
from cxrray.analysis.delong import pairwise_tests
from cxrray.analysis.metrics import class_metrics, severity_accuracy
from cxrray.analysis.shortcut import shortcut_findings, shortcut_sentences
from cxrray.analysis.steps import AnalysisOptions
from cxrray.stats.delong import paired_test
from cxrray.stats.multiplicity import bonferroni, holm

SEVERITIES = np.array(["Mild", "Moderate", "Severe", "Normal-PCR+"])


def _run(tmp_path, signal: dict[str, float], n: int = 120, seed: int = 0):
    """A stored 'run': one CL2 trial per representation whose CVP score carries ``signal`` of the label."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    label = np.where(y, "CVP", "NOR")
    severity = np.where(y, SEVERITIES[rng.integers(0, 4, n)], "none")
    preds, res = [], []
    for k, (rep, strength) in enumerate(signal.items()):
        score = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 1, n))))
        tid = f"t{k}"
        preds.append(pl.DataFrame({"row": np.arange(1, n + 1), "patient_id": [f"p{i}" for i in range(n)],
                                   "source": "a", "label": label, "severity": severity, "target": y.astype(int),
                                   "prob_NCV": 1 - score, "prob_CVP": score, "trial_id": tid, "split": "test"}))
        res.append({"study": "hide_seek", "representation": rep, "backbone": "resnet18", "task": "CL2",
                    "pretraining": "none", "design": "random", "seed": 0, "fold": 0, "trial_id": tid,
                    "run_name": f"{rep}.resnet18.none.s0", "status": "finished", "init": "random",
                    "best_val_auroc": 0.9})
    pl.concat(preds).write_parquet(tmp_path / "predictions.parquet")
    pl.DataFrame(res).write_parquet(tmp_path / "results.parquet")
    return pl.concat(preds), pl.DataFrame(res)


def test_bonferroni_and_holm_known_values():
    p = [0.01, 0.04, 0.03, 0.005]
    assert np.allclose(bonferroni(p), [0.04, 0.16, 0.12, 0.02])
    assert np.allclose(holm(p), [0.03, 0.06, 0.06, 0.02])  # 0.005*4, 0.01*3, 0.03*2, max(0.04*1, 0.06)
    rng = np.random.default_rng(1)
    for _ in range(50):  # Holm's definition, brute force
        q = rng.random(7) ** 3
        order = np.argsort(q)
        ref = np.empty(7)
        for i, j in enumerate(order):
            ref[j] = min(1.0, max((7 - r) * q[order[r]] for r in range(i + 1)))
        assert np.allclose(holm(q), ref)
        assert (holm(q) <= bonferroni(q) + 1e-15).all() and (holm(q) >= q).all()


def test_class_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    prob = rng.dirichlet(np.ones(3), 200)
    prob[np.arange(200), y] += 0.3
    m = class_metrics(y, prob / prob.sum(1, keepdims=True), ["NOR", "NCP", "CVP"])
    p, r, f, _ = precision_recall_fscore_support(y, prob.argmax(1), labels=[0, 1, 2])
    for k, c in enumerate(["NOR", "NCP", "CVP"]):
        assert m[f"sens_{c}"] == pytest.approx(r[k]) and m[f"ppv_{c}"] == pytest.approx(p[k])
        assert m[f"f1_{c}"] == pytest.approx(f[k])
        neg = y != k
        assert m[f"spec_{c}"] == pytest.approx((prob.argmax(1)[neg] != k).mean())
    assert m["accuracy"] == pytest.approx((prob.argmax(1) == y).mean())


def test_confusion_counts_match_sklearn_including_values_outside_the_classes():
    rng = np.random.default_rng(1)
    for k, n in ((2, 12), (3, 200), (5, 1)):
        y, pred = rng.integers(-1, k + 1, n), rng.integers(0, k + 1, n)  # -1 and k: not classes, not counted
        got = metrics.confusion_matrix(y, pred, k)
        assert got.dtype == np.int64 and np.array_equal(got, confusion_matrix(y, pred, labels=list(range(k)))), k
    assert not metrics.confusion_matrix(np.array([], int), np.array([], int), 4).any()  # (scikit-learn raises)


def test_pairwise_tests_paired_unpaired_and_adjusted(tmp_path):
    preds, res = _run(tmp_path, {"original": 3.0, "lungs_removed": 1.0, "lungs_boxed_out": 0.0})
    aurocs = trial_aurocs(preds, res)
    pairs = pairwise_tests(preds, aurocs)
    assert pairs.height == 3 and set(pairs["test"]) == {"paired"} and set(pairs["n_tests"]) == {3}
    t0 = preds.filter(pl.col("trial_id") == "t0").sort("row")
    t2 = preds.filter(pl.col("trial_id") == "t2").sort("row")
    direct = paired_test((t0["label"] == "CVP").to_numpy(), t0["prob_CVP"].to_numpy(), t2["prob_CVP"].to_numpy())
    row = pairs.filter((pl.col("a") == "original.resnet18.none.random") & (pl.col("b").str.starts_with("lungs_boxed")))
    assert row["p"][0] == pytest.approx(direct.p, abs=1e-12)
    assert np.allclose(pairs["p_holm"], holm(pairs["p"].to_numpy()))
    shifted = preds.with_columns(pl.when(pl.col("trial_id") == "t2").then(pl.col("row") + 1000).otherwise(pl.col("row"))
                                 .alias("row"))
    mixed = pairwise_tests(shifted, aurocs)
    assert sorted(mixed["test"]) == ["paired", "unpaired", "unpaired"]  # other test images: unpaired test


def test_shortcut_rule_flags_signal_without_lungs_only(tmp_path):
    preds, res = _run(tmp_path, {"original": 3.0, "lungs_removed": 2.0, "lungs_boxed_out": 0.0}, n=300)
    aurocs = trial_aurocs(preds, res)
    f = shortcut_findings(preds, aurocs)
    flags = dict(zip(f["representation"], f["shortcut"], strict=True))
    assert flags == {"lungs_removed": True, "lungs_boxed_out": False}
    assert set(f["level"]) == {1 - 0.05 / 2}  # Bonferroni over the two lung-hiding trials
    lr = f.filter(pl.col("representation") == "lungs_removed").row(0, named=True)
    orig = aurocs.filter(pl.col("representation") == "original")["auroc"][0]
    assert lr["retained"] == pytest.approx((lr["auroc"] - 0.5) / (orig - 0.5))
    text = shortcut_sentences(f)
    assert "SHORTCUT: AUROC" in text[0]
    assert "lies above chance and the share of the original's signal it keeps" in text[0]
    assert text[1].split(": ")[1] in ("INCONCLUSIVE", "NO SHORTCUT")


def test_severity_accuracy_counts(tmp_path):
    preds, res = _run(tmp_path, {"original": 3.0})
    sev = severity_accuracy(preds, res)
    test = preds.filter(pl.col("label") == "CVP")
    for r in sev.filter(pl.col("severity") != "none").iter_rows(named=True):
        part = test.filter(pl.col("severity") == r["severity"])
        assert r["n"] == part.height
        assert r["accuracy"] == pytest.approx((part["prob_CVP"] > 0.5).mean())
    assert sev["severity"].to_list()[:2] == ["none", "Normal-PCR+"]  # clinical order


def test_analysis_is_identical_when_run_twice(tmp_path):
    _run(tmp_path, {"original": 3.0, "lungs_removed": 1.5, "lungs_boxed_out": 0.2})
    first_text = run_analysis(tmp_path).text
    first = {p.relative_to(tmp_path): p.read_bytes() for p in sorted((tmp_path / "analysis").rglob("*.csv"))}
    second_text = run_analysis(tmp_path).text
    second = {p.relative_to(tmp_path): p.read_bytes() for p in sorted((tmp_path / "analysis").rglob("*.csv"))}
    assert first_text == second_text and first == second
    assert {"trial_metrics.csv", "cell_metrics.csv", "delong_pairs.csv", "shortcut_findings.csv",
            "severity_accuracy.csv"} <= {p.name for p in first}
    assert "Shortcut verdicts" in first_text and "after Holm" in first_text


def test_saliency_mass_inside_and_outside_the_mask():
    from cxrray.explain.saliency import saliency_mass

    mask = np.zeros((2, 16, 16), bool)
    mask[:, 4:12, 3:7] = True
    cam = np.zeros((2, 16, 16))
    cam[0][mask[0]] = np.linspace(0.1, 1, mask[0].sum())  # all of it inside
    cam[1][~mask[1]] = 0.7  # all of it outside
    assert saliency_mass(cam, mask).tolist() == [1.0, 0.0]
    half = np.where(mask[0], 1.0, 0.0) + np.where(np.roll(mask[0], 8, axis=1), 1.0, 0.0)
    assert saliency_mass(half[None], mask[:1])[0] == pytest.approx(0.5)
    assert np.isnan(saliency_mass(np.zeros((1, 16, 16)), mask[:1])[0])  # an empty map has no share


def test_design_drop_uses_the_independent_design_as_reference(tmp_path):
    from cxrray.analysis.delong import design_drops

    preds, res = _run(tmp_path, {"original": 3.0, "lungs_removed": 0.5}, n=200)
    res = res.with_columns(pl.Series("design", ["single", "independent"]), pl.lit("original").alias("representation"))
    aurocs = trial_aurocs(preds, res)
    drops = design_drops(preds, aurocs)
    assert drops.height == 1 and drops["design"][0] == "single"
    single, ind = (aurocs.filter(pl.col("design") == d)["auroc"][0] for d in ("single", "independent"))
    r = drops.row(0, named=True)
    assert r["drop"] == pytest.approx(single - ind) and r["drop_lo"] > 0 and r["p"] < 0.05


class _RegionModel(torch.nn.Module):
    """Class 1's logit is the mean input inside ``region``: only those pixels matter."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x[:, 0] * self.region).sum((1, 2)) / self.region.sum()
        return torch.stack([torch.zeros_like(s), 8 * s], 1)


def test_lime_share_follows_what_the_model_uses():
    """LIME (lime package, SLIC superpixels) puts the evidence inside the lungs for a model that reads only
    the lungs, and outside for one that reads only the rest; seeded, so the maps repeat."""
    from cxrray.explain.lime_maps import lime_maps
    from cxrray.explain.saliency import saliency_mass

    size = 64
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ell = lambda cx: ((yy - size / 2) / (size * 0.28)) ** 2 + ((xx - size * cx) / (size * 0.15)) ** 2 <= 1  # noqa: E731
    lungs = ell(0.31) | ell(0.69)  # 26 % of the image
    x = 0.5 + 0.5 * torch.rand(3, 1, size, size, generator=torch.Generator().manual_seed(0))
    masks = lungs.numpy()[None].repeat(3, 0)
    probs = lambda z: torch.softmax(z, 1)  # noqa: E731
    inside = lime_maps(_RegionModel(lungs.float()), x, np.ones(3), probs, hide_value=0.0, num_samples=300)
    outside = lime_maps(_RegionModel((~lungs).float()), x, np.ones(3), probs, hide_value=0.0, num_samples=300)
    assert (saliency_mass(inside, masks) > 0.6).all()  # observed 0.74-0.75 (superpixels straddle the edge)
    assert (saliency_mass(outside, masks) < 0.15).all()  # observed 0.06-0.08
    again = lime_maps(_RegionModel(lungs.float()), x, np.ones(3), probs, hide_value=0.0, num_samples=300)
    assert np.array_equal(inside, again)


def test_degeneracy_names_models_that_did_not_learn():
    from cxrray.data.tasks import TASKS, degeneracy

    task, rng = TASKS.get("CL2"), np.random.default_rng(0)
    y = rng.random(40) < 0.5

    def frame(score):
        return pl.DataFrame({"prob_NCV": 1 - score, "prob_CVP": score, "target": y.astype(int)})

    flat = 0.4988 + 2.5e-4 * y + rng.normal(0, 1e-5, 40)  # the demo's lungs_removed basecnn: perfectly ordered
    assert degeneracy(frame(flat), task, [0.693] * 4).startswith("constant scores")
    one_class = 0.55 + 0.3 * rng.random(40)  # varied, but every image called CVP
    said = degeneracy(frame(one_class), task, [0.701, 0.695, 0.694])
    assert "predicts CVP for every image" in said and "ln 2 = 0.693" in said
    assert degeneracy(frame(one_class), task, [0.70, 0.52]) == ""  # it learned; the threshold chose one class
    assert degeneracy(frame(np.clip(y + rng.normal(0, 0.3, 40), 0.01, 0.99)), task, [0.69]) == ""


def test_a_degenerate_lung_hiding_trial_gets_no_verdict(tmp_path):
    """A perfectly ordered but constant lungs_removed score gave 'AUROC 1.000 ... SHORTCUT'; now it is named
    degenerate, untested, and the other lung-hiding trial keeps its verdict."""
    from cxrray.data.tasks import TASKS, degeneracy

    preds, res = _run(tmp_path, {"original": 3.0, "lungs_removed": 0.0, "lungs_boxed_out": 3.0})
    y = preds.filter(pl.col("trial_id") == "t1")["target"].to_numpy()
    flat = 0.4988 + 2.5e-4 * y
    preds = preds.with_columns(pl.when(pl.col("trial_id") == "t1").then(
        pl.Series(np.tile(flat, 3))).otherwise(pl.col("prob_CVP")).alias("prob_CVP"))
    preds = preds.with_columns((1 - pl.col("prob_CVP")).alias("prob_NCV"))
    reasons = {tid: degeneracy(part, TASKS.get("CL2"), [0.693]) for (tid,), part in preds.group_by("trial_id")}
    res = res.with_columns(pl.col("trial_id").replace_strict(reasons).alias("degenerate"))
    preds.write_parquet(tmp_path / "predictions.parquet")
    res.write_parquet(tmp_path / "results.parquet")
    aurocs = trial_aurocs(preds, res)
    assert aurocs.filter(pl.col("trial_id") == "t1")["auroc"][0] == 1.0  # the old rule flagged exactly this
    f = shortcut_findings(preds, aurocs)
    flags = dict(zip(f["representation"], f["shortcut"], strict=True))
    assert flags == {"lungs_removed": False, "lungs_boxed_out": True}
    assert set(f["level"]) == {0.95}  # only the one tested lung-hiding trial counts in the correction
    text = run_analysis(tmp_path, AnalysisOptions(saliency=0)).text
    assert "DEGENERATE: the model did not learn (constant scores" in text
    assert "1 DEGENERATE trial(s), not used as evidence" in text and "lungs_removed.resnet18.none.s0" in text
    assert "bal. acc. 0.50 DEGENERATE" in text and "1.000 [1.000, 1.000]" not in text  # never zero width


def test_severity_accuracy_keeps_positives_and_negatives_apart_with_wilson_cis():
    """A model calling every image COVID-19 used to read 'Mild 0.444' (positives right, negatives wrong,
    pooled); now Mild is 1.0 for CVP and 0.0 for NCV, each with its Wilson interval."""
    n = 9
    label = np.array(["CVP"] * 4 + ["NOR"] * 5)
    preds = pl.DataFrame({"row": np.arange(n), "patient_id": [f"p{i}" for i in range(n)], "source": "a",
                          "label": label, "severity": ["Mild"] * n, "target": (label == "CVP").astype(int),
                          "prob_NCV": 0.2, "prob_CVP": 0.8, "trial_id": "t", "split": "test"})
    res = pl.DataFrame({"trial_id": ["t"], "study": ["s"], "representation": ["original"], "backbone": ["b"]})
    sev = severity_accuracy(preds, res)
    by = {r["class"]: r for r in sev.iter_rows(named=True)}
    assert (by["CVP"]["n"], by["CVP"]["accuracy"], by["NCV"]["n"], by["NCV"]["accuracy"]) == (4, 1.0, 5, 0.0)
    assert by["CVP"]["accuracy_lo"] == pytest.approx(0.5101, abs=1e-4) and by["CVP"]["accuracy_hi"] == 1.0
    assert by["NCV"]["accuracy_lo"] == 0.0 and by["NCV"]["accuracy_hi"] == pytest.approx(0.4345, abs=1e-4)


def test_replicates_are_aggregated_with_a_t_interval_never_pooled(tmp_path):
    """Two seeds of one cell at AUROC 1.000 and 0.917 used to 'pool' to 0.729; now the cell reports their mean
    with a t-interval, and a fold mean's variance includes the spread between folds."""
    from scipy import stats

    from cxrray.analysis.delong import mean_variance
    from cxrray.analysis.metrics import cell_aurocs, t_interval

    aurocs = pl.DataFrame({"trial_id": ["a", "b"], "study": "s", "representation": "original", "backbone": "b",
                           "seed": [0, 1], "fold": 0, "auroc": [1.0, 0.917], "ci_lo": [1.0, 0.85],
                           "ci_hi": [1.0, 0.98]})
    cell = cell_aurocs(aurocs).row(0, named=True)
    half = stats.t.ppf(0.975, 1) * np.std([1.0, 0.917], ddof=1) / np.sqrt(2)
    assert cell["replicates"] == 2 and cell["auroc_mean"] == pytest.approx(0.9585)
    assert (cell["t_lo"], cell["t_hi"]) == pytest.approx((0.9585 - half, 0.9585 + half))
    assert cell["per_replicate"] == "1.000 [1.000, 1.000]; 0.917 [0.850, 0.980]"
    assert np.isnan(t_interval(np.array([0.8]))[1])  # one replicate: no spread to estimate
    within = mean_variance([0.9, 0.9, 0.9], [0.001] * 3)
    assert within == pytest.approx(0.003 / 9)  # identical folds: the DeLong variances alone
    spread = mean_variance([0.7, 0.9, 1.0], [0.001] * 3)
    assert spread == pytest.approx(0.003 / 9 + (np.var([0.7, 0.9, 1.0], ddof=1) - 0.001) / 3)
