"""Input validation, JSON results and the torch-free import of unlearn_audit.stats."""

import json
import subprocess
import sys

import numpy as np
import pytest

import unlearn_audit.stats as st

GOOD = np.array([0.1, 0.5, 0.9])


@pytest.mark.parametrize("fn", [st.auc_delong, st.auc_bootstrap, st.roc_curve_exact, st.mann_whitney_auc,
                                st.delong_placements, st.delong_auc_variance])
def test_member_nonmember_functions_name_the_argument(fn):
    with pytest.raises(ValueError, match=r"^member_scores contains 1 NaN/inf values$"):
        fn([0.1, np.nan, 0.3], GOOD)
    with pytest.raises(ValueError, match=r"^nonmember_scores contains 2 NaN/inf values$"):
        fn(GOOD, [np.inf, -np.inf, 0.2])
    with pytest.raises(ValueError, match=r"^member_scores is empty$"):
        fn([], GOOD)
    with pytest.raises(ValueError, match=r"^nonmember_scores must be 1-D"):
        fn(GOOD, np.ones((2, 2)))


def test_delong_needs_two_per_class():
    with pytest.raises(ValueError, match="member_scores needs at least 2 values"):
        st.auc_delong([1.0], GOOD)


def test_paired_inputs():
    labels = np.array([1, 1, 0, 0])
    a = np.array([0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="scores_b has length 3 but scores_a has length 4"):
        st.paired_auc_difference(a, a[:3], labels)
    with pytest.raises(ValueError, match="labels has length 3"):
        st.paired_auc_difference(a, a, labels[:3])
    with pytest.raises(ValueError, match="scores_a contains 1 NaN/inf"):
        st.paired_auc_difference([0.1, np.nan, 0.3, 0.4], a, labels)
    with pytest.raises(ValueError, match="labels must contain only 0"):
        st.paired_auc_difference(a, a, [1, 2, 0, 0])
    with pytest.raises(ValueError, match="labels has 0 members"):
        st.paired_auc_difference(a, a, [0, 0, 0, 0])
    with pytest.raises(ValueError, match="labels has 1 non-members"):
        st.paired_auc_difference(a, a, [1, 1, 1, 0])
    assert st.paired_auc_difference(a, a, labels.astype(bool)).difference == 0.0


def test_tpr_inputs_and_alpha():
    with pytest.raises(ValueError, match="calibration_nonmember_scores is empty"):
        st.tpr_at_fpr(GOOD, GOOD, [])
    with pytest.raises(ValueError, match="eval_member_scores contains 1 NaN/inf"):
        st.tpr_at_fpr([np.nan], GOOD, GOOD)
    with pytest.raises(ValueError, match="fpr_targets"):
        st.tpr_at_fpr(GOOD, GOOD, GOOD, fpr_targets=(0.0,))
    with pytest.raises(ValueError, match="alpha"):
        st.auc_delong(GOOD, GOOD, alpha=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        st.auc_bootstrap(GOOD, GOOD, n_boot=1)
    with pytest.raises(ValueError, match="member_scores must contain numeric"):
        st.auc_delong(["a", "b"], GOOD)


def _assert_plain(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) is str
            _assert_plain(v)
    elif isinstance(obj, list):
        for v in obj:
            _assert_plain(v)
    else:
        assert obj is None or type(obj) in (bool, int, float, str), type(obj)


def test_every_result_to_dict_is_plain_json():
    rng = np.random.default_rng(51)
    mem, non = rng.normal(1, 1, 40), rng.normal(0, 1, 60)
    s = np.r_[mem, non]
    labels = np.r_[np.ones(40), np.zeros(60)]
    results = [
        st.auc_delong(mem, non), st.auc_bootstrap(mem, non, n_boot=50, seed=1),
        st.auc_delong([1.0, 2.0], [0.0, 0.5]),  # degenerate: se 0
        st.paired_auc_difference(s, s + rng.normal(0, 0.1, 100), labels),
        st.paired_auc_difference(s, s, labels),  # statistic None, correlation finite
        st.roc_curve_exact(mem, non),
        *st.tpr_at_fpr(mem, non, rng.normal(0, 1, 200)),
        st.tost_auc_equivalence(s, labels, margin=0.05),
        st.empirical_epsilon_lower_bound(mem, non, 1.0, 1e-5),
        st.check_against_certified(st.empirical_epsilon_lower_bound(mem, non, 1.0, 1e-5), 1.0),
        st.aggregate_over_seeds([0.5, 0.6]), st.aggregate_over_seeds([0.5]),
    ]
    for r in results:
        d = r.to_dict()
        _assert_plain(d)
        json.loads(json.dumps(d, allow_nan=False))
        assert d["type"] == type(r).__name__


def test_import_does_not_pull_torch():
    code = "import sys, unlearn_audit.stats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
