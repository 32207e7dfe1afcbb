"""Empirical ε lower bounds (Jagielski et al. 2020); labels: 1 = member, 0 = non-member."""

import math

import numpy as np
import pytest

from unlearn_audit.stats import check_against_certified, empirical_epsilon_lower_bound


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_perfect_attack_matches_hand_formula(n):
    delta, alpha = 1e-5, 0.05
    res = empirical_epsilon_lower_bound(np.ones(n), np.zeros(n), threshold=0.5, delta=delta, alpha=alpha)
    # 0 errors: one-sided CP upper bound at level alpha/2 is 1 - (alpha/2)^(1/n)
    u = 1 - (alpha / 2) ** (1 / n)
    expected = math.log((1 - delta - u) / u)
    assert math.isfinite(res.epsilon_lower_bound)
    assert res.epsilon_lower_bound == pytest.approx(expected, rel=1e-9)
    assert res.fpr_upper == pytest.approx(u, rel=1e-9) and res.fnr_upper == pytest.approx(u, rel=1e-9)
    assert res.false_positives == 0 and res.false_negatives == 0
    assert res.per_bound_alpha == alpha / 2


def test_random_attack_gives_about_zero():
    rng = np.random.default_rng(41)
    res = empirical_epsilon_lower_bound(rng.normal(0, 1, 5000), rng.normal(0, 1, 5000), threshold=0.0, delta=1e-5)
    assert 0.0 <= res.epsilon_lower_bound <= 0.05
    assert res.fpr == pytest.approx(0.5, abs=0.03) and res.fnr == pytest.approx(0.5, abs=0.03)


def test_threshold_is_strict_and_delta_lowers_bound():
    mem = np.array([1.0, 2.0, 3.0, 4.0])
    non = np.array([0.0, 1.0, 1.0, 0.5])
    res = empirical_epsilon_lower_bound(mem, non, threshold=1.0, delta=0.0)
    assert res.false_negatives == 1 and res.false_positives == 0  # score == threshold is not flagged
    rng = np.random.default_rng(42)
    mem, non = rng.normal(2, 1, 2000), rng.normal(0, 1, 2000)
    small = empirical_epsilon_lower_bound(mem, non, 1.0, delta=1e-5)
    big = empirical_epsilon_lower_bound(mem, non, 1.0, delta=0.1)
    assert big.epsilon_lower_bound < small.epsilon_lower_bound
    # hand formula for a non-degenerate case
    from unlearn_audit.stats import clopper_pearson
    fpr_u = clopper_pearson(small.false_positives, 2000, 0.025, alternative="upper")[1]
    fnr_u = clopper_pearson(small.false_negatives, 2000, 0.025, alternative="upper")[1]
    expected = max(math.log((1 - 1e-5 - fpr_u) / fnr_u), math.log((1 - 1e-5 - fnr_u) / fpr_u), 0)
    assert small.epsilon_lower_bound == pytest.approx(expected, rel=1e-12)


def test_check_against_certified():
    res = empirical_epsilon_lower_bound(np.ones(1000), np.zeros(1000), threshold=0.5, delta=1e-5)
    bad = check_against_certified(res, certified_epsilon=1.0)
    assert bad.violated
    assert "exceeds certified" in bad.message and "implementation bug" in bad.message
    good = check_against_certified(res, certified_epsilon=10.0, certified_delta=1e-5)
    assert not good.violated and "implementation bug" not in good.message
    with pytest.raises(ValueError, match="certified_delta"):
        check_against_certified(res, certified_epsilon=10.0, certified_delta=1e-3)
    with pytest.raises(ValueError, match="certified_epsilon"):
        check_against_certified(res, certified_epsilon=-1.0)


def test_argument_errors():
    with pytest.raises(ValueError, match="delta"):
        empirical_epsilon_lower_bound([1.0], [0.0], threshold=0.5, delta=1.0)
    with pytest.raises(ValueError, match="threshold"):
        empirical_epsilon_lower_bound([1.0], [0.0], threshold=float("nan"), delta=1e-5)
    with pytest.raises(ValueError, match="nonmember_scores"):
        empirical_epsilon_lower_bound([1.0], [], threshold=0.5, delta=1e-5)
