"""Aggregation of one statistic over independent seeds (per-seed values, mean, Student-t interval)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import stats

from .results import SeedAggregate
from .validation import as_scores, check_alpha

__all__ = ["aggregate_over_seeds"]


def aggregate_over_seeds(values, alpha: float = 0.05, seeds=None) -> SeedAggregate:
    """Mean, sample sd (ddof=1) and a (1 - alpha) Student-t interval of per-seed values.

    ``values`` is a sequence of finite floats, or a mapping seed -> value (then ``seeds`` is taken
    from its keys). With one seed, ``sd`` and the interval are ``None``. The t-interval treats seeds as
    independent replicates; it says nothing about the variability within one seed.
    """
    if isinstance(values, Mapping):
        if seeds is not None:
            raise ValueError("seeds must not be given when values is a mapping seed -> value")
        seeds = list(values.keys())
        values = list(values.values())
    x = as_scores(values, "values")
    alpha = check_alpha(alpha)
    if seeds is not None:
        seeds = tuple(seeds)
        if len(seeds) != x.size:
            raise ValueError(f"seeds has length {len(seeds)} but values has length {x.size}")
        seeds = tuple(s.item() if isinstance(s, np.generic) else s for s in seeds)
    n = int(x.size)
    mean = float(x.mean())
    if n == 1:
        return SeedAggregate(values=(float(x[0]),), seeds=seeds, n=1, mean=mean, sd=None, ci_low=None,
                             ci_high=None, alpha=alpha, notes=("one seed: no interval",))
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(1.0 - alpha / 2.0, df=n - 1)) * sd / np.sqrt(n)
    return SeedAggregate(values=tuple(float(v) for v in x), seeds=seeds, n=n, mean=mean, sd=sd,
                         ci_low=mean - half, ci_high=mean + half, alpha=alpha)
