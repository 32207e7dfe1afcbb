"""HF-OCU on real digits data: batched HVPs, additivity, closeness to exact retraining, the audit's claims."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_audit.hfocu import AutodiffHessian, GaussNewton, HFOCUUnlearner, UnlearningError, make_curvature
from unlearn_audit.hfocu.curvature import reference_hvp
from unlearn_audit.models import ModelError, build_model
from unlearn_audit.training import SGDConfig, retrain_without


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind", ["softmax", "mlp"])
def test_batched_hvp_equals_double_backward(digits_train, kind):
    x, y, _ = digits_train
    model = build_model(kind, (64,), 10, seed=1, hidden=32)
    gen = torch.Generator().manual_seed(0)
    w = model.initial_weights(torch.float64) + 0.3 * torch.randn(model.dim, generator=gen, dtype=torch.float64)
    bx, by = x[:32].double(), y[:32]
    V = torch.randn(40, model.dim, generator=gen, dtype=torch.float64)
    ref = torch.stack([reference_hvp(model, 0.01, w, bx, by, v) for v in V])
    for op in (make_curvature(model, 0.01), AutodiffHessian(model, 0.01, chunk_size=7)):
        got = op.apply(op.prepare(w, bx, by), V)
        assert rel(got, ref) < 1e-5, op.name
    # float32 path too (what training uses)
    op = make_curvature(model, 0.01)
    got32 = op.apply(op.prepare(w.float(), bx.float(), by), V.float())
    assert rel(got32.double(), ref) < 1e-5


def test_gauss_newton_is_named_and_psd(digits_train):
    x, y, _ = digits_train
    model = build_model("mlp", (64,), 10, hidden=16)
    w = model.initial_weights(torch.float64)
    op = GaussNewton(model, 0.0)
    assert "gauss-newton" in op.name
    V = torch.randn(20, model.dim, dtype=torch.float64)
    hv = op.apply(op.prepare(w, x[:32].double(), y[:32]), V)
    assert (torch.einsum("kd,kd->k", V, hv) >= -1e-10).all()


@pytest.fixture(scope="module")
def softmax_unlearner(digits_train):
    x, y, ids = digits_train
    cfg = SGDConfig(epochs=15, batch_size=32, lr=0.5, decay=0.995, lam=0.01, seed=3)
    model = build_model("softmax", (64,), 10, seed=3)
    return HFOCUUnlearner(model, cfg).fit(x, y, ids)


def test_hfocu_much_closer_to_retrain_than_original(softmax_unlearner, digits_train):
    x, y, ids = digits_train
    un = softmax_unlearner
    rng = np.random.default_rng(0)
    ratios = []
    for trial in range(3):
        forget = rng.choice(len(x), size=int(round(0.05 * len(x))), replace=False)
        w_re = retrain_without(un.model, x, y, un.sgd, un.schedule_, forget)
        w_hf = un.weights_ + un.approximator_sum(ids[forget])
        ratio = float((un.weights_ - w_re).norm() / (w_hf - w_re).norm())
        ratios.append(ratio)
    print(f"distance ratio original/HF-OCU on digits, 5% forget: {ratios}")
    assert min(ratios) >= 5.0


def test_deletion_is_additive(softmax_unlearner, digits_train):
    x, y, ids = digits_train
    un = softmax_unlearner
    forget = list(ids[[5, 17, 101, 250, 400]])
    at_once = un.weights_ + un.approximator_sum(forget)
    state0 = un.state_.clone()
    for rid in forget:
        un.delete([rid])
    try:
        assert rel(un.state_, at_once) < 1e-6
        # the other approximators stay valid: deleting more afterwards is still additive
        with pytest.raises(UnlearningError, match="already deleted"):
            un.delete([forget[0]])
    finally:
        un.state_ = state0
        un.deleted_ = []


def test_bad_deletion_requests(softmax_unlearner):
    with pytest.raises(UnlearningError, match="unknown record id 'nope'"):
        softmax_unlearner.delete(["nope"])
    with pytest.raises(UnlearningError, match="twice"):
        softmax_unlearner.delete([softmax_unlearner.ids_[0]] * 2)


def test_propagate_first_beats_inject_first_at_large_step(digits_train):
    """The derivation's order (propagate, then inject) is closer to retraining than the paper code's order."""
    x, y, ids = digits_train
    cfg = SGDConfig(epochs=8, batch_size=32, lr=1.8, decay=1.0, lam=0.01, seed=5)
    forget = np.random.default_rng(1).choice(len(x), size=27, replace=False)
    dist = {}
    for order in ("propagate_first", "inject_first"):
        model = build_model("softmax", (64,), 10, seed=5)
        un = HFOCUUnlearner(model, cfg, order=order).fit(x, y, ids)
        w_re = retrain_without(model, x, y, cfg, un.schedule_, forget)
        dist[order] = float((un.weights_ + un.approximator_sum(ids[forget]) - w_re).norm())
    print(f"distance to retrain by order: {dist}")
    assert dist["propagate_first"] < dist["inject_first"]


def test_mlp_hfocu_closer_than_original(digits_train):
    x, y, ids = digits_train
    cfg = SGDConfig(epochs=5, batch_size=32, lr=0.3, decay=0.995, lam=0.001, seed=2)
    model = build_model("mlp", (64,), 10, seed=2, hidden=16)
    un = HFOCUUnlearner(model, cfg).fit(x, y, ids)
    forget = np.random.default_rng(2).choice(len(x), size=27, replace=False)
    w_re = retrain_without(model, x, y, cfg, un.schedule_, forget)
    d_orig = float((un.weights_ - w_re).norm())
    d_hf = float((un.weights_ + un.approximator_sum(ids[forget]) - w_re).norm())
    print(f"MLP distance to retrain: original {d_orig:.4g}, HF-OCU {d_hf:.4g}")
    assert d_hf * 3 < d_orig


def test_candidates_mode_tracks_only_candidates(digits_train):
    x, y, ids = digits_train
    cfg = SGDConfig(epochs=3, batch_size=32, lr=0.5, lam=0.01, seed=0)
    full = HFOCUUnlearner(build_model("softmax", (64,), 10), cfg).fit(x, y, ids)
    cand = list(ids[:20])
    part = HFOCUUnlearner(build_model("softmax", (64,), 10), cfg, mode="candidates", candidates=cand).fit(x, y, ids)
    assert part.approximators_.shape[0] == 20
    assert rel(part.approximator_sum(cand[:5]), full.approximator_sum(cand[:5])) < 1e-6
    with pytest.raises(UnlearningError, match="no approximator"):
        part.delete([ids[100]])


def test_batchnorm_in_training_mode_is_refused():
    from torch import nn

    from unlearn_audit.models import FunctionalModel

    module = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    module.train()
    with pytest.raises(ModelError, match="BatchNorm"):
        FunctionalModel(module, "custom", (4,), 4)


def test_float32_and_float64_approximators_agree(digits_train):
    """float32 storage changes the result far less than the linearisation error itself."""
    x, y, ids = digits_train
    cfg = SGDConfig(epochs=5, batch_size=32, lr=0.5, lam=0.01, seed=4)
    forget = ids[:30]
    res = {}
    for dt in (torch.float32, torch.float64):
        model = build_model("softmax", (64,), 10, seed=4)
        un = HFOCUUnlearner(model, cfg, dtype=dt).fit(x, y, ids)
        res[dt] = un.weights_.double() + un.approximator_sum(forget).double()
    model = build_model("softmax", (64,), 10, seed=4)
    w_re = retrain_without(model, x, y, cfg, un.schedule_, np.arange(30), dtype=torch.float64)
    lin_err = float((res[torch.float64] - w_re).norm())
    prec_err = float((res[torch.float32] - res[torch.float64]).norm())
    print(f"float32 vs float64: {prec_err:.3g}; linearisation error: {lin_err:.3g}")
    assert prec_err < 0.1 * lin_err
