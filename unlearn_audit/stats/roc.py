"""Exact ROC curve of a membership-inference attack (no threshold grid).

Label convention everywhere: 1 = member (or deleted record), 0 = non-member; a higher score means
"more likely a member". A record is flagged as a member when ``score >= threshold``.
"""

from __future__ import annotations

import numpy as np

from .results import ROCCurve
from .validation import as_scores

__all__ = ["roc_curve_exact"]


def roc_curve_exact(member_scores, nonmember_scores) -> ROCCurve:
    """ROC points at every unique score.

    Thresholds are the sorted unique scores of both classes in decreasing order, preceded by
    ``+inf``; at threshold ``t`` the point is (FPR, TPR) = (#non-members >= t / n, #members >= t / m).
    Tied scores therefore move the curve diagonally in one step, and the trapezoid area equals the
    Mann-Whitney AUC with ties counting 1/2. The curve starts at (0, 0) and ends at (1, 1).
    Returns an :class:`ROCCurve` that also unpacks as ``fpr, tpr, thresholds``.
    """
    members = as_scores(member_scores, "member_scores")
    nonmembers = as_scores(nonmember_scores, "nonmember_scores")
    m, n = members.size, nonmembers.size
    thresholds = np.unique(np.concatenate([members, nonmembers]))[::-1]
    tp = m - np.searchsorted(np.sort(members), thresholds, side="left")
    fp = n - np.searchsorted(np.sort(nonmembers), thresholds, side="left")
    fpr = np.concatenate([[0.0], fp / n])
    tpr = np.concatenate([[0.0], tp / m])
    thresholds = np.concatenate([[np.inf], thresholds])
    for arr in (fpr, tpr, thresholds):
        arr.setflags(write=False)
    return ROCCurve(fpr=fpr, tpr=tpr, thresholds=thresholds, n_members=int(m), n_nonmembers=int(n))
