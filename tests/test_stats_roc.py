"""Exact ROC over unique scores (labels: 1 = member, 0 = non-member)."""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from unlearn_audit.stats import mann_whitney_auc, roc_curve_exact


@pytest.mark.parametrize("seed,ties", [(1, False), (2, True), (3, True)])
def test_matches_sklearn_and_mann_whitney(seed, ties):
    rng = np.random.default_rng(seed)
    mem, non = rng.normal(0.7, 1, 83), rng.normal(0, 1, 121)
    if ties:
        mem, non = np.round(mem * 3), np.round(non * 3)
    curve = roc_curve_exact(mem, non)
    y = np.r_[np.ones(mem.size), np.zeros(non.size)]
    fpr, tpr, thr = roc_curve(y, np.r_[mem, non], drop_intermediate=False)
    np.testing.assert_allclose(curve.fpr, fpr, atol=1e-15)
    np.testing.assert_allclose(curve.tpr, tpr, atol=1e-15)
    np.testing.assert_array_equal(curve.thresholds[1:], thr[1:])
    assert curve.thresholds[0] == np.inf
    assert curve.auc == pytest.approx(mann_whitney_auc(mem, non), abs=1e-12)


def test_shape_start_end_and_unpacking():
    fpr, tpr, thr = roc_curve_exact([1.0, 2.0, 2.0], [2.0, 0.5])
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thr) < 0)
    # tie at 2.0: two members and one non-member move together (diagonal step)
    np.testing.assert_allclose(thr[1:], [2.0, 1.0, 0.5])
    np.testing.assert_allclose(tpr, [0, 2 / 3, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0.5, 0.5, 1])


def test_all_scores_equal_is_diagonal():
    curve = roc_curve_exact([1.0, 1.0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(curve.fpr, [0, 1])
    np.testing.assert_allclose(curve.tpr, [0, 1])
    assert curve.auc == pytest.approx(0.5)


def test_to_dict_writes_inf_threshold_as_none():
    d = roc_curve_exact([1.0, 3.0], [0.0, 2.0]).to_dict()
    assert d["thresholds"][0] is None
    assert d["thresholds"][1:] == [3.0, 2.0, 1.0, 0.0]
    assert d["n_members"] == 2
