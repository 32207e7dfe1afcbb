"""Empirical lower bound on ε from a membership attack (Jagielski, Ullman & Oprea, NeurIPS 2020).

Label convention everywhere: 1 = member (or deleted record), 0 = non-member; a higher score means
"more likely a member". A record is flagged as a member when ``score > threshold``.

If a mechanism is (ε, δ)-DP (or (ε, δ)-certified-unlearned), every test that tells its two output
distributions apart satisfies FNR + e^ε FPR >= 1 - δ and FPR + e^ε FNR >= 1 - δ, hence
ε >= max(ln((1 - δ - FPR)/FNR), ln((1 - δ - FNR)/FPR)). Plugging in Clopper-Pearson upper bounds
FPR⁺, FNR⁺ gives a bound that holds with confidence 1 - alpha. The threshold must be fixed
before seeing these scores (pre-registered); a threshold tuned on them invalidates the bound.
"""

from __future__ import annotations

import math

import numpy as np

from .proportion import clopper_pearson
from .results import CertificationCheck, EpsilonLowerBoundResult
from .validation import as_scores, check_alpha, check_probability

__all__ = ["empirical_epsilon_lower_bound", "check_against_certified"]


def _log_ratio(numerator: float, denominator: float) -> float:
    # denominator is a Clopper-Pearson upper bound, hence > 0; a non-positive numerator gives no bound.
    if numerator <= 0:
        return -math.inf
    return math.log(numerator / denominator)


def empirical_epsilon_lower_bound(member_scores, nonmember_scores, threshold: float, delta: float,
                                  alpha: float = 0.05) -> EpsilonLowerBoundResult:
    """ε lower bound at a pre-registered threshold, valid with confidence 1 - alpha.

    Parameters
    ----------
    member_scores : attack scores of members (label 1), e.g. records the model was trained on or
        that were deleted; higher = more likely a member.
    nonmember_scores : attack scores of non-members (label 0).
    threshold : pre-registered threshold; a record is flagged as a member when ``score > threshold``.
    delta : the δ of the (ε, δ) guarantee being audited, in [0, 1).
    alpha : overall level. FPR⁺ and FNR⁺ are one-sided Clopper-Pearson upper bounds at level
        alpha/2 each (Bonferroni), so both hold jointly with probability >= 1 - alpha. This equals
        the upper end of the two-sided (1 - alpha) Clopper-Pearson interval, as in Jagielski et al.'s code.

    ε_LB = max(ln((1 - δ - FPR⁺)/FNR⁺), ln((1 - δ - FNR⁺)/FPR⁺), 0). A Clopper-Pearson upper bound is
    never 0, so the bound is finite even for a perfectly separating attack.
    """
    members = as_scores(member_scores, "member_scores")
    nonmembers = as_scores(nonmember_scores, "nonmember_scores")
    threshold = check_probability(threshold, "threshold", low=-math.inf, high=math.inf)
    delta = check_probability(delta, "delta", low_inclusive=True)
    alpha = check_alpha(alpha)
    m, n = int(members.size), int(nonmembers.size)
    fp = int(np.count_nonzero(nonmembers > threshold))
    fn = int(np.count_nonzero(members <= threshold))
    per_bound = alpha / 2.0
    fpr_upper = clopper_pearson(fp, n, per_bound, alternative="upper")[1]
    fnr_upper = clopper_pearson(fn, m, per_bound, alternative="upper")[1]
    via_fnr = _log_ratio(1.0 - delta - fpr_upper, fnr_upper)
    via_fpr = _log_ratio(1.0 - delta - fnr_upper, fpr_upper)
    eps = max(via_fnr, via_fpr, 0.0)
    if eps == 0.0:
        term = "zero"
    else:
        term = "fnr" if via_fnr >= via_fpr else "fpr"
    return EpsilonLowerBoundResult(
        epsilon_lower_bound=float(eps), binding_term=term, threshold=threshold, delta=delta, alpha=alpha,
        per_bound_alpha=per_bound, false_positives=fp, false_negatives=fn, n_members=m, n_nonmembers=n,
        fpr=fp / n, fnr=fn / m, fpr_upper=float(fpr_upper), fnr_upper=float(fnr_upper),
    )


def check_against_certified(eps_lb_result: EpsilonLowerBoundResult, certified_epsilon: float,
                            certified_delta: float | None = None) -> CertificationCheck:
    """Compare an empirical ε lower bound with the certified ε of the same release.

    ``violated`` is True when the lower bound exceeds the certified ε: the certificate cannot hold,
    which indicates an implementation bug (or a threshold that was not pre-registered). If
    ``certified_delta`` is given, the lower bound must have been computed with a δ at least as
    large (a larger δ only lowers the bound), otherwise the comparison is refused.
    """
    if not isinstance(eps_lb_result, EpsilonLowerBoundResult):
        raise ValueError("eps_lb_result must be an EpsilonLowerBoundResult")
    certified_epsilon = check_probability(certified_epsilon, "certified_epsilon", low=0.0, high=math.inf,
                                          low_inclusive=True)
    if certified_delta is not None:
        certified_delta = check_probability(certified_delta, "certified_delta", low_inclusive=True)
        if eps_lb_result.delta < certified_delta:
            raise ValueError(f"certified_delta {certified_delta:g} exceeds the δ {eps_lb_result.delta:g} used for "
                             "the lower bound; recompute the bound with the certified δ")
    lb = eps_lb_result.epsilon_lower_bound
    violated = lb > certified_epsilon
    if violated:
        message = (f"empirical lower bound {lb:.4g} exceeds certified ε {certified_epsilon:.4g}: "
                   "this indicates an implementation bug")
    else:
        message = (f"empirical lower bound {lb:.4g} does not exceed certified ε {certified_epsilon:.4g}: "
                   "consistent with the certificate")
    return CertificationCheck(violated=bool(violated), epsilon_lower_bound=lb, certified_epsilon=certified_epsilon,
                              delta=eps_lb_result.delta, certified_delta=certified_delta, message=message)
