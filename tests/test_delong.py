import numpy as np
import polars as pl
import pytest
from conftest import ASAH

from cxrray.stats.delong import auroc_ci, auroc_cov, naive_auroc_var, paired_test, unpaired_test


@pytest.mark.parametrize("seed", range(5))
def test_fast_delong_matches_naive(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    y = rng.random(n) < rng.uniform(0.2, 0.8)
    y[:2] = [True, False]
    score = y * rng.normal(0.8, 1, n) + rng.normal(0, 1, n)
    score = np.round(score, 1)  # plenty of ties
    auc_naive, var_naive = naive_auroc_var(y, score)
    aucs, cov = auroc_cov(y, score)
    assert aucs[0] == pytest.approx(auc_naive, abs=1e-12)
    assert cov[0, 0] == pytest.approx(var_naive, rel=1e-10)


def test_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.3
    s = rng.normal(size=300) + y
    assert auroc_ci(y, s).auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.fixture(scope="module")
def asah():
    d = pl.read_csv(ASAH)
    y = (d["outcome"] == "Poor").to_numpy()
    return y, {c: d[c].cast(pl.Float64).to_numpy() for c in ("wfns", "ndka", "s100b")}


def test_matches_pROC_auc_ci_and_variances(asah):
    y, s = asah
    ci = auroc_ci(y, s["ndka"])
    assert (ci.auc, ci.lo, ci.hi) == pytest.approx((0.611957994579946, 0.501244999271703, 0.722670989888189),
                                                   abs=1e-9)
    for name, var in (("wfns", 0.00146991470882363), ("ndka", 0.0031908105493913), ("s100b", 0.00266868245717244)):
        assert auroc_ci(y, s[name]).var == pytest.approx(var, rel=1e-9)


@pytest.mark.parametrize("a,b,z,p,lo,hi", [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
])
def test_matches_pROC_paired(asah, a, b, z, p, lo, hi):
    y, s = asah
    t = paired_test(y, s[a], s[b])
    assert (t.stat, t.p, t.diff_lo, t.diff_hi) == pytest.approx((z, p, lo, hi), rel=1e-8)


@pytest.mark.parametrize("a,b,d,p", [
    ("wfns", "s100b", 1.43490640926908, 0.152825378808796),
    ("wfns", "ndka", 3.10125096778969, 0.00220950791756457),
    ("ndka", "s100b", -1.55995743389685, 0.120192832430845),
])
def test_matches_pROC_unpaired(asah, a, b, d, p):
    y, s = asah
    t = unpaired_test(y, s[a], y, s[b])
    assert (t.stat, t.p) == pytest.approx((d, p), rel=1e-8)


def test_degenerate_labels_are_refused():
    with pytest.raises(ValueError, match="both positive and negative"):
        auroc_ci(np.ones(5, bool), np.arange(5.0))


def test_unpaired_test_without_spread_does_not_divide_by_zero():
    from cxrray.stats.delong import unpaired_test

    y = np.array([0, 0, 1, 1])
    perfect = np.array([0.1, 0.2, 0.8, 0.9])
    t = unpaired_test(y, perfect, y, perfect)
    assert (t.auc1, t.auc2, t.p) == (1.0, 1.0, 1.0)


def _clustered_sample(rng, n_patients=150, effect=1.0, patient_sd=1.5):
    """Patients with 1-3 images sharing the patient's label and a strong patient effect on the score."""
    sizes = rng.integers(1, 4, n_patients)
    label = rng.random(n_patients) < 0.4
    patient = np.repeat(np.arange(n_patients), sizes)
    shift = np.repeat(rng.normal(0, patient_sd, n_patients) + effect * label, sizes)
    return np.repeat(label, sizes), shift + rng.normal(0, 0.5, len(patient)), patient


def test_clustered_delong_equals_plain_delong_with_one_image_per_patient():
    rng = np.random.default_rng(3)
    y = rng.random(120) < 0.35
    s = np.vstack([y + rng.normal(0, 1, 120), 0.5 * y + rng.normal(0, 1, 120)])
    a_plain, cov_plain = auroc_cov(y, s)
    a_clust, cov_clust = auroc_cov(y, s, groups=np.arange(120) + 1000)
    assert np.allclose(a_plain, a_clust, atol=1e-15)
    assert np.allclose(cov_clust, cov_plain, rtol=1e-12, atol=1e-15)
    from cxrray.stats.delong import _clustered_cov, placements

    aucs, v01, v10 = placements(y, s)  # the clustered formula itself, forced on singleton clusters
    assert np.allclose(_clustered_cov(y, np.arange(120), aucs, v01, v10), cov_plain, rtol=1e-12, atol=1e-15)


def test_clustered_delong_matches_a_patient_level_bootstrap():
    """Several correlated images per patient: the clustered SE is within sampling error of a patient-level
    bootstrap, while plain DeLong (images as independent) is too narrow."""
    rng = np.random.default_rng(7)
    y, s, patient = _clustered_sample(rng)
    plain, clustered = auroc_ci(y, s), auroc_ci(y, s, groups=patient)
    assert plain.auc == clustered.auc
    ids = np.unique(patient)
    members = [np.flatnonzero(patient == p) for p in ids]
    boot = []
    for _ in range(1000):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
        if y[idx].all() or not y[idx].any():
            continue
        boot.append(auroc_cov(y[idx], s[idx])[0][0])
    se_boot = float(np.std(boot, ddof=1))
    assert 0.85 < np.sqrt(clustered.var) / se_boot < 1.15, (np.sqrt(clustered.var), se_boot)
    assert np.sqrt(plain.var) / se_boot < 0.85  # what treating images as independent would claim


def test_degenerate_variances_are_said_not_hidden():
    """Zero spread in a paired difference: not p = 0 (the old answer for 2 + 3 images) but the exact permutation
    test over patients: swapping the two models' scores per patient (2^5 relabellings; two of them, none and the
    0.3/0.7 negative, keep the difference at 1), p = 2 x 2/32; equal
    models p 1; the unpaired test likewise over whole patients (C(10, 5) reassignments);
    a single positive case: the variance cannot be estimated, so the CI is NaN, not [0, 1]."""
    y = np.array([1, 1, 0, 0, 0], bool)
    perfect, inverted = np.array([0.9, 0.8, 0.1, 0.2, 0.3]), np.array([0.1, 0.2, 0.9, 0.8, 0.7])
    assert paired_test(y, perfect, inverted).p == pytest.approx(4 / 32) and paired_test(y, perfect, perfect).p == 1.0
    unpaired = unpaired_test(y, perfect, y, inverted).p
    assert 0.05 < unpaired < 1.0
    one = auroc_ci(np.array([1, 0, 0, 0], bool), np.array([0.9, 0.1, 0.2, 0.3]))
    assert one.auc == 1.0 and np.isnan(one.var) and np.isnan(one.lo) and np.isnan(one.hi)


@pytest.mark.parametrize("sd_pos, mean_pos", [(3.0, 0.0), (3.0, 1.0), (1.0, 0.0)])
def test_the_interval_is_never_narrower_than_delongs_own_under_unequal_spreads(sd_pos, mean_pos):
    """One image per patient, the classes' score spreads 3:1 (the usual case for a model's scores): the design
    effect used to be capped at 1, which put Hanley-McNeil's variance in place of DeLong's larger one; coverage
    was 92.9 % at AUROC 0.5 and 92.0 % at 0.62 (2,000 sets of 100 patients), 7 % of null sets claimed a
    signal. Known truth, 800 test sets each: coverage 93-97 %, claims of a signal at chance <= 5 % (both sides)."""
    from scipy.stats import norm

    from cxrray.stats.interval import auroc_interval

    rng = np.random.default_rng(11)
    true = norm.cdf(mean_pos / np.sqrt(1 + sd_pos**2))
    covered = claims = 0
    reps = 800
    for _ in range(reps):
        y = rng.random(100) < 0.5
        s = np.where(y, rng.normal(mean_pos, sd_pos, 100), rng.normal(0, 1, 100))
        iv = auroc_interval(y, s, np.arange(100))
        covered += iv.lo <= true <= iv.hi
        claims += (iv.lo > 0.5 or iv.hi < 0.5) and true == 0.5
    assert 0.93 <= covered / reps <= 0.97
    assert claims / reps <= 0.05
    iv = auroc_interval(y, s, np.arange(100))  # never below DeLong's own variance
    _, cov = auroc_cov(y, s[None, :])
    assert ((iv.hi - iv.lo) / 2 / 1.96) ** 2 >= 0.9 * cov[0, 0]


@pytest.mark.parametrize("cluster, mixed, low, high", [("neg", 0.0, 0.93, 0.975), ("both", 0.5, 0.93, 0.975)])
def test_one_class_clustering_and_patients_with_both_labels_cost_only_their_own_width(cluster, mixed, low, high):
    """Only the negatives cluster (4 images at ICC 0.8, one image per positive): their design effect used to
    widen both classes' terms, coverage 99 %. Patients holding both labels: the cross term (negative when a
    patient's images share a level) was ignored, 96-99 %. Known truth, 500 test sets of 100 patients at AUROC
    0.5: coverage 93-97.5 %, claims of a signal <= 5 % within Monte Carlo error."""
    from cxrray.stats.interval import auroc_interval
    from cxrray.verdicts.simulate import Truth, draw

    rng = np.random.default_rng(3)
    truth = Truth(0.5, 0.95, 100, images=4, icc=0.8, cluster=cluster, mixed=mixed)
    covered = 0
    for _ in range(500):
        y, g, h, _ = draw(rng, truth)
        iv = auroc_interval(y, h, g)
        covered += iv.lo <= 0.5 <= iv.hi
    assert low <= covered / 500 <= high


def test_without_patients_the_interval_is_delongs_own_per_case():
    """``groups=None`` used to return a design effect of 1 whatever the spreads: Hanley-McNeil's variance in
    place of DeLong's larger one. Now it is the interval of one image per patient, never below DeLong's own."""
    from cxrray.stats.interval import auroc_interval, variance_model

    rng = np.random.default_rng(4)
    y = rng.random(120) < 0.5
    s = np.where(y, rng.normal(0, 3, 120), rng.normal(0, 1, 120))
    none, each = auroc_interval(y, s), auroc_interval(y, s, np.arange(120))
    assert (none.lo, none.hi, none.deff) == (each.lo, each.hi, each.deff) and none.deff > 1.2
    _, cov = auroc_cov(y, s[None, :])
    model, auc, _ = variance_model(y, s, None)
    assert model(np.asarray(auc)) == pytest.approx(cov[0, 0]) and model.scale > 1.2  # DeLong's own at the estimate
    assert ((none.hi - none.lo) / 2 / 1.96) ** 2 >= 0.9 * cov[0, 0]  # (a score interval: V(theta) at its ends)
