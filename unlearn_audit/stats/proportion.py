"""Clopper-Pearson (exact binomial) intervals, via statsmodels' ``proportion_confint(method="beta")``."""

from __future__ import annotations

import numbers

from statsmodels.stats.proportion import proportion_confint

from .validation import check_alpha

__all__ = ["clopper_pearson"]


def clopper_pearson(count: int, nobs: int, alpha: float = 0.05,
                    alternative: str = "two-sided") -> tuple[float, float]:
    """Clopper-Pearson interval for a binomial proportion ``count / nobs``.

    ``alternative="two-sided"``: a (1 - alpha) interval. ``"upper"``: a one-sided (1 - alpha)
    upper bound, returned as ``(0.0, upper)``. ``"lower"``: a one-sided lower bound, returned as
    ``(lower, 1.0)``. The upper bound is 1 when ``count == nobs`` and never 0; the lower bound is 0
    when ``count == 0``.
    """
    for value, name in ((count, "count"), (nobs, "nobs")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be an integer (got {value!r})")
    if nobs < 1:
        raise ValueError(f"nobs must be at least 1 (got {nobs})")
    if not 0 <= count <= nobs:
        raise ValueError(f"count must lie in [0, nobs={nobs}] (got {count})")
    if alternative == "two-sided":
        alpha = check_alpha(alpha)
        low, high = proportion_confint(int(count), int(nobs), alpha=alpha, method="beta")
        return float(low), float(high)
    if alternative not in ("upper", "lower"):
        raise ValueError(f"alternative must be 'two-sided', 'upper' or 'lower' (got {alternative!r})")
    alpha = check_alpha(alpha, high=0.5)
    # A two-sided interval at level 2*alpha has one-sided (1 - alpha) ends.
    low, high = proportion_confint(int(count), int(nobs), alpha=2.0 * alpha, method="beta")
    return (0.0, float(high)) if alternative == "upper" else (float(low), 1.0)
