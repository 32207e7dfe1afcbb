"""Aggregation over seeds."""

import numpy as np
import pytest
from scipy import stats

from unlearn_audit.stats import aggregate_over_seeds


def test_t_interval_matches_scipy():
    values = [0.51, 0.55, 0.49, 0.53, 0.50]
    agg = aggregate_over_seeds(values, alpha=0.1)
    lo, hi = stats.t.interval(0.9, df=4, loc=np.mean(values), scale=stats.sem(values))
    assert agg.mean == pytest.approx(np.mean(values))
    assert agg.sd == pytest.approx(np.std(values, ddof=1))
    assert (agg.ci_low, agg.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert agg.n == 5 and agg.values == tuple(values) and agg.seeds is None


def test_single_seed_has_no_interval():
    agg = aggregate_over_seeds([0.7])
    assert agg.mean == 0.7 and agg.sd is None and agg.ci_low is None and agg.ci_high is None
    d = agg.to_dict()
    assert d["ci_low"] is None and d["values"] == [0.7]


def test_mapping_of_seeds():
    agg = aggregate_over_seeds({np.int64(42): 0.5, 930: 0.6})
    assert agg.seeds == (42, 930) and type(agg.seeds[0]) is int
    with pytest.raises(ValueError, match="seeds"):
        aggregate_over_seeds([0.5, 0.6], seeds=[1])
    with pytest.raises(ValueError, match="values contains 1 NaN/inf"):
        aggregate_over_seeds([0.5, float("nan")])
