"""TPR at fixed FPR with the threshold fixed on calibration non-members, and Clopper-Pearson."""

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from unlearn_audit.stats import clopper_pearson, min_calibration_size, tpr_at_fpr


def test_clopper_pearson_equals_scipy_exact():
    for n in (1, 2, 7, 30, 100, 1000):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for conf in (0.9, 0.95, 0.99):
                ref = binomtest(k, n).proportion_ci(confidence_level=conf, method="exact")
                lo, hi = clopper_pearson(k, n, alpha=1 - conf)
                assert lo == pytest.approx(ref.low, abs=1e-10)
                assert hi == pytest.approx(ref.high, abs=1e-10)
                up = binomtest(k, n, alternative="less").proportion_ci(confidence_level=conf, method="exact")
                upper = clopper_pearson(k, n, alpha=1 - conf, alternative="upper")[1]
                assert upper == pytest.approx(up.high, abs=1e-10)
                down = binomtest(k, n, alternative="greater").proportion_ci(confidence_level=conf, method="exact")
                lower = clopper_pearson(k, n, alpha=1 - conf, alternative="lower")[0]
                assert lower == pytest.approx(down.low, abs=1e-10)


def test_threshold_rule_on_known_calibration():
    calibration = np.arange(1.0, 101.0)  # 100 non-members: 1..100
    members = np.array([99.0, 99.5, 100.0, 150.0, 50.0])
    eval_non = np.array([99.0, 99.1, 10.0, 20.0])
    (res,) = tpr_at_fpr(members, eval_non, calibration, fpr_targets=(0.01,))
    assert res.resolvable
    # strict ">": the smallest threshold with at most 1 calibration score above it is 99
    assert res.threshold == 99.0 and res.calibration_fpr == 0.01
    assert res.true_positives == 3 and res.tpr == pytest.approx(3 / 5)
    assert res.false_positives == 1 and res.realised_fpr == pytest.approx(1 / 4)
    lo, hi = clopper_pearson(3, 5, 0.05)
    assert (res.tpr_ci_low, res.tpr_ci_high) == (lo, hi)


def test_threshold_uses_calibration_only_and_fpr_is_measured_on_eval():
    rng = np.random.default_rng(21)
    calibration = rng.normal(0, 1, 20_000)
    members = rng.normal(2, 1, 2000)
    eval_same = rng.normal(0, 1, 20_000)
    eval_shifted = rng.normal(1, 1, 20_000)  # eval non-members differ from calibration
    same = tpr_at_fpr(members, eval_same, calibration, fpr_targets=(0.01,))[0]
    shifted = tpr_at_fpr(members, eval_shifted, calibration, fpr_targets=(0.01,))[0]
    assert same.threshold == shifted.threshold  # eval non-members do not move the threshold
    assert same.tpr == shifted.tpr
    assert shifted.calibration_fpr <= 0.01
    assert same.realised_fpr_ci_low <= 0.01 <= same.realised_fpr_ci_high
    # P(N(1,1) > 2.326) ≈ 0.093: the realised FPR shows the calibration/eval mismatch
    assert shifted.realised_fpr == pytest.approx(0.093, abs=0.01)
    assert shifted.realised_fpr_ci_low > 0.05


@pytest.mark.parametrize("target,need", [(0.01, 100), (0.001, 1000), (0.0001, 10_000)])
def test_not_resolvable_below_ceil_inverse_fpr(target, need):
    assert min_calibration_size(target) == need
    rng = np.random.default_rng(22)
    members, eval_non = rng.normal(1, 1, 50), rng.normal(0, 1, 50)
    (short,) = tpr_at_fpr(members, eval_non, rng.normal(0, 1, need - 1), fpr_targets=(target,))
    assert not short.resolvable
    assert "not resolvable" in short.reason and str(need) in short.reason
    assert short.tpr is None and short.threshold is None and short.realised_fpr is None
    assert short.n_calibration == need - 1
    json.dumps(short.to_dict(), allow_nan=False)
    (ok,) = tpr_at_fpr(members, eval_non, rng.normal(0, 1, need), fpr_targets=(target,))
    assert ok.resolvable and ok.reason is None and ok.calibration_fpr <= target


def test_default_targets_and_order():
    rng = np.random.default_rng(23)
    out = tpr_at_fpr(rng.normal(1, 1, 100), rng.normal(0, 1, 100), rng.normal(0, 1, 1500))
    assert [r.fpr_target for r in out] == [0.01, 0.001, 0.0001]
    assert [r.resolvable for r in out] == [True, True, False]


def test_tied_calibration_scores():
    (res,) = tpr_at_fpr([1.0, 2.0], [1.0, 0.0], np.ones(200), fpr_targets=(0.01,))
    assert res.threshold == 1.0 and res.calibration_fpr == 0.0
    assert res.true_positives == 1 and res.false_positives == 0
