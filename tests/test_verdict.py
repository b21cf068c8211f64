"""The shortcut verdict at every edge a statistician probes (issue 26): patients as the unit, exact tests with
ties, one decision one interval, a usable original, "no shortcut" as equivalence, NaN scores, zero-width
intervals, and the headline. Each example of the issue is a test here; the old rule failed every one."""

import itertools

import numpy as np
import polars as pl
import pytest

from cxrray.stats.exact import ExactTest, permutation_auroc
from cxrray.stats.interval import auroc_interval
from cxrray.verdicts.simulate import Truth, draw, verdict_oc
from cxrray.verdicts.verdict import (
    AUROC_EFFECT,
    MIN_PATIENTS,
    R_SHORTCUT,
    VERDICTS,
    Estimate,
    Rules,
    decide,
    judge,
    verdict_line,
)


def _clustered(rng, n_pos, n_neg, images, icc, auc=0.5):
    t = Truth(auc, 0.95, n_pos + n_neg, images=images, icc=icc, prevalence=n_pos / (n_pos + n_neg))
    y, g, h, _ = draw(rng, t)
    return y, h, g  # judge's order: labels, scores, patients


def test_one_patient_per_class_is_too_few_whatever_the_images():
    """12 images of one positive and 12 of one negative patient, perfectly separated: the old rule ran an exact
    Mann-Whitney on 24 'independent' images (p = 7e-6) and said shortcut; two patients decide nothing."""
    y = np.repeat([True, False], 12)
    g = np.repeat(["p1", "p2"], 12)
    s = np.where(y, 0.9, 0.1) + np.linspace(0, 0.01, 24)
    f = judge(y, s, g)
    assert f.verdict == "too_few" and (f.patients_pos, f.patients_neg) == (1, 1)
    assert "fewer than 5 in a class decide nothing" in f.reason


def test_exact_test_permutes_patients_not_images():
    """One positive patient's 12 images can only move together: the only relabelling as extreme as the observed
    one is itself, among C(2, 1) = 2 patient labellings."""
    y = np.repeat([True, False], 12)
    g = np.repeat(["p1", "p2"], 12)
    exact = permutation_auroc(y, np.where(y, 0.9, 0.1), g)
    assert exact.total == 2 and exact.p_ge == 0.5 and exact.enumerated


def test_clustered_null_gives_few_false_claims():
    """No true signal, ICC 0.8, 5 positive patients x 3 images against 12 negatives: the old rule claimed
    shortcut or inverted in 27 % of such test sets (3 positives); now at most the nominal 5 %."""
    rng = np.random.default_rng(4)
    claims = 0
    for _ in range(200):
        y, h, g = _clustered(rng, 5, 12, 3, 0.8)
        claims += judge(y, h, g).verdict in ("shortcut", "inverted", "partial")
    assert claims / 200 <= 0.06, claims


def test_ties_keep_the_exact_test_exact():
    """2 + 3 images with binary, perfectly separated scores: the old code switched to an asymptotic test
    (p = 0.048); the permutation test is exact with ties: C(5, 2) = 10 labellings, one as extreme, p = 0.1."""
    y = np.array([1, 1, 0, 0, 0], bool)
    exact = permutation_auroc(y, y.astype(float))
    assert exact.p_ge == pytest.approx(0.1) and exact.p_two == pytest.approx(0.2) and exact.total == 10


def test_exact_p_equals_brute_force_on_random_tied_cases():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(5, 9))
        y = np.zeros(n, bool)
        y[:int(rng.integers(2, n - 1))] = True
        s = rng.integers(0, 3, n).astype(float)  # heavy ties
        from sklearn.metrics import roc_auc_score

        obs = roc_auc_score(y, s)
        perms = [roc_auc_score(np.isin(np.arange(n), c), s) for c in itertools.combinations(range(n), int(y.sum()))]
        ge = np.mean([p >= obs - 1e-12 for p in perms])
        assert permutation_auroc(y, s).p_ge == pytest.approx(ge)


def test_p_equal_to_alpha_is_not_significant():
    """3 + 3 perfectly separated images: exact one-sided p = 1/20 = 0.05, and alpha computed as 1 - 0.95 =
    0.050000000000000044 made it 'significant'. Fractions decide: 1/20 is not below 0.05, 1/21 is."""
    assert not ExactTest(1.0, 0.05, 1.0, 0.05, 1, 20, True, 0.0).significant(0.05)
    assert ExactTest(1.0, 1 / 21, 1.0, 1 / 21, 1, 21, True, 0.0).significant(0.05)
    assert not ExactTest(1.0, 0.05, 1.0, 0.05, 1, 20, True, 0.0).significant(1 - 0.95)


def _est(auc, lo, hi, var=0.003, pp=40, pn=40):
    return Estimate(auc, lo, hi, var, pp, pn, "score interval", 0.01)


def test_the_decision_reads_the_interval_shown():
    """AUROC 0.60 with its shown corrected interval [0.491, 0.709] was called shortcut by a one-sided p; the
    interval covers chance, so it is not, and a shortcut always sits next to an interval above 0.5."""
    f = decide(_est(0.60, 0.491, 0.709), None, 0.0, 0.95, Rules())
    assert f.verdict == "inconclusive" and f.ci_lo_corrected < 0.5
    rng = np.random.default_rng(3)
    for _ in range(40):
        y, h, g = _clustered(rng, 12, 20, 3, 0.3, auc=float(rng.choice([0.5, 0.6, 0.7, 0.35])))
        f = judge(y, h, g, m=2)
        if f.verdict in ("shortcut", "partial"):
            assert f.ci_lo_corrected > 0.5
        if f.verdict == "inverted":
            assert f.ci_hi_corrected < 0.5
        if f.ci_lo_corrected <= 0.5 <= f.ci_hi_corrected:
            assert f.verdict not in ("shortcut", "partial", "inverted")


def test_an_original_at_chance_is_no_reference():
    """An original at 0.508 (not significant) made a hidden 0.527 a shortcut keeping '338 %' of it; the absolute
    rule applies instead (0.527 < the effect size 0.6), and the row says why."""
    hidden = _est(0.527, 0.505, 0.549, var=0.00013)
    original = _est(0.508, 0.49, 0.526, var=0.00008)
    f = decide(hidden, original, 0.0, 0.95, Rules())
    assert f.verdict == "partial" and f.reference.startswith("absolute (the original is not above chance")
    assert f.retained != f.retained  # no ratio against a reference at chance
    usable = decide(hidden, _est(0.9, 0.88, 0.92, var=0.0001), 0.0, 0.95, Rules())
    assert usable.reference == "retained fraction vs original" and usable.verdict == "partial"
    assert usable.retained == pytest.approx(0.027 / 0.4)


def test_reversed_or_tiny_evidence_is_never_no_shortcut():
    """True AUROC 0.24 with 4-12 images per class was called no_shortcut in 20-36 % of test sets; 2 + 2 perfectly
    inverted images got no_shortcut with retained [-1, -1]; constant scores got no_shortcut [0.5, 0.5]."""
    rng = np.random.default_rng(5)
    for n in (4, 8, 12):
        said = [judge(*_clustered(rng, n, n, 1, 0.0, auc=0.24)).verdict for _ in range(100)]
        assert "no_shortcut" not in said, (n, said.count("no_shortcut"))
    y = np.array([1, 1, 0, 0], bool)
    assert judge(y, np.array([0.1, 0.2, 0.8, 0.9]), None, original=(y, np.array([.9, .8, .2, .1]), None)).verdict \
        == "too_few"
    y10 = np.arange(20) < 10
    constant = judge(y10, np.full(20, 0.5), np.arange(20))
    assert constant.verdict == "inconclusive" and constant.ci_hi_corrected - constant.ci_lo_corrected > 0.3


def test_no_shortcut_needs_equivalence_within_the_margin():
    """A hidden AUROC at chance is 'no shortcut' only when its interval lies within 0.5 +/- the margin: with
    many patients yes, with few (a wide interval) inconclusive; a margin is an option."""
    rng = np.random.default_rng(6)
    y, h, g = _clustered(rng, 600, 900, 2, 0.3)
    big = judge(y, h, g, original=(y, h + 3 * y, g))
    assert big.verdict == "no_shortcut" and big.ci_lo_corrected > 0.4 and big.ci_hi_corrected < 0.6
    assert "ruled out" in big.reason
    y, h, g = _clustered(rng, 15, 20, 2, 0.3)
    small = judge(y, h, g)
    assert small.verdict != "no_shortcut" and small.ci_hi_corrected - small.ci_lo_corrected > 0.2
    strict = judge(*_clustered(rng, 600, 900, 2, 0.3), rules=Rules(margin_auroc=0.01))
    assert strict.verdict == "inconclusive"


def test_nan_scores_are_degenerate_and_counted(tmp_path):
    """A diverged model with NaN scores vanished from the findings and from m, and the headline read NO SHORTCUT:
    0/1. The analysis checks the predictions it reads: the trial is named degenerate and counted."""
    from test_analysis_stats import _run

    from cxrray.analysis.analyze import run_analysis
    from cxrray.analysis.shortcut import headline

    preds, _res = _run(tmp_path, {"original": 3.0, "lungs_removed": 0.0, "lungs_boxed_out": 0.0}, n=400)
    preds = preds.with_columns(pl.when(pl.col("trial_id") == "t2").then(float("nan")).otherwise(pl.col("prob_CVP"))
                               .alias("prob_CVP"))
    preds.write_parquet(tmp_path / "predictions.parquet")
    result = run_analysis(tmp_path, )
    cells = result.artifacts["shortcut"].tables["cell_verdicts"]
    by = dict(zip(cells["representation"], cells["verdict"], strict=True))
    assert by["lungs_boxed_out"] == "degenerate" and by["lungs_removed"] in ("no_shortcut", "inconclusive")
    line = headline(result.artifacts).text
    assert "/2 lung-hiding trials" in line and "1 degenerate" in line and not line.startswith("NO SHORTCUT: 0/1")
    assert "NaN or infinite scores (400 of 400 images)" in result.text


def test_no_zero_width_interval_near_one():
    """9 positive / 23 negative patients x 2 images at true AUROC 0.988: the clustered DeLong CI covered 67 %
    (16 % of test sets [1, 1]); the score interval never has zero width and covers at least 93 %."""
    rng = np.random.default_rng(8)
    t = Truth(0.988, 0.99, 32, images=2, icc=0.5, prevalence=9 / 32)
    covered = 0
    for _ in range(300):
        y, g, h, _ = draw(rng, t)
        ci = auroc_interval(y, h, g)
        assert ci.hi - ci.lo > 0.005
        covered += ci.lo <= 0.988 <= ci.hi
    assert covered / 300 >= 0.93
    y = np.repeat([True, False], [9, 23])
    perfect = auroc_interval(y, y + np.linspace(0, 0.5, 32), np.arange(32))
    assert perfect.auc == 1.0 and perfect.hi == 1.0 and perfect.lo < 0.95


def test_signal_kept_without_the_lungs_is_a_shortcut_with_its_effect():
    rng = np.random.default_rng(1)
    y, g, h, o = draw(rng, Truth(0.9, 0.95, 300, images=2, icc=0.3))
    f = judge(y, h, g, m=2, original=(y, o, g))
    assert f.verdict == "shortcut" and f.retained > 0.6 and f.retained_lo < f.retained < f.retained_hi
    assert f.drop_lo < f.drop < f.drop_hi and f.reference == "retained fraction vs original"
    assert judge(y, h, g, original=(y, o, g), degenerate="constant scores").verdict == "degenerate"
    y, g, h, _ = draw(rng, Truth(0.56, 0.95, 4000, images=1, icc=0.0))
    weak = judge(y, h, g)  # significantly present, its whole interval below the effect size
    assert weak.verdict == "partial" and weak.ci_hi_corrected < AUROC_EFFECT, weak.reason


@pytest.mark.parametrize("truth, reference", [(Truth(0.68, 0.95, 64, images=1, icc=0.0), "retained"),
                                              (Truth(0.68, 0.95, 200, images=1, icc=0.0), "retained"),
                                              (Truth(0.57, 0.5, 200, images=1, icc=0.0), "absolute")])
def test_shortcut_or_partial_is_read_off_an_interval_not_the_point(truth, reference):
    """A true partial (retained fraction 0.4: hidden 0.68 against 0.95) was called shortcut from the point
    estimate in 22 % of test sets at 64 patients and 10.7 % at 200; a true AUROC of 0.57 without a usable
    original in 20.3 %. Now shortcut needs the interval at or above the line; one straddling it says 'signal'
    (strength undetermined), a claim of a signal all the same. Known truth, 300 sets: wrong strength <= 2.5 %."""
    r = verdict_oc(truth, reps=300, seed=5)
    assert r["false_strength"] <= 0.025 and r["shortcut"] <= 0.025, r
    assert r["signal"] + r["partial"] >= (0.3 if reference == "absolute" else 0.6), r
    rng = np.random.default_rng(2)
    for _ in range(40):
        y, g, h, o = draw(rng, truth)
        f = judge(y, h, g, original=(y, o, g))
        assert f.reference.startswith(reference)
        lo, hi, line = ((f.retained_lo, f.retained_hi, R_SHORTCUT) if reference == "retained"
                        else (f.ci_lo_corrected, f.ci_hi_corrected, AUROC_EFFECT))
        if f.verdict == "shortcut":
            assert lo >= line
        elif f.verdict == "partial":
            assert hi < line
        elif f.verdict == "signal":
            assert lo < line <= hi and "strength (shortcut or partial) is undetermined" in f.reason


@pytest.mark.parametrize("verdicts, line", [
    (["shortcut", "shortcut", "degenerate"],
     "SHORTCUT: 2/3 lung-hiding trials keep the signal without the lungs (1 degenerate)"),
    (["no_shortcut", "degenerate", "degenerate"], "INCONCLUSIVE: 0/3 lung-hiding trials keep the signal without "
                                                  "the lungs (1 no_shortcut, 2 degenerate)"),  # (was NO SHORTCUT)
    (["no_shortcut", "no_shortcut"], "NO SHORTCUT: 0/2 lung-hiding trials keep the signal without the lungs "
                                     "(2 no_shortcut)"),
    (["degenerate", "too_few"], "NO VERDICT: 0/2 lung-hiding trials keep the signal without the lungs "
                                "(1 too_few, 1 degenerate)"),
    (["inconclusive", "no_shortcut", "inverted"],
     "SIGNAL WITHOUT THE LUNGS: 0/3 lung-hiding trials keep the signal without the lungs (1 inverted: the signal "
     "exists without the lungs, reversed, 1 inconclusive, 1 no_shortcut)"),
    (["partial", "no_shortcut"], "SIGNAL WITHOUT THE LUNGS: 0/2 lung-hiding trials keep the signal without the "
                                 "lungs (1 partial: a weaker signal without the lungs, 1 no_shortcut)"),
    (["signal", "no_shortcut"], "SIGNAL WITHOUT THE LUNGS: 0/2 lung-hiding trials keep the signal without the "
                                "lungs (1 signal: its strength undetermined, 1 no_shortcut)"),
])
def test_the_run_ends_with_a_one_line_verdict_naming_every_kind(verdicts, line):
    answer = verdict_line(verdicts)
    assert answer.text == line == str(answer) and answer.head == line.split(":")[0]
    assert answer.tone.word in VERDICTS  # its colour comes from the verdict vocabulary, not from parsing prose


def test_minimum_patients_is_stated():
    assert MIN_PATIENTS == 5 and "< 5 test patients" in Rules().text()


def _seeds_run(tmp_path, strengths: dict[str, float], seeds=(0, 1, 2), n_patients=150, seed=0):
    """A stored run: per representation and seed one trial on the same test images (2 per patient)."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_patients), 2)
    y = (rng.random(n_patients) < 0.4)[pid]
    preds, res = [], []
    for rep, strength in strengths.items():
        for s in seeds:
            tid = f"{rep}-{s}"
            score = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 1, len(pid)))))
            preds.append(pl.DataFrame({"row": np.arange(len(pid)), "patient_id": [f"p{i}" for i in pid],
                                       "source": "a", "label": np.where(y, "CVP", "NOR"), "severity": "",
                                       "target": y.astype(int), "prob_NCV": 1 - score, "prob_CVP": score,
                                       "trial_id": tid, "split": "test"}))
            res.append({"study": "hide_seek", "representation": rep, "backbone": "resnet18", "task": "CL2",
                        "pretraining": "none", "design": "random", "seed": s, "fold": 0, "trial_id": tid,
                        "run_name": f"{rep}.resnet18.none.s{s}", "status": "finished", "init": "random",
                        "best_val_auroc": 0.9})
    pl.concat(preds).write_parquet(tmp_path / "predictions.parquet")
    pl.DataFrame(res).write_parquet(tmp_path / "results.parquet")


def test_replicates_become_one_verdict_per_cell(tmp_path):
    """Three seeds per cell: one cell verdict from the random-effects mean (hidden and original), the replicate
    verdicts listed under it, and a headline that counts cells."""
    from cxrray.analysis.analyze import run_analysis
    from cxrray.analysis.shortcut import headline

    _seeds_run(tmp_path, {"original": 3.0, "lungs_removed": 2.5, "lungs_boxed_out": 0.0})
    result = run_analysis(tmp_path, )
    cells = result.artifacts["shortcut"].tables["cell_verdicts"].sort("representation")
    trials = result.artifacts["shortcut"].tables["shortcut_findings"]
    assert cells.height == 2 and trials.height == 6 and set(cells["replicates"]) == {3}
    removed = cells.filter(pl.col("representation") == "lungs_removed").row(0, named=True)
    assert removed["verdict"] == "shortcut" and removed["reference"] == "retained fraction vs original"
    mean = trials.filter(pl.col("representation") == "lungs_removed")["auroc"].mean()
    assert removed["auroc"] == pytest.approx(mean)
    assert removed["replicate_verdicts"].count("shortcut") == 3 and "seed 0: shortcut" in removed["replicate_verdicts"]
    assert removed["level"] == pytest.approx(1 - 0.05 / 2)  # Bonferroni over the 2 cells, not the 6 trials
    assert cells.filter(pl.col("representation") == "lungs_boxed_out")["verdict"][0] in ("inconclusive",
                                                                                        "no_shortcut")
    assert headline(result.artifacts).text.startswith("SHORTCUT: 1/2 lung-hiding cells keep the signal")


def test_a_cell_of_perfect_replicates_still_has_width():
    """Three perfect replicates on 12 + 20 patients: the mean is 1.000, its interval is not [1, 1], and the exact
    permutation test of the mean AUROC decides with the interval."""
    from cxrray.analysis.shortcut import _combine

    mean, cov = _combine(np.array([[1.0], [1.0], [1.0]]), np.zeros((3, 3)))
    assert mean[0] == 1.0 and cov[0, 0] == 0.0  # the raw combination has no width ...
    y = np.repeat([True, False], [12, 20])
    g = np.arange(32)
    exact = permutation_auroc(y, np.vstack([y + r * 0.01 for r in range(3)]), g)
    assert exact.p_ge < 1e-3  # ... the cell's exact test over patients does


@pytest.mark.parametrize("n_pos, n_neg", [(6, 40), (40, 6)])
def test_a_sampled_permutation_draws_the_smaller_class_and_agrees_with_the_exact_test(n_pos, n_neg):
    """Too many permutations to enumerate (C(46, 6) = 9.4 million): each draw picks the smaller class's patients
    (9 against 60,000 drew a 2,000 x 60,009 matrix of random keys per chunk: 19 s and 2.9 GB for one p-value;
    bench/permutation.py times it). The Monte Carlo p agrees with Mann-Whitney's exact p within 4 of its
    standard errors, whichever class is the small one."""
    from scipy.stats import mannwhitneyu

    from cxrray.stats.exact import permutation_auroc

    rng = np.random.default_rng(3)
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    s = rng.normal(0, 1, len(y)) + 0.9 * y
    got = permutation_auroc(y, s, np.arange(len(y)))
    exact = mannwhitneyu(s[y], s[~y], alternative="two-sided", method="exact").pvalue
    assert not got.enumerated and got.total == 10_001
    assert abs(got.p_two - exact) <= 4 * max(got.mc_se, 1e-3), (got.p_two, exact)
    assert 0.001 < exact < 0.2  # a p-value where the comparison means something


def test_a_degenerate_original_and_nan_scores_are_said_as_such():
    """A degenerate original was described as "no original trial to compare with"; ``judge`` on NaN scores
    returned inconclusive (the pipeline flags them first, the rule says it too)."""
    rng = np.random.default_rng(5)
    y, g, h, o = draw(rng, Truth(0.7, 0.9, 60, images=1, icc=0.0))
    f = judge(y, h, g, original=(y, o, g), degenerate_original="constant scores")
    assert f.reference == "absolute (the original model is degenerate (constant scores))"
    nan = h.copy()
    nan[3] = np.nan
    bad = judge(y, nan, g)
    assert bad.verdict == "degenerate" and "1 of 60 scores are not finite" in bad.reason


@pytest.mark.parametrize("truth, m", [(Truth(0.5, 0.95, 60, images=3, icc=0.5), 1),
                                      (Truth(0.5, 0.95, 14, images=2, icc=0.8), 1),
                                      (Truth(0.56, 0.95, 300, images=1, icc=0.0, sd_pos=3.0), 3)])
def test_p_against_chance_and_the_verdict_agree_in_every_row(truth, m):
    """p_chance came from DeLong's Wald test while the verdict read the score interval: p < 0.05 sat next to a
    non-claim in up to 4 % of null sets. Now p is the score test the interval inverts (and, with few patients,
    at least the exact test's): below alpha / m exactly where the interval leaves chance."""
    rng = np.random.default_rng(9)
    for _ in range(150):
        y, g, h, o = draw(rng, truth)
        f = judge(y, h, g, m=m, original=(y, o, g), seed=1)
        leaves = f.ci_lo_corrected > 0.5 or f.ci_hi_corrected < 0.5
        assert leaves == (f.p_chance_corrected < 0.05) == (f.p_chance < 0.05 / m), f
        assert f.p_chance_corrected == pytest.approx(min(1.0, m * f.p_chance))
