"""TOST equivalence of attack AUCs (labels: 1 = member / deleted, 0 = non-member)."""

import numpy as np
import pytest
from scipy.stats import norm

from unlearn_audit.stats import (
    auc_delong,
    paired_auc_difference,
    records_to_decide,
    required_sample_size_factor,
    tost_auc_equivalence,
)


def _paired_data(seed, m, n, shift_a, shift_b, noise=0.3):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(m, int), np.zeros(n, int)]
    latent = rng.normal(0, 1, m + n)
    a = latent + shift_a * labels + rng.normal(0, noise, m + n)
    b = latent + shift_b * labels + rng.normal(0, noise, m + n)
    return a, b, labels


def _check_consistency(res):
    z1, z2 = norm.ppf(1 - res.alpha), norm.ppf(1 - res.alpha / 2)
    assert res.ci_low == pytest.approx(res.difference - z1 * res.se, abs=1e-12)
    assert res.two_sided_ci_high == pytest.approx(res.difference + z2 * res.se, abs=1e-12)
    assert res.pvalue == max(res.pvalue_lower, res.pvalue_upper)
    assert (res.decision == "equivalent") == (res.pvalue < res.alpha)


def test_paired_clearly_equivalent():
    a, b, labels = _paired_data(31, 1500, 1500, 0.3, 0.3)
    res = tost_auc_equivalence(a, labels, b, margin=0.05, alpha=0.05)
    assert res.decision == "equivalent" and res.direction is None
    assert -0.05 < res.ci_low < res.ci_high < 0.05
    assert res.reference == "paired" and res.method == "tost_delong_paired"
    p = paired_auc_difference(a, b, labels)
    assert res.difference == pytest.approx(p.difference) and res.se == pytest.approx(p.se)
    assert res.auc == pytest.approx(p.auc_a) and res.reference_auc == pytest.approx(p.auc_b)
    _check_consistency(res)
    assert required_sample_size_factor(res) == 1.0


def test_paired_clearly_different_above():
    a, b, labels = _paired_data(32, 500, 500, 1.5, 0.2)  # unlearned model still leaks membership
    res = tost_auc_equivalence(a, labels, b, margin=0.05)
    assert res.decision == "different" and res.direction == "above"
    assert res.two_sided_ci_low > 0.05
    _check_consistency(res)


def test_paired_clearly_different_below_over_unlearning():
    a, b, labels = _paired_data(33, 500, 500, -1.0, 0.5)  # forget set scored far below the retrained model
    res = tost_auc_equivalence(a, labels, b, margin=0.05)
    assert res.decision == "different" and res.direction == "below"
    assert res.two_sided_ci_high < -0.05
    _check_consistency(res)


def test_constant_reference_both_directions_and_equivalent():
    rng = np.random.default_rng(34)
    n = 3000
    labels = np.r_[np.ones(n), np.zeros(n)]
    chance = rng.normal(0, 1, 2 * n)
    eq = tost_auc_equivalence(chance, labels, margin=0.05)
    assert eq.decision == "equivalent" and eq.reference == "constant" and eq.reference_auc == 0.5
    d = auc_delong(chance[:n], chance[n:])
    assert eq.se == pytest.approx(d.se) and eq.difference == pytest.approx(d.auc - 0.5)
    above = tost_auc_equivalence(chance + labels, labels, margin=0.05)
    below = tost_auc_equivalence(chance - labels, labels, margin=0.05)
    assert (above.decision, above.direction) == ("different", "above")
    assert (below.decision, below.direction) == ("different", "below")
    custom = tost_auc_equivalence(chance + labels, labels, reference_auc=0.76, margin=0.05)
    assert custom.decision == "equivalent"
    for r in (eq, above, below, custom):
        _check_consistency(r)


def test_inconclusive_and_sample_size_factor():
    a, b, labels = _paired_data(35, 15, 15, 0.5, 0.3, noise=0.8)
    res = tost_auc_equivalence(a, labels, b, margin=0.05)
    assert res.decision == "inconclusive"
    assert res.ci_low < 0.05 or res.ci_high > -0.05
    _check_consistency(res)
    factor = required_sample_size_factor(res)
    assert factor > 1.0
    assert records_to_decide(res) == int(np.ceil(factor * res.n_members))
    # With the estimate held fixed and SE / sqrt(factor), the interval just decides.
    gap = res.margin - abs(res.difference)
    z = norm.ppf(1 - res.alpha) if gap > 0 else norm.ppf(1 - res.alpha / 2)
    for scale, decides in ((1.01, True), (0.99, False)):
        half = z * res.se / np.sqrt(factor * scale)
        assert (half < abs(gap)) == decides


def test_sample_size_factor_outside_margin_branch():
    # Point estimate outside the margin but the (1-α) interval still crosses it.
    rng = np.random.default_rng(36)
    n = 40
    labels = np.r_[np.ones(n), np.zeros(n)]
    s = rng.normal(0, 1, 2 * n) + 0.45 * labels
    res = tost_auc_equivalence(s, labels, margin=0.05)
    assert res.decision == "inconclusive" and abs(res.difference) > res.margin
    factor = required_sample_size_factor(res)
    half = norm.ppf(1 - res.alpha / 2) * res.se / np.sqrt(factor)
    assert half == pytest.approx(abs(res.difference) - res.margin, rel=1e-9)


def test_argument_errors():
    a, b, labels = _paired_data(37, 10, 10, 0.5, 0.5)
    with pytest.raises(ValueError, match="reference_auc"):
        tost_auc_equivalence(a, labels, b, reference_auc=0.5, margin=0.05)
    with pytest.raises(ValueError, match="margin"):
        tost_auc_equivalence(a, labels, margin=0.0)
    with pytest.raises(ValueError, match="alpha"):
        tost_auc_equivalence(a, labels, margin=0.05, alpha=0.5)
    with pytest.raises(ValueError, match="reference_scores contains 1 NaN/inf"):
        tost_auc_equivalence(a, labels, np.r_[b[:-1], np.nan], margin=0.05)
    with pytest.raises(ValueError, match="reference_scores has length 19 but scores has length 20"):
        tost_auc_equivalence(a, labels, b[:-1], margin=0.05)
