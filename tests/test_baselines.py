"""Baselines (DESIGN §2.5) on real digits data: Newton step and jackknife against an exact retrain trained to
convergence, Cholesky vs CG vs LiSSA, indefinite Hessians reported, CNS certificate, contrast methods, DP-SGD.

Numbers measured here (digits, 539 training records, softmax regression d = 650, λ = 0.05, full-batch GD to a
gradient norm ≈ 1e-16, |U| = 27 sent as 3 requests): original → retrain 0.136; ns → retrain 3.8e-4 (≈ 350× closer);
ij → retrain 7.1e-3 (≈ 19× closer); cns (LiSSA 10 chains × depth 1000, Hessian batch 10) → retrain 2.4e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_audit.baselines import (
    CertifiedNewtonStep,
    DataHessian,
    InfluenceJackknife,
    NewtonStep,
    conjugate_gradient,
    factor_spd,
    finetune,
    lissa_solve,
    neggrad,
    solve_with_damping,
    train_dpsgd,
)
from unlearn_audit.models import build_model
from unlearn_audit.training import SGDConfig, train_sgd

torch.set_num_threads(1)
LAM = 0.05


def dist(a, b):
    return float((a.double() - b.double()).norm())


def gd_to_convergence(model, x, y, steps=400):
    """Full-batch gradient descent on the strongly convex objective (η = 2, λ_min ≥ λ = 0.05: contraction ≤ 0.9)."""
    cfg = SGDConfig(epochs=steps, batch_size=len(x), lr=2.0, decay=1.0, lam=LAM, seed=0)
    return train_sgd(model, x, y, cfg, dtype=torch.float64).weights


@pytest.fixture(scope="module")
def converged(digits_train):
    x, y, _ = digits_train
    x = x.double()
    model = build_model("softmax", (64,), 10, seed=0)
    w = gd_to_convergence(model, x, y)
    U = np.sort(np.random.default_rng(0).choice(len(x), 27, replace=False))
    keep = np.setdiff1d(np.arange(len(x)), U)
    w_re = gd_to_convergence(model, x[keep], y[keep])
    return model, x, y, w, U, keep, w_re


def test_training_reached_the_optima(converged):
    model, x, y, w, U, keep, w_re = converged
    assert float(DataHessian(model, LAM, w, x, y).gradient().norm()) < 1e-10
    assert float(DataHessian(model, LAM, w_re, x[keep], y[keep]).gradient().norm()) < 1e-10


def _three_requests_and_one_shot(cls, converged, solver):
    """The forget set sent as 3 requests, and the same method given it in one request."""
    model, x, y, w, U, _, _ = converged
    seq = cls(model, LAM, solver=solver).fit(w, x, y)
    for chunk in np.array_split(U, 3):
        seq.delete(chunk)
    one_shot = cls(model, LAM, solver=solver).fit(w, x, y)
    one_shot.delete(U)
    return seq, one_shot


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_newton_step_lands_on_the_converged_retrain(converged, solver):
    model, x, y, w, U, keep, w_re = converged
    ns, one_shot = _three_requests_and_one_shot(NewtonStep, converged, solver)
    d_orig, d_ns = dist(w, w_re), dist(ns.state_, w_re)
    # measured: original 0.136, ns 3.8e-4
    assert d_orig > 0.1
    assert d_ns < d_orig / 100, (d_ns, d_orig)
    assert not ns.any_indefinite()
    assert dist(ns.state_, one_shot.state_) < 1e-10 * max(1.0, float(w.norm()))


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_jackknife_is_close_and_additive(converged, solver):
    model, x, y, w, U, keep, w_re = converged
    ij, one_shot = _three_requests_and_one_shot(InfluenceJackknife, converged, solver)
    d_orig, d_ij = dist(w, w_re), dist(ij.state_, w_re)
    assert d_ij < d_orig / 10, (d_ij, d_orig)           # measured: 7.1e-3 vs 0.136
    assert dist(ij.state_, one_shot.state_) < 1e-10
    if solver == "cholesky":
        assert ij.storage_bytes == model.dim ** 2 * 8 and ij.precompute_seconds_ > 0


def test_requests_are_validated(converged):
    model, x, y, w, U, keep, w_re = converged
    ns = NewtonStep(model, LAM, solver="cg").fit(w, x, y)
    ns.delete(U[:2])
    with pytest.raises(ValueError, match="already deleted"):
        ns.delete(U[1:3])
    with pytest.raises(ValueError, match="outside"):
        ns.delete([len(x)])


def test_dense_hessian_matches_hvps_and_cg_matches_cholesky(converged):
    model, x, y, w, *_ = converged
    h = DataHessian(model, LAM, w, x, y, data_chunk=100)
    H = h.dense()
    E = torch.eye(model.dim, dtype=torch.float64)
    assert float((H - h.matmat(E)).abs().max()) < 1e-12
    b = torch.randn(model.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_chol = factor_spd(H).solve(b)
    x_cg, info = conjugate_gradient(h.matvec, b, tol=1e-12)
    assert info.converged and not info.indefinite
    assert dist(x_cg, x_chol) / float(x_chol.norm()) < 1e-9


def test_lissa_agrees_with_cholesky(converged):
    """Every record in every Hessian sample: LiSSA is the truncated Neumann series; measured relative error vs the
    float64 Cholesky solve 8e-16. Mini-batches of 10 (the paper's setting: 10 chains, depth 1000): measured 0.9-1.0%
    (100 chains, or batches of 100: 0.3%)."""
    model, x, y, w, *_ = converged
    h = DataHessian(model, LAM, w, x, y)
    g = h.gradient_sum() / len(x) + torch.randn(model.dim, generator=torch.Generator().manual_seed(1),
                                                dtype=torch.float64) * 1e-2
    damping = 0.01
    exact = factor_spd(h.dense() + damping * torch.eye(model.dim, dtype=torch.float64)).solve(g)
    lam_max = float(torch.linalg.eigvalsh(h.dense())[-1])
    scale = 1.25 * (lam_max + damping)
    full, info = lissa_solve(model, LAM, w, x, y, g, damping=damping, scale=scale, chains=1, depth=600,
                             hessian_batch=len(x), mu_lower=LAM + damping)
    assert info.truncation_factor < 1e-12
    assert dist(full, exact) / float(exact.norm()) < 1e-12
    mini, _ = lissa_solve(model, LAM, w, x, y, g, damping=damping, scale=scale, chains=10, depth=1000,
                          hessian_batch=10, seed=3)
    assert dist(mini, exact) / float(exact.norm()) < 0.03
    # The public code's scale 1000 with depth 1000 is a truncated series: (1 − μ/scale)^depth ≈ 0.94, i.e. the
    # "inverse" is about depth/scale · I, a hidden damping. Reported, not hidden.
    _, quirk = lissa_solve(model, LAM, w, x, y, g, damping=damping, scale=1000.0, chains=1, depth=1000,
                           hessian_batch=10, mu_lower=LAM + damping)
    assert quirk.truncation_factor > 0.9


def test_cns_on_converged_model_with_certificate(converged):
    model, x, y, w, U, keep, w_re = converged
    cns = CertifiedNewtonStep(model, LAM, damping=0.0, seed=0).fit(w, x, y)
    for chunk in np.array_split(U, 3):
        cns.delete(chunk)
    assert dist(cns.state_, w_re) < dist(w, w_re) / 10          # measured 2.4e-3 vs 0.136
    cert, sigma = cns.certificate(1.0, 1e-5)
    c = cert["constants"]
    assert c["R"]["source"] == "measured" and not cert["trained_with_weight_norm_bound"]
    assert c["M"]["source"] == "measured" and c["lambda_min"]["source"] == "analytic"
    assert c["lambda_min"]["value"] == LAM                  # convex CE: the softmax Hessian's floor is λ
    assert cert["sensitivity"] == pytest.approx(cert["newton_term"] + cert["lissa_term"])
    R, M, lmin = c["R"]["value"], c["M"]["value"], c["lambda_min"]["value"]
    assert cert["newton_term"] == pytest.approx(2 * R * (M * R + 0.0) / lmin)
    assert cert["sensitivity"] >= dist(cns.state_, w_re)
    assert sigma > cert["sensitivity"]                      # ε = 1: σ ≈ 3.73 Δ
    assert len(cns.requests_) == 3 and all(r["lissa"]["truncation_factor"] < 1e-6 for r in cns.requests_)


def test_cns_enforced_radius_projects(digits_train):
    x, y, _ = digits_train
    model = build_model("softmax", (64,), 10, seed=0)
    cfg = SGDConfig(epochs=3, batch_size=32, lr=0.5, lam=0.01, weight_norm_bound=2.0, seed=0)
    w = train_sgd(model, x, y, cfg).weights
    cns = CertifiedNewtonStep(model, 0.01, depth=200, radius=2.0).fit(w, x, y)
    cns.delete(np.arange(10))
    assert float(cns.state_.norm()) <= 2.0 + 1e-9
    cert, _ = cns.certificate(1.0, 1e-5)
    assert cert["constants"]["R"]["value"] == 2.0 and cert["constants"]["R"]["source"] == "enforced"
    assert cert["trained_with_weight_norm_bound"]


def test_indefinite_hessian_is_detected_and_damped(digits_train):
    """A non-convex MLP away from a minimum: Cholesky fails, CG meets negative curvature; both say so, add the same
    damping, and agree."""
    x, y, _ = digits_train
    model = build_model("mlp", (64,), 10, seed=0, hidden=6)
    w = model.initial_weights(torch.float64) + 0.5 * torch.randn(model.dim, generator=torch.Generator()
                                                                   .manual_seed(0), dtype=torch.float64)
    h = DataHessian(model, 1e-3, w, x[:200], y[:200])
    H = h.dense()
    assert float(torch.linalg.eigvalsh(H)[0]) < 0
    fac = factor_spd(H)
    assert fac.info.indefinite and fac.info.damping > 0 and "indefinite" in fac.info.note
    b = torch.randn(model.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_cg, info = solve_with_damping(h.matvec, b, tol=1e-11, maxiter=None, dim=model.dim)
    assert info.indefinite and "negative curvature" in info.note
    assert info.damping == pytest.approx(fac.info.damping, rel=1e-6)
    assert dist(x_cg, fac.solve(b)) / float(fac.solve(b).norm()) < 1e-6
    ns = NewtonStep(model, 1e-3, solver="cholesky").fit(w, x[:200], y[:200])
    ns.delete([0, 1, 2])
    assert ns.any_indefinite() and ns.solves_[0]["damping"] > 0


def test_finetune_and_neggrad(digits_train):
    x, y, _ = digits_train
    model = build_model("softmax", (64,), 10, seed=0)
    cfg = SGDConfig(epochs=5, batch_size=32, lr=0.5, lam=0.01, seed=0)
    w = train_sgd(model, x, y, cfg).weights
    U = np.arange(30)
    keep = torch.as_tensor(np.arange(30, len(x)))
    loss = lambda w_, xx, yy: float(model.per_sample_loss(w_, xx, yy).mean())          # noqa: E731
    w_ng, _ = neggrad(model, w, x[:30], y[:30], steps=5, lr=0.1)
    assert loss(w_ng, x[U], y[U]) > loss(w, x[U], y[U])
    w_ft, secs = finetune(model, cfg, w, x[keep], y[keep], epochs=2, lr=0.1)
    assert secs > 0 and loss(w_ft, x[keep], y[keep]) < loss(w, x[keep], y[keep])


def test_dpsgd_reports_opacus_epsilon(digits_train):
    x, y, _ = digits_train
    model = build_model("softmax", (64,), 10, seed=0)
    cfg = SGDConfig(epochs=2, batch_size=64, lr=0.5, lam=0.01, seed=0)
    res = train_dpsgd(model, x, y, cfg, epsilon=2.0, delta=1e-5, max_grad_norm=1.0)
    assert 0 < res.epsilon <= 2.0 + 1e-3 and res.noise_multiplier > 0 and res.steps > 0
    assert res.weights.shape == (model.dim,)
    cert = res.certificate(20)
    assert cert["group_privacy_for_forget_set"]["epsilon"] == pytest.approx(20 * res.epsilon)
    assert model.accuracy(res.weights, x, y) > 0.3


def test_float32_hvps_agree_with_float64_and_auto_picks_by_size(digits_train):
    """The float32 HVP option (for conv nets on CPU) changes H v by ~1e-6 relative, keeps gradients float64, and a
    CG Newton step with it lands where the float64 one does; softmax regression stays on its float64 closed form."""
    from unlearn_audit.baselines.hessian import resolve_hvp_dtype
    from unlearn_audit.baselines.lissa import chain_hvps

    x, y, _ = digits_train
    x, y = x[:200].double(), y[:200]
    model = build_model("mlp", (64,), 10, seed=0, hidden=12)
    w = train_sgd(model, x, y, SGDConfig(epochs=30, batch_size=40, lr=0.5, lam=1e-2, seed=0),
                  dtype=torch.float64).weights
    h64 = DataHessian(model, 1e-2, w, x, y)
    h32 = DataHessian(model, 1e-2, w, x, y, hvp_dtype=torch.float32)
    V = torch.randn(3, model.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref, got = h64.matmat(V), h32.matmat(V)
    assert got.dtype == torch.float64
    rel = float((got - ref).norm() / ref.norm())
    assert 1e-12 < rel < 1e-5                               # really computed in float32, and close
    assert torch.equal(h32.gradient(), h64.gradient())      # gradients stay float64
    idx = torch.randint(200, (2, 10), generator=torch.Generator().manual_seed(1))
    c64 = chain_hvps(model, 1e-2, w, x[idx], y[idx], V[:2])
    c32 = chain_hvps(model, 1e-2, w, x[idx], y[idx], V[:2], torch.float32)
    assert float((c32 - c64).norm() / c64.norm()) < 1e-5
    steps = {}
    for prec in ("float64", "float32"):
        ns = NewtonStep(model, 1e-2, solver="cg", cg_tol=1e-8, hvp_precision=prec).fit(w, x, y)
        ns.delete([0, 5, 9])
        steps[prec] = ns.state_ - w
        assert prec in ns.solver_name or prec == "float64"
    assert dist(steps["float32"], steps["float64"]) / float(steps["float64"].norm()) < 1e-4
    assert resolve_hvp_dtype(model, "auto", exact_max_dim=10 ** 6) == torch.float64
    assert resolve_hvp_dtype(model, "auto", exact_max_dim=10) == torch.float32
    assert resolve_hvp_dtype(build_model("softmax", (64,), 10), "float32") == torch.float64
    with pytest.raises(ValueError, match="hvp precision"):
        resolve_hvp_dtype(model, "float16")
