"""Result objects of :mod:`unlearn_audit.stats`.

Like statsmodels' results, each object carries its own estimate, interval, sample sizes, method and
significance level. All are frozen dataclasses; ``to_dict()`` returns plain JSON-serialisable
Python values (``float``, ``int``, ``bool``, ``str``, ``None``, lists and dicts): numpy scalars are
converted and any undefined or non-finite number becomes ``None``.

Label convention everywhere: 1 = member (or deleted record), 0 = non-member; a higher score means
"more likely a member".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from unlearn_audit.common import to_jsonable

__all__ = [
    "to_plain",
    "AUCResult",
    "AUCDifferenceResult",
    "ROCCurve",
    "TPRAtFPRResult",
    "EquivalenceResult",
    "EpsilonLowerBoundResult",
    "CertificationCheck",
    "SeedAggregate",
]


to_plain = to_jsonable      # the one JSON conversion (unlearn_audit.common), under the name stats has exported


class _Result:
    """Mixin: ``to_dict()`` over the dataclass fields."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]    # set by @dataclass on each subclass

    def to_dict(self) -> dict:
        out = {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["type"] = type(self).__name__
        return out


@dataclass(frozen=True)
class AUCResult(_Result):
    """Attack AUC = P(member score > non-member score) + 0.5 P(tie), with a confidence interval.

    ``method`` is ``"delong"`` (normal approximation with the DeLong variance) or
    ``"stratified_bootstrap_percentile"``. The interval is clipped to [0, 1].
    """

    auc: float
    se: float
    ci_low: float
    ci_high: float
    alpha: float
    n_members: int
    n_nonmembers: int
    method: str
    n_boot: int | None = None
    seed: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)


@dataclass(frozen=True)
class AUCDifferenceResult(_Result):
    """Paired DeLong (1988) comparison of two correlated AUCs on the same records.

    ``difference = auc_a - auc_b`` (in the audit: a = unlearned model, b = retrained model).
    ``statistic``/``pvalue``: two-sided z-test of ``difference == 0``. ``correlation`` is the
    estimated correlation between the two AUC estimates; the interval is clipped to [-1, 1].
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    ci_low: float
    ci_high: float
    statistic: float | None
    pvalue: float
    se_a: float
    se_b: float
    correlation: float | None
    alpha: float
    n_members: int
    n_nonmembers: int
    method: str = "delong_paired"
    notes: tuple[str, ...] = ()

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)


@dataclass(frozen=True, eq=False)
class ROCCurve(_Result):
    """Exact ROC curve over the sorted unique scores.

    A record is flagged as a member when ``score >= threshold``. ``thresholds`` is decreasing and
    starts with ``+inf`` (nothing flagged: the point (0, 0)); the last threshold is the smallest
    score (everything flagged: (1, 1)). In ``to_dict()`` the leading ``+inf`` threshold is written
    as ``None``. Unpacks like scikit-learn's ``roc_curve``: ``fpr, tpr, thresholds = curve``.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    n_members: int
    n_nonmembers: int

    def __iter__(self):
        return iter((self.fpr, self.tpr, self.thresholds))

    @property
    def auc(self) -> float:
        """Area under the curve by the trapezoid rule (equals the Mann-Whitney AUC, ties counting 1/2)."""
        return float(np.trapezoid(self.tpr, self.fpr))


@dataclass(frozen=True)
class TPRAtFPRResult(_Result):
    """TPR at a target FPR, with the threshold fixed on calibration non-members.

    A record is flagged as a member when ``score > threshold`` (strict). ``tpr`` is measured on the
    evaluation members and ``realised_fpr`` on the evaluation non-members, each with a two-sided
    Clopper-Pearson interval at level ``alpha``. When ``resolvable`` is False, ``reason`` says why
    and every number except the sample sizes is ``None``.
    """

    fpr_target: float
    resolvable: bool
    reason: str | None
    threshold: float | None
    calibration_fpr: float | None
    n_calibration: int
    min_calibration: int
    tpr: float | None
    tpr_ci_low: float | None
    tpr_ci_high: float | None
    true_positives: int | None
    n_eval_members: int
    realised_fpr: float | None
    realised_fpr_ci_low: float | None
    realised_fpr_ci_high: float | None
    false_positives: int | None
    n_eval_nonmembers: int
    alpha: float
    method: str = "clopper_pearson"
    threshold_rule: str = ("member if score > threshold; "
                           "threshold = smallest calibration score with calibration FPR <= target")


@dataclass(frozen=True)
class EquivalenceResult(_Result):
    """Two one-sided tests (TOST) that an attack AUC lies within ±margin of a reference.

    ``difference = auc - reference_auc``. ``ci_low``/``ci_high`` is the (1 - 2·alpha) interval used by
    TOST; ``two_sided_ci_low``/``two_sided_ci_high`` the (1 - alpha) interval used to call a
    difference. ``pvalue_lower`` tests H0: difference <= -margin, ``pvalue_upper`` tests
    H0: difference >= +margin; ``pvalue`` is the larger of the two (the TOST p-value).

    ``decision``: ``"equivalent"`` when the (1 - 2α) interval lies inside (-m, m); ``"different"``
    when the (1 - α) interval lies entirely outside [-m, m] (this includes over-unlearning, AUC far
    *below* the reference); otherwise ``"inconclusive"``. ``direction`` is the side of the reference
    the estimate lies on (``"above"``/``"below"``) unless the decision is ``"equivalent"`` (then
    ``None``); it is also ``None`` for an estimate exactly equal to the reference.
    """

    reference: str
    auc: float
    reference_auc: float
    difference: float
    se: float
    ci_low: float
    ci_high: float
    two_sided_ci_low: float
    two_sided_ci_high: float
    pvalue_lower: float
    pvalue_upper: float
    pvalue: float
    margin: float
    alpha: float
    decision: str
    direction: str | None
    n_members: int
    n_nonmembers: int
    method: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class EpsilonLowerBoundResult(_Result):
    """Empirical (ε, δ) lower bound from an attack at a pre-registered threshold (Jagielski et al. 2020).

    A record is flagged as a member when ``score > threshold``. ``fpr_upper`` and ``fnr_upper`` are
    one-sided Clopper-Pearson upper bounds, each at level ``per_bound_alpha = alpha / 2`` so that
    both hold jointly with probability at least 1 - alpha, and then ε ≥ ``epsilon_lower_bound``.
    ``binding_term`` names the ratio that gave the maximum (``"fnr"`` for ln((1-δ-FPR⁺)/FNR⁺),
    ``"fpr"`` for ln((1-δ-FNR⁺)/FPR⁺), or ``"zero"``).
    """

    epsilon_lower_bound: float
    binding_term: str
    threshold: float
    delta: float
    alpha: float
    per_bound_alpha: float
    false_positives: int
    false_negatives: int
    n_members: int
    n_nonmembers: int
    fpr: float
    fnr: float
    fpr_upper: float
    fnr_upper: float
    method: str = "jagielski2020_clopper_pearson"
    decision_rule: str = "member if score > threshold"


@dataclass(frozen=True)
class CertificationCheck(_Result):
    """Comparison of an empirical ε lower bound with a certified ε: ``violated`` means a bug."""

    violated: bool
    epsilon_lower_bound: float
    certified_epsilon: float
    delta: float
    certified_delta: float | None
    message: str


@dataclass(frozen=True)
class SeedAggregate(_Result):
    """Per-seed values with their mean, sample standard deviation and a Student-t interval.

    With a single seed ``sd``, ``ci_low`` and ``ci_high`` are ``None``.
    """

    values: tuple[float, ...]
    seeds: tuple | None
    n: int
    mean: float
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    alpha: float
    method: str = "student_t"
    notes: tuple[str, ...] = field(default=())
