"""TPR at low FPR with the threshold fixed on separate calibration non-members (Carlini et al. 2022).

Label convention everywhere: 1 = member (or deleted record), 0 = non-member; a higher score means
"more likely a member".

Threshold rule (strict): a record is flagged as a member when ``score > threshold``. The threshold
is the smallest calibration non-member score ``t`` with calibration FPR = #{calibration > t} / n_cal
<= target; that is the (k+1)-th largest calibration score with k = floor(target · n_cal). The strict
inequality makes the smallest admissible threshold an observed score (with ``>=`` the infimum would
fall between two scores and not be attained). Ties at the threshold are not flagged.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .proportion import clopper_pearson
from .results import TPRAtFPRResult
from .validation import as_scores, check_alpha, check_probability

__all__ = ["tpr_at_fpr", "min_calibration_size"]

_EPS = 1e-9


def min_calibration_size(fpr_target: float) -> int:
    """ceil(1 / FPR): the fewest calibration non-members that can resolve ``fpr_target``."""
    fpr_target = check_probability(fpr_target, "fpr_target")
    return int(math.ceil(1.0 / fpr_target - _EPS))


def tpr_at_fpr(eval_member_scores, eval_nonmember_scores, calibration_nonmember_scores,
               fpr_targets=(0.01, 0.001, 0.0001), alpha: float = 0.05) -> list[TPRAtFPRResult]:
    """TPR and realised FPR at thresholds chosen on calibration non-members only.

    Parameters
    ----------
    eval_member_scores : scores of evaluation members (label 1); TPR is measured on them.
    eval_nonmember_scores : scores of evaluation non-members (label 0); the realised FPR is measured
        on them. They must not be the calibration scores if an unbiased FPR is wanted.
    calibration_nonmember_scores : scores of non-members (label 0) from a separate split or shadow
        data, used only to fix the threshold.
    fpr_targets : target false-positive rates in (0, 1).
    alpha : two-sided level of the Clopper-Pearson intervals.

    Returns one :class:`TPRAtFPRResult` per target, in the given order. With fewer than
    ceil(1/target) calibration non-members the target cannot be resolved: the result has
    ``resolvable=False``, a ``reason`` and no numbers.
    """
    members = as_scores(eval_member_scores, "eval_member_scores")
    nonmembers = as_scores(eval_nonmember_scores, "eval_nonmember_scores")
    calibration = as_scores(calibration_nonmember_scores, "calibration_nonmember_scores")
    alpha = check_alpha(alpha)
    if np.ndim(fpr_targets) == 0:
        fpr_targets = (fpr_targets,)
    targets = [check_probability(t, "fpr_targets") for t in fpr_targets]
    if not targets:
        raise ValueError("fpr_targets is empty")

    n_cal = int(calibration.size)
    cal_desc = np.sort(calibration)[::-1]
    sorted_members = np.sort(members)
    sorted_non = np.sort(nonmembers)
    out = []
    for target in targets:
        need = min_calibration_size(target)
        result = functools.partial(TPRAtFPRResult, fpr_target=target, n_calibration=n_cal, min_calibration=need,
                                   n_eval_members=int(members.size), n_eval_nonmembers=int(nonmembers.size),
                                   alpha=alpha)
        if n_cal < need:
            out.append(result(
                resolvable=False,
                reason=(f"not resolvable: FPR {target:g} needs at least {need} calibration non-members, "
                        f"got {n_cal}"),
                threshold=None, calibration_fpr=None, tpr=None, tpr_ci_low=None, tpr_ci_high=None,
                true_positives=None, realised_fpr=None, realised_fpr_ci_low=None, realised_fpr_ci_high=None,
                false_positives=None))
            continue
        k = int(math.floor(target * n_cal + _EPS))  # at most k calibration scores may exceed the threshold
        threshold = float(cal_desc[k])               # k <= n_cal - 1 since target < 1
        cal_fp = int(n_cal - np.searchsorted(cal_desc[::-1], threshold, side="right"))
        tp = int(members.size - np.searchsorted(sorted_members, threshold, side="right"))
        fp = int(nonmembers.size - np.searchsorted(sorted_non, threshold, side="right"))
        tpr_lo, tpr_hi = clopper_pearson(tp, int(members.size), alpha)
        fpr_lo, fpr_hi = clopper_pearson(fp, int(nonmembers.size), alpha)
        out.append(result(
            resolvable=True, reason=None, threshold=threshold, calibration_fpr=cal_fp / n_cal,
            tpr=tp / members.size, tpr_ci_low=tpr_lo, tpr_ci_high=tpr_hi, true_positives=tp,
            realised_fpr=fp / nonmembers.size, realised_fpr_ci_low=fpr_lo, realised_fpr_ci_high=fpr_hi,
            false_positives=fp))
    return out
