"""Statistics of the unlearning audit (numpy, scipy and statsmodels only; never imports torch).

Label convention everywhere: 1 = member (or deleted record), 0 = non-member; a higher score means
"more likely a member". Every function validates its inputs and raises ``ValueError`` with a
one-line message naming the argument; every result is a frozen dataclass with ``to_dict()``.

- AUC: :func:`auc_delong`, :func:`auc_bootstrap`, :func:`paired_auc_difference` (DeLong 1988 paired test),
  :func:`delong_placements`, :func:`delong_auc_variance`, :func:`mann_whitney_auc`
- ROC: :func:`roc_curve_exact`
- TPR at low FPR: :func:`tpr_at_fpr`, :func:`min_calibration_size`
- Equivalence: :func:`tost_auc_equivalence`, :func:`required_sample_size_factor`, :func:`records_to_decide`
- Empirical ε: :func:`empirical_epsilon_lower_bound`, :func:`check_against_certified`
- Seeds: :func:`aggregate_over_seeds`
- Intervals: :func:`clopper_pearson`
"""

from .aggregate import aggregate_over_seeds
from .auc import (
    auc_bootstrap,
    auc_delong,
    delong_auc_variance,
    delong_placements,
    mann_whitney_auc,
    paired_auc_difference,
)
from .epsilon import check_against_certified, empirical_epsilon_lower_bound
from .equivalence import records_to_decide, required_sample_size_factor, tost_auc_equivalence
from .proportion import clopper_pearson
from .results import (
    AUCDifferenceResult,
    AUCResult,
    CertificationCheck,
    EpsilonLowerBoundResult,
    EquivalenceResult,
    ROCCurve,
    SeedAggregate,
    TPRAtFPRResult,
    to_plain,
)
from .roc import roc_curve_exact
from .tpr import min_calibration_size, tpr_at_fpr

__all__ = [
    "auc_delong",
    "auc_bootstrap",
    "paired_auc_difference",
    "delong_placements",
    "delong_auc_variance",
    "mann_whitney_auc",
    "roc_curve_exact",
    "tpr_at_fpr",
    "min_calibration_size",
    "tost_auc_equivalence",
    "required_sample_size_factor",
    "records_to_decide",
    "empirical_epsilon_lower_bound",
    "check_against_certified",
    "aggregate_over_seeds",
    "clopper_pearson",
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
