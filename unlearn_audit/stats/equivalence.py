"""Equivalence test (TOST) that the unlearned model's attack AUC is within ±margin of a reference.

Label convention everywhere: 1 = member (or deleted record), 0 = non-member; a higher score means
"more likely a member".

Two references:

* paired: the retrained model's attack AUC on the *same* records (the DeLong 1988 paired
  difference, :func:`unlearn_audit.stats.paired_auc_difference`);
* a constant, by default 0.5 (chance), using the DeLong standard error of the single AUC.

The decision is three-way. ``"equivalent"``: the (1 - 2α) interval of the difference lies inside
(-m, m) (both one-sided p-values < α). ``"different"``: the (1 - α) two-sided interval lies entirely
outside [-m, m]; this also catches over-unlearning, an AUC far *below* the reference.
``"inconclusive"``: neither; more records would decide (:func:`required_sample_size_factor`).
"""

from __future__ import annotations

import math

from scipy import stats

from .auc import auc_delong, paired_auc_difference
from .results import EquivalenceResult
from .validation import as_labels, as_scores, check_alpha, check_probability, check_same_length, split_by_labels

__all__ = ["tost_auc_equivalence", "required_sample_size_factor", "records_to_decide"]


def _pvalues(diff: float, se: float, margin: float) -> tuple[float, float]:
    """p-values of H0: diff <= -margin and of H0: diff >= +margin (normal approximation)."""
    if se > 0:
        p_lower = float(stats.norm.sf((diff + margin) / se))
        p_upper = float(stats.norm.cdf((diff - margin) / se))
    else:
        p_lower = 0.0 if diff > -margin else 1.0
        p_upper = 0.0 if diff < margin else 1.0
    return p_lower, p_upper


def _decide(*, auc, reference_auc, diff, se, margin, alpha, reference, method, n_members, n_nonmembers,
            notes=()) -> EquivalenceResult:
    z1 = float(stats.norm.ppf(1.0 - alpha))
    z2 = float(stats.norm.ppf(1.0 - alpha / 2.0))
    lo, hi = diff - z1 * se, diff + z1 * se
    lo2, hi2 = diff - z2 * se, diff + z2 * se
    if lo > -margin and hi < margin:
        decision = "equivalent"
    elif lo2 > margin or hi2 < -margin:
        decision = "different"
    else:
        decision = "inconclusive"
    direction = None
    if decision != "equivalent" and diff != 0:
        direction = "above" if diff > 0 else "below"
    p_lower, p_upper = _pvalues(diff, se, margin)
    return EquivalenceResult(
        reference=reference, auc=float(auc), reference_auc=float(reference_auc), difference=float(diff),
        se=float(se), ci_low=float(lo), ci_high=float(hi), two_sided_ci_low=float(lo2),
        two_sided_ci_high=float(hi2), pvalue_lower=p_lower, pvalue_upper=p_upper,
        pvalue=max(p_lower, p_upper), margin=margin, alpha=alpha, decision=decision, direction=direction,
        n_members=int(n_members), n_nonmembers=int(n_nonmembers), method=method, notes=tuple(notes),
    )


def tost_auc_equivalence(scores, labels, reference_scores=None, *, reference_auc: float | None = None,
                         margin: float, alpha: float = 0.05) -> EquivalenceResult:
    """TOST that the attack AUC of ``scores`` is within ±``margin`` of a reference.

    Parameters
    ----------
    scores : attack scores on the unlearned model, one per record; higher = more likely a member.
    labels : 0/1 per record, 1 = member (deleted / forget record), 0 = non-member.
    reference_scores : attack scores on the retrained model for the *same* records, in the same
        order. When given, the test is paired (DeLong 1988) and ``difference = auc - auc_retrained``.
    reference_auc : a constant reference AUC (default 0.5) when ``reference_scores`` is not given.
    margin : equivalence margin m in (0, 1).
    alpha : level of each one-sided test, in (0, 0.5).

    Returns an :class:`EquivalenceResult` (see its docstring for the decision rule).
    """
    x = as_scores(scores, "scores")
    y = as_labels(labels, "labels", length=x.size, length_of="scores", min_per_class=2)
    margin = check_probability(margin, "margin")
    alpha = check_alpha(alpha, high=0.5)
    if reference_scores is not None:
        if reference_auc is not None:
            raise ValueError("reference_auc must not be given together with reference_scores")
        ref = as_scores(reference_scores, "reference_scores")
        check_same_length(x, ref, "scores", "reference_scores")
        res = paired_auc_difference(x, ref, y, alpha=2.0 * alpha)
        return _decide(auc=res.auc_a, reference_auc=res.auc_b, diff=res.difference, se=res.se, margin=margin,
                       alpha=alpha, reference="paired", method="tost_delong_paired",
                       n_members=res.n_members, n_nonmembers=res.n_nonmembers, notes=res.notes)
    reference_auc = 0.5 if reference_auc is None else check_probability(
        reference_auc, "reference_auc", low_inclusive=True, high_inclusive=True)
    members, nonmembers = split_by_labels(x, y)
    single = auc_delong(members, nonmembers, alpha=2.0 * alpha)
    return _decide(auc=single.auc, reference_auc=reference_auc, diff=single.auc - reference_auc, se=single.se,
                   margin=margin, alpha=alpha, reference="constant", method="tost_delong",
                   n_members=single.n_members, n_nonmembers=single.n_nonmembers, notes=single.notes)


def required_sample_size_factor(result: EquivalenceResult) -> float | None:
    """Rough factor by which both class sizes would have to grow for the test to decide.

    Assumes the point estimate stays where it is and the standard error shrinks as 1/sqrt(n).
    Returns 1.0 when the result already decides, and ``None`` when the estimate sits exactly on the
    margin (no sample size decides). Multiply the current number of forget records (``n_members``)
    by it, or use :func:`records_to_decide`, to say "about N forget records would decide".
    """
    if result.decision not in ("equivalent", "different", "inconclusive"):
        raise ValueError(f"result.decision is not a known decision ({result.decision!r})")
    if result.decision != "inconclusive":
        return 1.0
    gap = result.margin - abs(result.difference)
    if gap == 0 or result.se == 0:
        return None
    if gap > 0:  # inside the margin: shrink the (1 - 2α) half-width below the gap
        z = float(stats.norm.ppf(1.0 - result.alpha))
    else:        # outside the margin: shrink the (1 - α) half-width below the excess
        z = float(stats.norm.ppf(1.0 - result.alpha / 2.0))
    return max(1.0, (z * result.se / abs(gap)) ** 2)


def records_to_decide(result: EquivalenceResult) -> int | None:
    """About how many forget records (members) would decide: ceil(factor · n_members), or None."""
    factor = required_sample_size_factor(result)
    if factor is None:
        return None
    return int(math.ceil(factor * result.n_members))
