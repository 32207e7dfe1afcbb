"""verdict.decide: every branch, degenerate evidence included (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from unlearn_audit.audit.verdict import EXIT_CODES, ModelFit, ReleaseEvidence, decide
from unlearn_audit.stats.per_example import NullComparison, compare_to_null, per_example_evidence

ALPHA, MARGIN = 0.05, 0.05


def comparison(diff: float, spread: float, degenerate: str | None = None) -> NullComparison:
    """A comparison whose bootstrap is centred on ``diff`` with standard deviation ``spread``."""
    boot = diff + spread * np.random.default_rng(0).standard_normal(4000)
    return NullComparison(method_advantage=0.1 + diff, null_advantage=0.1, difference=diff, bootstrap=boot,
                          n_method=32, n_null=32, n_reference=32, n_records=50, degenerate=degenerate)


EQUIV, WIDE, DIFF = comparison(0.0, 0.01), comparison(0.0, 0.2), comparison(0.6, 0.02)
BELOW = comparison(-0.3, 0.02)


def release(**kw) -> ReleaseEvidence:
    base = dict(certified_epsilon=1.0, sigma=0.1, epsilon_lower_bound={"confidence": 0.3}, accuracy_noiseless=0.9,
                accuracy_released=0.89, chance_accuracy=0.1)
    return ReleaseEvidence(**{**base, **kw})


def run(method, control, rel=None):
    return decide("m", {"confidence": method}, {"confidence": control}, rel, alpha=ALPHA, margin=MARGIN,
                  max_accuracy_loss=0.02, n_pairs=32, n_records=50)


def test_pass_needs_equivalence_and_power():
    v = run(EQUIV, DIFF)
    assert v.status == "pass" and v.exit_code == 0 and v.failed == []
    assert v.forgetting.status == "pass" and v.release.status == "not applicable"


def test_a_model_that_learnt_nothing_never_passes_forgetting():
    """A model that learnt nothing (the MLP's weights collapsed under λ = 0.15 on digits: training accuracy 0.10,
    cross-entropy ln 10) is trivially indistinguishable from its retrain: inconclusive with the reason, never a pass;
    a trace found on it still fails; a model that fits passes as before."""
    h10 = float(np.log(10))

    def with_fit(method, fit):
        return decide("m", {"confidence": method}, {"confidence": DIFF}, None, alpha=ALPHA, margin=MARGIN,
                      max_accuracy_loss=0.02, n_pairs=32, n_records=50, fit=fit)

    collapsed = ModelFit(0.102, 0.102, 2.303, h10)
    v = with_fit(EQUIV, collapsed)
    assert v.status == "inconclusive" and v.forgetting.status == "inconclusive"
    assert "learnt nothing" in v.forgetting.reasons[0] and "training.lam" in v.forgetting.reasons[0]
    assert with_fit(DIFF, collapsed).status == "fail"
    assert with_fit(EQUIV, ModelFit(0.86, 0.102, 2.08, h10)).status == "pass"     # the default softmax (λ = 0.15)
    # imbalanced classes (99% majority): a useful model fits on cross-entropy although its accuracy is the majority
    # share; a model that memorised its records fits (it has the most to forget)
    h = -(0.99 * np.log(0.99) + 0.01 * np.log(0.01))
    assert ModelFit(0.99, 0.99, 0.03, h).fits and ModelFit(1.0, 0.102, 1e-4, h10).fits
    assert not ModelFit(0.99, 0.99, 0.055, h).fits


def test_no_power_is_inconclusive_never_pass():
    v = run(EQUIV, EQUIV)
    assert v.status == "inconclusive" and v.exit_code == 3
    assert any("no power" in r for r in v.forgetting.reasons)


def test_residual_trace_fails_forgetting():
    v = run(DIFF, DIFF)
    assert v.status == "fail" and v.exit_code == 1 and v.failed == ["forgetting"]


def test_over_unlearning_below_the_null_fails_too():
    assert run(BELOW, DIFF).status == "fail"


def test_wide_interval_is_inconclusive():
    v = run(WIDE, DIFF)
    assert v.status == "inconclusive" and any("more pairs" in r for r in v.forgetting.reasons)


@pytest.mark.parametrize("why", ["zero spread", "the same models twice"])
def test_degenerate_evidence_never_decides(why):
    """Even a comparison whose numbers look like a perfect equivalence decides nothing when it is degenerate; and a
    degenerate control gives no power."""
    degenerate = comparison(0.0, 0.0, degenerate=why)
    assert run(degenerate, DIFF).status == "inconclusive"
    assert run(EQUIV, comparison(0.6, 0.02, degenerate=why)).status == "inconclusive"


def test_release_pass_and_each_failure():
    assert run(EQUIV, DIFF, release()).status == "pass"
    v = run(EQUIV, DIFF, release(epsilon_lower_bound={"confidence": 1.4}))
    assert v.status == "fail" and v.failed == ["release"] and "IMPLEMENTATION FAILURE" in v.release.reasons[0]
    v = run(EQUIV, DIFF, release(accuracy_released=0.8))
    assert v.status == "fail" and "privacy.max_accuracy_loss" in v.release.reasons[0]
    v = run(EQUIV, DIFF, release(accuracy_released=0.11))
    assert v.status == "fail" and "vacuous certificate" in v.release.reasons[0]
    v = run(EQUIV, DIFF, release(epsilon_lower_bound=None, accuracy_released=None, sigma=float("inf")))
    assert v.status == "fail" and "vacuous certificate" in v.release.reasons[0]
    v = run(EQUIV, DIFF, release(weight_space_violated=True, weight_space_message="lower bound 3 > 1"))
    assert v.status == "fail" and "lower bound 3 > 1" in v.release.reasons[-1]


def test_both_questions_fail_and_are_named():
    v = run(DIFF, DIFF, release(accuracy_released=0.1))
    assert v.failed == ["forgetting", "release"] and v.to_dict()["failed_questions"] == v.failed
    assert set(EXIT_CODES) == {"pass", "fail", "inconclusive"}


def test_identical_signals_are_degenerate_in_the_statistics():
    """The statistics layer itself marks shared models and zero spread as degenerate (so the verdict cannot be fed
    a standard error of 0)."""
    rng = np.random.default_rng(1)
    ref, null = rng.normal(size=(16, 20)), rng.normal(size=(16, 20))
    assert compare_to_null(ref.copy(), null, ref, n_bootstrap=200).degenerate
    assert compare_to_null(null.copy(), null, ref, n_bootstrap=200).degenerate
    flat = np.ones((16, 20))
    assert "zero spread" in compare_to_null(flat, null, ref, n_bootstrap=200).degenerate


def test_per_example_epsilon_detects_a_shift_and_not_noise():
    """Per-record ε lower bounds: 0 for two samples of the same distribution at the per-record level α; large for a
    clear shift, and never above what N models per side can resolve."""
    rng = np.random.default_rng(2)
    same = per_example_evidence(rng.normal(size=(64, 200)), rng.normal(size=(64, 200)))
    assert same.flagged_fraction <= 0.05 and abs(same.ulira_pooled_auc - 0.5) < 0.03
    shifted = per_example_evidence(rng.normal(3.0, 1.0, size=(64, 20)), rng.normal(size=(64, 20)))
    assert shifted.flagged_fraction == 1.0 and shifted.ulira_pooled_auc > 0.95
    assert shifted.epsilon_lower_bound.max() < np.log(32)       # 32 evaluation models per side
    assert shifted.forgetting_score < same.forgetting_score
