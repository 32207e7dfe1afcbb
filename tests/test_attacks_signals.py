"""Signals, AttackResult and the loss attack (MIA-L). Labels: 1 = member, 0 = non-member."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from attacks import AttackResult, LossAttack, signals
from attacks.errors import InvalidInputError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only add contention on shared cores
    yield
    torch.set_num_threads(old)


def test_attacks_package_stands_alone():
    code = ("import sys, attacks, attacks.shadows, attacks.lira, attacks.unlearning, attacks.loss; "
            "bad = [m for m in sys.modules if m.startswith('unlearn_audit')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_logit_scaled_confidence_logits_equal_probability_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(200, 10))
    y = rng.integers(0, 10, size=200)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    p_y = p[np.arange(200), y]
    naive = np.log(p_y) - np.log(1.0 - p_y)  # stable here: p_y is far from 0 and 1
    from_logits = signals.logit_scaled_confidence(y, logits=z)
    from_probs = signals.logit_scaled_confidence(y, probs=p)
    assert from_logits.dtype == np.float64
    np.testing.assert_allclose(from_logits, naive, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(from_probs, naive, rtol=1e-9, atol=1e-9)


def test_logit_scaled_confidence_finite_near_one():
    eps = 1e-15
    expected = np.log(1 - eps) - np.log(eps)  # ~34.54
    z = np.array([[0.0] + [np.log(eps / 9)] * 9])  # p_0 = 1 - 1e-15 exactly in the reals
    c_logits = signals.logit_scaled_confidence([0], logits=z)
    assert np.isfinite(c_logits).all()
    np.testing.assert_allclose(c_logits, expected, rtol=1e-12)
    p = np.array([[1 - eps] + [eps / 9] * 9])
    c_probs = signals.logit_scaled_confidence([0], probs=p)
    assert np.isfinite(c_probs).all()
    np.testing.assert_allclose(c_probs, expected, rtol=1e-6)
    # far beyond float64 resolution of p_y: logits stay exact, probabilities stay finite
    z_big = np.array([[80.0, 0.0, 0.0]])
    np.testing.assert_allclose(signals.logit_scaled_confidence([0], logits=z_big), 80.0 - np.log(2.0), rtol=1e-12)
    assert np.isfinite(signals.logit_scaled_confidence([0], probs=[[1.0, 0.0, 0.0]])).all()


def test_batched_signals_and_cross_entropy_match_torch():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 50, 10))
    y = rng.integers(0, 10, size=50)
    conf = signals.logit_scaled_confidence(y, logits=z)
    assert conf.shape == (3, 50)
    np.testing.assert_allclose(conf[1], signals.logit_scaled_confidence(y, logits=z[1]))
    ce = signals.cross_entropy(y, logits=z[0])
    ref = F.cross_entropy(torch.tensor(z[0]), torch.tensor(y), reduction="none").numpy()
    np.testing.assert_allclose(ce, ref, rtol=1e-12)
    np.testing.assert_allclose(signals.cross_entropy(y, probs=signals.softmax(z[0])), ref, rtol=1e-9)


@pytest.mark.parametrize("arg", ["logits", "probs"])
def test_signals_reject_nan_inf_naming_the_argument(arg):
    bad = np.full((2, 3), 1 / 3)
    bad[1, 2] = np.nan if arg == "logits" else np.inf
    with pytest.raises(ValueError, match=arg):
        signals.logit_scaled_confidence([0, 1], **{arg: bad})
    with pytest.raises(ValueError, match="labels"):
        signals.cross_entropy([0, 5], logits=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="exactly one"):
        signals.cross_entropy([0], logits=np.zeros((1, 3)), probs=np.full((1, 3), 1 / 3))


def test_attack_result_auc_and_json():
    r = AttackResult("loss", "original", member_scores=[3.0, 2.0, 1.0], nonmember_scores=[0.0, 1.0, -1.0])
    # pairs won by the member: 3 -> 3, 2 -> 3, 1 -> 2 plus one tie (0.5): 8.5 / 9
    assert r.auc == pytest.approx(8.5 / 9)
    assert (r.n_members, r.n_nonmembers) == (3, 3)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["member_scores"]["n"] == 3 and "label_convention" in d
    big = AttackResult("x", "t", np.arange(500.0), np.arange(500.0) - 0.5, extra={"a": np.arange(100), "b": np.nan})
    d = big.to_dict()
    json.dumps(d, allow_nan=False)
    assert isinstance(d["extra"]["a"], dict) and d["extra"]["b"] is None
    with pytest.raises(InvalidInputError, match="member_scores"):
        AttackResult("x", "t", [np.nan], [0.0])


def _trained_digits_mlp():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    members, nonmembers = idx[:200], idx[200:600]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    for _ in range(300):  # full-batch, no weight decay: overfits the 200 members
        opt.zero_grad()
        F.cross_entropy(model(xt[members]), yt[members]).backward()
        opt.step()
    return model, x, y, members, nonmembers


def test_loss_attack_on_digits_and_label_flip():
    model, x, y, members, nonmembers = _trained_digits_mlp()
    model.train()
    atk = LossAttack()
    res = atk.from_model(model, x[members], y[members], x[nonmembers], y[nonmembers], target="original")
    assert model.training  # mode restored
    print(f"\nMIA-L AUC on an overfit digits MLP: {res.auc:.3f}")
    assert res.auc > 0.55
    with torch.no_grad():
        logits = model(torch.tensor(x, dtype=torch.float32)).double().numpy()
    loss = signals.cross_entropy(y, logits=logits)
    res2 = atk.run(loss[members], loss[nonmembers])
    assert res2.auc == pytest.approx(res.auc, abs=1e-6)
    flipped = atk.run(loss[nonmembers], loss[members])  # members and non-members swapped
    assert flipped.auc == pytest.approx(1.0 - res2.auc, abs=1e-12)
    np.testing.assert_array_equal(res2.member_scores, -loss[members])  # higher score = more likely member
