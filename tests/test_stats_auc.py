"""AUC, DeLong intervals, the paired DeLong test and the bootstrap (labels: 1 = member, 0 = non-member)."""

import numpy as np
import pytest
from scipy.stats import norm
from statsmodels.stats.nonparametric import rank_compare_2indep

from unlearn_audit.stats import (
    auc_bootstrap,
    auc_delong,
    delong_auc_variance,
    delong_placements,
    mann_whitney_auc,
    paired_auc_difference,
)


def brute_force_auc(members, nonmembers):
    diff = np.asarray(members)[:, None] - np.asarray(nonmembers)[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def brute_force_paired(a, b, labels):
    """O(m·n) DeLong (1988) structural components, written independently of the module."""
    out = []
    for s in (a, b):
        x, y = s[labels == 1], s[labels == 0]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        out.append((psi.mean(axis=1), psi.mean(axis=0)))
    v10 = np.vstack([out[0][0], out[1][0]])
    v01 = np.vstack([out[0][1], out[1][1]])
    m, n = v10.shape[1], v01.shape[1]
    s = np.cov(v10) / m + np.cov(v01) / n
    return v10.mean(axis=1), s


# ---------------------------------------------------------------- orientation and point estimates

def test_statsmodels_orientation_prob1_is_p_x1_greater_x2():
    x1 = np.array([3.0, 4.0, 5.0])
    x2 = np.array([1.0, 2.0, 3.0])
    res = rank_compare_2indep(x1, x2, use_t=False)
    # pairs: 3>1,3>2,3=3(½),4>·×3,5>·×3 -> 8.5/9
    assert res.prob1 == pytest.approx(8.5 / 9, abs=1e-12)
    assert auc_delong(x1, x2).auc == pytest.approx(8.5 / 9, abs=1e-12)


def test_auc_matches_brute_force_with_ties():
    rng = np.random.default_rng(11)
    mem = rng.integers(0, 8, 60).astype(float)
    non = rng.integers(0, 6, 90).astype(float)
    expected = brute_force_auc(mem, non)
    assert auc_delong(mem, non).auc == pytest.approx(expected, abs=1e-12)
    assert mann_whitney_auc(mem, non) == pytest.approx(expected, abs=1e-12)
    v10, v01 = delong_placements(mem, non)
    assert v10.mean() == pytest.approx(expected, abs=1e-12)
    assert v01.mean() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_statsmodels_variance_equals_placement_variance(ties):
    rng = np.random.default_rng(12)
    for _ in range(20):
        m, n = rng.integers(2, 80, size=2)
        mem = rng.normal(0.7, 1, m)
        non = rng.normal(0, 1, n)
        if ties:
            mem, non = np.round(mem * 2), np.round(non * 2)
        res = auc_delong(mem, non, alpha=0.1)
        auc, var = delong_auc_variance(mem, non)
        assert res.auc == pytest.approx(auc, abs=1e-12)
        assert res.se ** 2 == pytest.approx(var, abs=1e-9, rel=1e-9)
        z = norm.ppf(0.95)
        assert res.ci_low == pytest.approx(max(0.0, auc - z * np.sqrt(var)), abs=1e-9)
        assert res.ci_high == pytest.approx(min(1.0, auc + z * np.sqrt(var)), abs=1e-9)


def test_label_flip_gives_one_minus_auc():
    rng = np.random.default_rng(13)
    mem, non = rng.normal(0.8, 1, 70), rng.normal(0, 1, 130)
    r = auc_delong(mem, non)
    f = auc_delong(non, mem)
    assert f.auc == pytest.approx(1 - r.auc, abs=1e-12)
    assert f.se == pytest.approx(r.se, abs=1e-12)
    assert f.ci_low == pytest.approx(1 - r.ci_high, abs=1e-12)
    assert f.ci_high == pytest.approx(1 - r.ci_low, abs=1e-12)
    assert f.n_members == 130 and f.n_nonmembers == 70


def test_interval_is_clipped_and_perfect_separation_is_flagged():
    res = auc_delong([3.0, 4.0, 5.0], [1.0, 2.0, 2.5])
    assert res.auc == 1.0 and res.se == 0.0
    assert res.ci_low == 1.0 and res.ci_high == 1.0
    assert res.notes  # degenerate interval is said out loud
    near = auc_delong([2.9, 4.0, 5.0], [1.0, 2.0, 3.0])
    assert 0.0 <= near.ci_low <= near.auc <= near.ci_high <= 1.0


def test_one_million_scores():
    rng = np.random.default_rng(14)
    mem = rng.normal(0.05, 1, 500_000)
    non = rng.normal(0, 1, 500_000)
    res = auc_delong(mem, non)
    assert np.isfinite([res.auc, res.se, res.ci_low, res.ci_high]).all()
    assert 0.0 <= res.ci_low < res.auc < res.ci_high <= 1.0
    assert res.auc == pytest.approx(norm.cdf(0.05 / np.sqrt(2)), abs=0.003)


# ---------------------------------------------------------------- coverage

def _delong_coverage(m, n, mu, sims, seed):
    rng = np.random.default_rng(seed)
    truth = norm.cdf(mu / np.sqrt(2))
    mem = rng.normal(mu, 1.0, (sims, m))
    non = rng.normal(0.0, 1.0, (sims, n))
    hits = 0
    for i in range(sims):
        r = auc_delong(mem[i], non[i])
        hits += r.ci_low <= truth <= r.ci_high
    return hits / sims


def test_delong_coverage_small_unbalanced():
    # 4000 simulations: the Monte-Carlo SE of the coverage is about 0.4 percentage points. The long-run
    # coverage of the Wald DeLong interval here is about 94.0% (40,000 simulations): slightly below
    # nominal with 50 members, as expected of a normal approximation.
    cov = _delong_coverage(50, 500, 1.0, 4000, seed=20240601)
    assert 0.93 <= cov <= 0.97, cov


def test_delong_coverage_large():
    cov = _delong_coverage(2000, 2000, 1.0, 2000, seed=20240602)
    assert 0.93 <= cov <= 0.97, cov


def test_paired_coverage_true_difference_zero():
    rng = np.random.default_rng(20240603)
    m, n, sims = 100, 300, 3000
    labels = np.r_[np.ones(m), np.zeros(n)]
    hits = 0
    for _ in range(sims):
        latent = np.r_[rng.normal(1.0, 1.0, m), rng.normal(0.0, 1.0, n)]
        a = latent + rng.normal(0.0, 0.7, m + n)  # same distribution for both scorers:
        b = latent + rng.normal(0.0, 0.7, m + n)  # the true AUC difference is exactly 0
        r = paired_auc_difference(a, b, labels)
        hits += r.ci_low <= 0.0 <= r.ci_high
    cov = hits / sims
    assert 0.93 <= cov <= 0.97, cov


# ---------------------------------------------------------------- paired test

def test_paired_matches_brute_force_structural_components():
    rng = np.random.default_rng(15)
    m, n = 40, 70
    labels = np.r_[np.ones(m, int), np.zeros(n, int)]
    rng.shuffle(labels)
    latent = rng.normal(0, 1, m + n) + 0.8 * labels
    a = np.round(latent + rng.normal(0, 0.5, m + n), 1)  # rounding makes ties
    b = np.round(latent + rng.normal(0, 0.5, m + n), 1)
    aucs, s = brute_force_paired(a, b, labels)
    res = paired_auc_difference(a, b, labels, alpha=0.05)
    assert res.auc_a == pytest.approx(aucs[0], abs=1e-12)
    assert res.auc_b == pytest.approx(aucs[1], abs=1e-12)
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    assert res.se == pytest.approx(np.sqrt(var), abs=1e-12)
    assert res.se_a == pytest.approx(np.sqrt(s[0, 0]), abs=1e-12)
    assert res.correlation == pytest.approx(s[0, 1] / np.sqrt(s[0, 0] * s[1, 1]), abs=1e-12)
    z = norm.ppf(0.975)
    assert res.ci_low == pytest.approx(res.difference - z * res.se, abs=1e-12)
    assert res.pvalue == pytest.approx(2 * norm.sf(abs(res.difference) / res.se), abs=1e-12)
    # each single-scorer variance equals the unpaired DeLong variance
    assert res.se_a == pytest.approx(auc_delong(a[labels == 1], a[labels == 0]).se, abs=1e-12)


def test_paired_se_much_smaller_than_unpaired_and_detects_difference():
    rng = np.random.default_rng(16)
    m = n = 400
    labels = np.r_[np.ones(m), np.zeros(n)]
    latent = np.r_[rng.normal(1.0, 1.0, m), rng.normal(0.0, 1.0, n)]
    a = latent + rng.normal(0, 0.2, m + n)
    b = 0.8 * latent + rng.normal(0, 0.6, m + n)  # strictly noisier: lower AUC
    res = paired_auc_difference(a, b, labels)
    unpaired = np.hypot(res.se_a, res.se_b)
    assert res.se < 0.6 * unpaired
    assert res.difference > 0 and res.pvalue < 0.01 and res.ci_low > 0


def test_paired_identical_scores():
    rng = np.random.default_rng(17)
    s = rng.normal(0, 1, 50)
    labels = np.r_[np.ones(20), np.zeros(30)]
    res = paired_auc_difference(s, s, labels)
    assert res.difference == 0.0 and res.se == 0.0
    assert res.pvalue == 1.0 and res.statistic is None and res.notes


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_reproducible_and_close_to_delong():
    rng = np.random.default_rng(18)
    mem, non = rng.normal(1, 1, 300), rng.normal(0, 1, 500)
    b1 = auc_bootstrap(mem, non, n_boot=1000, seed=3)
    b2 = auc_bootstrap(mem, non, n_boot=1000, seed=3)
    assert b1 == b2
    d = auc_delong(mem, non)
    assert b1.auc == pytest.approx(d.auc, abs=1e-12)
    assert b1.ci_low <= b1.auc <= b1.ci_high
    assert b1.se == pytest.approx(d.se, rel=0.15)
    assert b1.ci_low == pytest.approx(d.ci_low, abs=0.015)
    assert b1.ci_high == pytest.approx(d.ci_high, abs=0.015)
    assert b1.method == "stratified_bootstrap_percentile" and b1.n_boot == 1000 and b1.seed == 3


def test_bootstrap_is_stratified():
    # With 1 member a non-stratified bootstrap would often draw no member at all.
    res = auc_bootstrap([2.0], [0.0, 1.0, 3.0], n_boot=200, seed=0)
    assert res.auc == pytest.approx(2 / 3)
    assert res.n_members == 1 and res.n_nonmembers == 3
    assert 0.0 <= res.ci_low <= res.ci_high <= 1.0
