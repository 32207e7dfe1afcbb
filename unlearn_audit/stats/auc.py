"""Attack AUC with confidence intervals, and the paired DeLong test for two correlated AUCs.

Label convention everywhere: 1 = member (or deleted record), 0 = non-member; a higher score means
"more likely a member". The AUC is P(member score > non-member score) + 0.5 P(tie), the
Mann-Whitney estimate; 0.5 means the attack cannot tell members from non-members.

References: DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845 (placement values,
"structural components"); Brunner & Munzel (2000) for the rank form statsmodels implements.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.stats import rankdata
from statsmodels.stats.nonparametric import rank_compare_2indep

from .results import AUCDifferenceResult, AUCResult
from .validation import (
    as_labels,
    as_scores,
    check_alpha,
    check_positive_int,
    check_same_length,
    split_by_labels,
)

__all__ = [
    "auc_delong",
    "auc_bootstrap",
    "paired_auc_difference",
    "delong_placements",
    "delong_auc_variance",
    "mann_whitney_auc",
]

_DEGENERATE_NOTE = ("DeLong standard error is 0 (the scores separate the classes perfectly or are all tied); "
                    "the interval is degenerate and understates the uncertainty")


def _clip(value: float, low: float, high: float) -> float:
    return float(min(max(value, low), high))


def delong_placements(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    """DeLong placement values (structural components) of one scorer.

    Returns ``(v10, v01)``: ``v10[i]`` is the fraction of non-members scored below member ``i``
    (ties count 1/2), ``v01[j]`` the fraction of members scored above non-member ``j``. Both have
    mean equal to the AUC. Labels: members are the positives (1), non-members the negatives (0).
    """
    members = as_scores(member_scores, "member_scores")
    nonmembers = as_scores(nonmember_scores, "nonmember_scores")
    return _placements(members, nonmembers)


def _placements(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m, n = members.size, nonmembers.size
    sorted_non = np.sort(nonmembers)
    sorted_mem = np.sort(members)
    below = np.searchsorted(sorted_non, members, side="left")
    tied = np.searchsorted(sorted_non, members, side="right") - below
    v10 = (below + 0.5 * tied) / n
    not_above = np.searchsorted(sorted_mem, nonmembers, side="right")
    tied = not_above - np.searchsorted(sorted_mem, nonmembers, side="left")
    v01 = ((m - not_above) + 0.5 * tied) / m
    return v10, v01


def delong_auc_variance(member_scores, nonmember_scores) -> tuple[float, float]:
    """Independent placement-value computation of ``(auc, variance)``.

    variance = Var(v10)/m + Var(v01)/n with sample variances (ddof=1); m members, n non-members.
    Used to cross-check :func:`auc_delong` (which delegates to statsmodels).
    """
    members = as_scores(member_scores, "member_scores", min_size=2)
    nonmembers = as_scores(nonmember_scores, "nonmember_scores", min_size=2)
    v10, v01 = _placements(members, nonmembers)
    auc = float(v10.mean())
    var = float(v10.var(ddof=1) / members.size + v01.var(ddof=1) / nonmembers.size)
    return auc, var


def mann_whitney_auc(member_scores, nonmember_scores) -> float:
    """Point estimate only: P(member > non-member) + 0.5 P(tie), by ranks (O((m+n) log(m+n)))."""
    members = as_scores(member_scores, "member_scores")
    nonmembers = as_scores(nonmember_scores, "nonmember_scores")
    return _rank_auc(members, nonmembers)


def _rank_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    m, n = members.size, nonmembers.size
    ranks = rankdata(np.concatenate([members, nonmembers]))
    return float((ranks[:m].sum() - m * (m + 1) / 2.0) / (m * n))


def auc_delong(member_scores, nonmember_scores, alpha: float = 0.05) -> AUCResult:
    """AUC of an attack with a (1 - alpha) DeLong confidence interval.

    Parameters
    ----------
    member_scores, nonmember_scores : 1-D arrays of finite floats
        Attack scores of members (label 1, e.g. the forget set) and non-members (label 0);
        higher = more likely a member. At least two of each.
    alpha : float
        Two-sided significance level.

    Uses ``statsmodels.stats.nonparametric.rank_compare_2indep(members, nonmembers, use_t=False)``:
    its ``prob1`` is P(x1 > x2) + 0.5 P(x1 = x2) with x1 = members, i.e. the AUC, and its
    ``var_prob`` the DeLong variance. The Wald interval is clipped to [0, 1].
    """
    members = as_scores(member_scores, "member_scores", min_size=2)
    nonmembers = as_scores(nonmember_scores, "nonmember_scores", min_size=2)
    alpha = check_alpha(alpha)
    with np.errstate(divide="ignore", invalid="ignore"):  # zero variance (perfect separation) is handled below
        res = rank_compare_2indep(members, nonmembers, use_t=False)
    auc = float(res.prob1)
    var = float(res.var_prob)
    se = float(np.sqrt(max(var, 0.0)))
    low, high = res.conf_int(alpha=alpha)
    notes = (_DEGENERATE_NOTE,) if se == 0.0 else ()
    return AUCResult(
        auc=auc, se=se, ci_low=_clip(low, 0.0, 1.0), ci_high=_clip(high, 0.0, 1.0), alpha=alpha,
        n_members=int(members.size), n_nonmembers=int(nonmembers.size), method="delong", notes=notes,
    )


def auc_bootstrap(member_scores, nonmember_scores, n_boot: int = 2000, alpha: float = 0.05,
                  seed: int | None = 0) -> AUCResult:
    """AUC with a stratified-bootstrap percentile interval.

    Members (label 1) and non-members (label 0) are resampled separately, with replacement, keeping
    both class sizes fixed. ``se`` is the standard deviation of the bootstrap AUCs; the point
    estimate is the AUC of the original data. ``seed`` seeds ``numpy.random.default_rng`` and is
    recorded in the result.
    """
    members = as_scores(member_scores, "member_scores")
    nonmembers = as_scores(nonmember_scores, "nonmember_scores")
    n_boot = check_positive_int(n_boot, "n_boot", minimum=2)
    alpha = check_alpha(alpha)
    if seed is not None:
        seed = check_positive_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    m, n = members.size, nonmembers.size
    # Chunk so that one chunk holds at most ~2 million scores.
    chunk = max(1, min(n_boot, 2_000_000 // (m + n)))
    boot = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        rows = np.concatenate([members[rng.integers(0, m, size=(k, m))],
                               nonmembers[rng.integers(0, n, size=(k, n))]], axis=1)
        ranks = rankdata(rows, axis=1)
        boot[start:start + k] = (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    low, high = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return AUCResult(
        auc=_rank_auc(members, nonmembers), se=float(boot.std(ddof=1)),
        ci_low=_clip(low, 0.0, 1.0), ci_high=_clip(high, 0.0, 1.0), alpha=alpha,
        n_members=int(m), n_nonmembers=int(n), method="stratified_bootstrap_percentile",
        n_boot=n_boot, seed=seed,
    )


def paired_auc_difference(scores_a, scores_b, labels, alpha: float = 0.05) -> AUCDifferenceResult:
    """DeLong (1988) test of the difference of two correlated AUCs measured on the same records.

    Parameters
    ----------
    scores_a, scores_b : 1-D arrays of finite floats, same length
        Two attack scores of the *same* records, e.g. the attack on the unlearned model (a) and on
        the retrained model (b). Higher = more likely a member.
    labels : 1-D array of 0/1
        1 = member (or deleted record), 0 = non-member; at least two of each.
    alpha : float
        Two-sided level of the interval for ``auc_a - auc_b``.

    The variance comes from the placement values: with V10 (m × 2) and V01 (n × 2) the structural
    components of both scorers, S = S10/m + S01/n (sample covariance matrices), and
    Var(auc_a - auc_b) = S_aa + S_bb - 2 S_ab. Because both AUCs share the records, the covariance
    term makes this much smaller than combining two unpaired intervals.
    """
    a = as_scores(scores_a, "scores_a")
    b = as_scores(scores_b, "scores_b")
    check_same_length(a, b, "scores_a", "scores_b")
    y = as_labels(labels, "labels", length=a.size, length_of="scores_a", min_per_class=2)
    alpha = check_alpha(alpha)
    mem_a, non_a = split_by_labels(a, y)
    mem_b, non_b = split_by_labels(b, y)
    m, n = mem_a.size, non_a.size
    v10_a, v01_a = _placements(mem_a, non_a)
    v10_b, v01_b = _placements(mem_b, non_b)
    s10 = np.cov(np.vstack([v10_a, v10_b]), ddof=1)
    s01 = np.cov(np.vstack([v01_a, v01_b]), ddof=1)
    cov = s10 / m + s01 / n
    auc_a, auc_b = float(v10_a.mean()), float(v10_b.mean())
    diff = auc_a - auc_b
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    se_a, se_b = float(np.sqrt(max(cov[0, 0], 0.0))), float(np.sqrt(max(cov[1, 1], 0.0)))
    corr = float(cov[0, 1] / (se_a * se_b)) if se_a > 0 and se_b > 0 else None
    notes: tuple[str, ...] = ()
    if se > 0:
        z = diff / se
        pvalue = float(2.0 * stats.norm.sf(abs(z)))
        half = float(stats.norm.ppf(1.0 - alpha / 2.0)) * se
    else:
        z = None
        pvalue = 1.0 if diff == 0 else 0.0
        half = 0.0
        notes = ("standard error of the difference is 0; the interval is degenerate",)
    return AUCDifferenceResult(
        auc_a=auc_a, auc_b=auc_b, difference=diff, se=se,
        ci_low=_clip(diff - half, -1.0, 1.0), ci_high=_clip(diff + half, -1.0, 1.0),
        statistic=None if z is None else float(z), pvalue=pvalue, se_a=se_a, se_b=se_b,
        correlation=corr, alpha=alpha, n_members=int(m), n_nonmembers=int(n), notes=notes,
    )
