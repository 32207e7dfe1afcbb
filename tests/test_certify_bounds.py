"""Sensitivity bounds: the recursion, softmax-regression constants, power iteration, and the bound dominating the
actual distance on a tiny float64 softmax SGD written out here (independent of the package's trainer)."""

import json
import math

import numpy as np
import pytest
import torch

from unlearn_audit.certify import (
    CertificationError,
    SensitivityCertificate,
    power_iteration_rho,
    recursion_certificate,
    sensitivity_recursion,
    softmax_regression_constants,
)
from unlearn_audit.training.schedule import Schedule


def _sched(n=40, epochs=3, batch=8, lr=0.1, decay=0.99, seed=0):
    return Schedule.make(n_train=n, epochs=epochs, batch_size=batch, lr=lr, decay=decay, seed=seed)


def _sum_form(schedule, U, rho, G):
    """b_T = Σ_t inj_t Π_{s>t} ρ_s, summed term by term (no division by 1-ρ anywhere)."""
    counts = schedule.membership_counts(np.asarray(U)).astype(float)
    sizes = schedule.batch_sizes().astype(float)
    T = schedule.n_steps
    rho = np.broadcast_to(np.asarray(rho, float), (T,))
    total = 0.0
    for t in range(T):
        total += schedule.lrs[t] * counts[t] * G / sizes[t] * float(np.prod(rho[t + 1:]))
    return 2.0 * total


# ---------------------------------------------------------------------------------------------------------------------
# the recursion
@pytest.mark.parametrize("rho", [0.0, 0.5, 0.99, 1.0, 1.05])
@pytest.mark.parametrize("decay", [1.0, 0.97])
def test_recursion_matches_sum_form(rho, decay):
    s = _sched(decay=decay)
    U = [0, 5, 17]
    assert sensitivity_recursion(s, U, rho, 2.0) == pytest.approx(_sum_form(s, U, rho, 2.0), rel=1e-12)


def test_recursion_rho_equals_gamma():
    # closed forms of the geometric sum divide by (1 - ρ/γ); the loop must handle ρ = γ: b_T = γ^{T-1} η0 G Σ k_t/|B_t|
    eta0, gamma, G = 0.2, 0.95, 3.0
    s = _sched(lr=eta0, decay=gamma, n=37)  # 37 = 4·8 + 5: a short last batch in each epoch
    U = [1, 2, 30, 36]
    k = s.membership_counts(np.array(U)) / s.batch_sizes()
    expected = 2.0 * gamma ** (s.n_steps - 1) * eta0 * G * k.sum()
    assert sensitivity_recursion(s, U, gamma, G) == pytest.approx(expected, rel=1e-12)


def test_recursion_gamma_one_rho_one_is_plain_sum():
    s = _sched(lr=0.05, decay=1.0)
    U = np.arange(10)
    expected = 2.0 * np.sum(0.05 * s.membership_counts(U) * 1.5 / s.batch_sizes())
    delta, traj = sensitivity_recursion(s, U, 1.0, 1.5, return_trajectory=True)
    assert delta == pytest.approx(expected, rel=1e-12)
    assert traj.shape == (s.n_steps + 1,) and traj[0] == 0 and np.all(np.diff(traj) >= 0)
    # each record appears once per epoch: 3 epochs -> 30 injections of 0.05·1.5/8
    assert delta == pytest.approx(2 * 30 * 0.05 * 1.5 / 8, rel=1e-12)


def test_recursion_per_step_arrays_and_empty_U():
    s = _sched()
    rho = np.linspace(0.5, 1.2, s.n_steps)
    G = np.linspace(1.0, 2.0, s.n_steps)
    counts = s.membership_counts(np.array([3, 4]))
    b = 0.0
    for t in range(s.n_steps):
        b = rho[t] * b + s.lrs[t] * counts[t] * G[t] / len(s.batches[t])
    assert sensitivity_recursion(s, [3, 4], rho, G) == pytest.approx(2 * b, rel=1e-13)
    assert sensitivity_recursion(s, [], 0.9, 1.0) == 0.0
    assert sensitivity_recursion(s, [4, 3, 3], rho, G) == sensitivity_recursion(s, [3, 4], rho, G)  # duplicates


def test_recursion_validation_and_overflow():
    s = _sched()
    with pytest.raises(CertificationError, match="rho"):
        sensitivity_recursion(s, [0], np.ones(3), 1.0)
    with pytest.raises(CertificationError, match="rho"):
        sensitivity_recursion(s, [0], -0.1, 1.0)
    with pytest.raises(CertificationError, match="G"):
        sensitivity_recursion(s, [0], 0.9, float("nan"))
    with pytest.raises(CertificationError, match="forget position 40"):
        sensitivity_recursion(s, [0, 40], 0.9, 1.0)
    with pytest.raises(CertificationError, match="integer"):
        sensitivity_recursion(s, [0.5], 0.9, 1.0)
    assert sensitivity_recursion(s, [0], 1e300, 1.0) == math.inf
    with pytest.raises(CertificationError, match="overflow"):
        recursion_certificate(s, [0], 1e300, 1.0, rho_source="measured", rho_how="x", G_source="enforced", G_how="y")


def test_certificate_serialisable_and_labelled():
    s = _sched()
    cert = recursion_certificate(s, [1, 2], 0.97, 5.0, rho_source="measured", rho_how="power iteration, 50 its",
                                 G_source="enforced", G_how="per-sample clipping at C=5")
    d = json.loads(cert.to_json())
    assert d["schedule_digest"] == s.digest() and d["n_forget"] == 2
    assert d["constants"]["G"] == {"value": 5.0, "source": "enforced", "how": "per-sample clipping at C=5"}
    assert d["constants"]["rho_max"]["source"] == "measured"
    assert d["constants_kind"] == "measured constants"
    assert d["sensitivity"] == pytest.approx(sensitivity_recursion(s, [1, 2], 0.97, 5.0))
    assert SensitivityCertificate.from_dict(d) == cert
    other = recursion_certificate(s, [1, 3], 0.97, 5.0, rho_source="analytic", rho_how="", G_source="enforced",
                                  G_how="")
    assert other.forget_digest != cert.forget_digest and other.constants_kind == "analytic constants"


# ---------------------------------------------------------------------------------------------------------------------
# softmax-regression constants
def test_softmax_constants_values():
    s = _sched(lr=0.1, decay=0.99)
    lam, xmax, R = 0.5, 2.0, 3.0
    cert = softmax_regression_constants(s, [0, 1, 2], lam, xmax, 10, weight_norm_bound=R)
    c = cert.constants
    L = (xmax ** 2 + 1) / 2
    assert c["L"]["value"] == pytest.approx(L)
    assert c["G"]["value"] == pytest.approx(math.sqrt(2 * (xmax ** 2 + 1)) + lam * R)
    assert c["G"]["source"] == "analytic" and c["R"]["source"] == "enforced"
    counts = s.membership_counts(np.array([0, 1, 2]))
    cc = (s.batch_sizes() - counts) / s.batch_sizes()
    eta = s.lrs
    rho = np.max([np.abs(1 - eta * lam * cc), np.abs(1 - eta * (lam + L) * cc), np.abs(1 - eta * lam),
                  np.abs(1 - eta * (lam + L))], axis=0)
    assert c["rho_max"]["value"] == pytest.approx(rho.max())
    assert cert.sensitivity == pytest.approx(sensitivity_recursion(s, [0, 1, 2], rho, c["G"]["value"]), rel=1e-12)
    assert cert.model == "softmax_regression" and cert.constants_kind == "analytic constants"
    json.dumps(cert.to_dict(), allow_nan=False)


def test_softmax_constants_G_choices():
    s = _sched()
    ce = math.sqrt(2 * (1.0 + 1))
    # λ > 0 and nothing bounding ‖w‖: refuse
    with pytest.raises(CertificationError, match="weight_norm_bound"):
        softmax_regression_constants(s, [0], 0.1, 1.0, 3)
    # λ = 0: analytic without R
    assert softmax_regression_constants(s, [0], 0.0, 1.0, 3).constants["G"]["value"] == pytest.approx(ce)
    # measured weight norm -> measured
    cert = softmax_regression_constants(s, [0], 0.1, 1.0, 3, measured_max_weight_norm=4.0)
    assert cert.constants["G"]["value"] == pytest.approx(ce + 0.4) and cert.constants["G"]["source"] == "measured"
    assert cert.constants_kind == "measured constants"
    # measured gradient norm smaller than the analytic bound is used, labelled measured
    cert = softmax_regression_constants(s, [0], 0.1, 1.0, 3, weight_norm_bound=4.0, measured_max_grad_norm=0.7)
    assert cert.constants["G"] == {"value": 0.7, "source": "measured",
                                   "how": "max per-sample gradient norm measured along the trajectory"}
    # clipping above the analytic bound never binds: analytic G and the analytic (contracting) rho
    cert = softmax_regression_constants(s, [0], 0.1, 1.0, 3, weight_norm_bound=4.0, clip_norm=100.0)
    assert cert.constants["G"]["source"] == "analytic" and cert.constants["rho_max"]["value"] < 1


def test_softmax_constants_binding_clip_uses_rigorous_rho():
    s = _sched(lr=0.05)
    lam, xmax = 0.5, 1.0
    cert = softmax_regression_constants(s, [0], lam, xmax, 10, clip_norm=0.5, weight_norm_bound=2.0)
    assert cert.constants["G"] == {"value": 0.5, "source": "enforced", "how": "per-sample gradient clipping at C=0.5"}
    L = (xmax ** 2 + 1) / 2
    assert cert.constants["rho_max"]["value"] == pytest.approx(1 + 0.05 * (lam + L))
    assert "clipping may bind" in cert.constants["rho_max"]["how"]
    # without R the analytic gradient bound is unknown, so clipping may bind too
    cert2 = softmax_regression_constants(s, [0], lam, xmax, 10, clip_norm=50.0)
    assert "clipping may bind" in cert2.constants["rho_max"]["how"]


def test_clipped_step_can_expand_even_when_unclipped_contracts():
    """Why the binding-clip case needs the crude ρ: w ↦ w − η·clip_C(Hw) can expand distances although
    ‖I − ηH‖ < 1 (H = diag(1, 100), η = 0.015, clipping active)."""
    H = np.diag([1.0, 100.0])
    eta, C = 0.015, 0.1
    assert np.abs(1 - eta * np.diag(H)).max() < 1

    def step(w):
        g = H @ w
        return w - eta * g * min(1.0, C / np.linalg.norm(g))

    a = np.array([1.0, 0.01])
    b = a + 1e-4 * np.array([1.0, 0.505])
    assert np.linalg.norm(step(a) - step(b)) > 1.005 * np.linalg.norm(a - b)


@pytest.mark.parametrize(
    "kwargs, param",
    [
        (dict(lam=-1.0, max_feature_norm=1.0, n_classes=3), "lam"),
        (dict(lam=0.1, max_feature_norm=float("inf"), n_classes=3), "max_feature_norm"),
        (dict(lam=0.1, max_feature_norm=1.0, n_classes=1), "n_classes"),
        (dict(lam=0.1, max_feature_norm=1.0, n_classes=3, clip_norm=0.0), "clip_norm"),
        (dict(lam=0.1, max_feature_norm=1.0, n_classes=3, weight_norm_bound=-2.0), "weight_norm_bound"),
        (dict(lam=0.1, max_feature_norm=1.0, n_classes=3, clip_norm=1.0, clip_mode="batch"), "batch"),
        (dict(lam=0.1, max_feature_norm=1.0, n_classes=3, clip_norm=1.0, clip_mode="rows"), "clip_mode"),
    ],
)
def test_softmax_constants_validation(kwargs, param):
    with pytest.raises(CertificationError, match=param):
        softmax_regression_constants(_sched(), [0], **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# the bound dominates the actual distance: a tiny, self-contained float64 softmax SGD (sum-normalised retrain)
def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _per_sample_grads(W, Xt, Y, lam):
    P = _softmax(Xt @ W.T)
    P[np.arange(len(Y)), Y] -= 1.0
    return P[:, :, None] * Xt[:, None, :] + lam * W[None]


def _clip(g, C):
    if C is None:
        return g
    norms = np.sqrt((g ** 2).sum(axis=(1, 2)))
    return g * np.minimum(1.0, C / np.maximum(norms, 1e-300))[:, None, None]


def _hvp(W, V, Xt_b, lam):
    P = _softmax(Xt_b @ W.T)
    VX = Xt_b @ V.T  # (m, K): V x̃_i
    S = P * VX - P * (P * VX).sum(axis=1, keepdims=True)  # (diag p − ppᵀ) V x̃_i
    return S.T @ Xt_b / len(Xt_b) + lam * V


def _project(W, R):
    if R is None:
        return W
    nrm = np.linalg.norm(W)
    return W * (R / nrm) if nrm > R else W


def _train(schedule, Xt, Y, K, lam, forget=(), R=None, C=None):
    """w_{t+1} = Π_R(w_t − (η_t/|B_t|) Σ_{i∈B_t\\U} clip_C ∇ℓ(w_t; z_i)) (sum normalisation), float64."""
    W = np.zeros((K, Xt.shape[1]))
    forget = set(int(u) for u in forget)
    traj, pre = [W], []
    for B, eta in zip(schedule.batches, schedule.lrs):
        keep = np.array([i for i in B if int(i) not in forget], dtype=np.int64)
        g = _clip(_per_sample_grads(W, Xt[keep], Y[keep], lam), C).sum(axis=0) if keep.size else 0.0
        Z = W - eta * g / len(B)
        pre.append(Z)
        W = _project(Z, R)
        traj.append(W)
    return W, traj, pre


def _approximator_sum(schedule, traj, pre, Xt, Y, lam, U, R=None):
    """Σ_{u∈U} a_u by the HF-OCU recursion (propagate with the full-batch Hessian, then inject), linearising the
    projection Π_R; no clipping (used only for unclipped training)."""
    U = set(int(u) for u in U)
    A = np.zeros_like(traj[0])
    for t, (B, eta) in enumerate(zip(schedule.batches, schedule.lrs)):
        W = traj[t]
        A = A - eta * _hvp(W, A, Xt[B], lam)
        inB = np.array([i for i in B if int(i) in U], dtype=np.int64)
        if inB.size:
            A = A + eta * _per_sample_grads(W, Xt[inB], Y[inB], lam).sum(axis=0) / len(B)
        if R is not None and np.linalg.norm(pre[t]) > R:  # Jacobian of the projection at the pre-projection point
            z = pre[t]
            zn = np.linalg.norm(z)
            zh = z / zn
            A = (R / zn) * (A - zh * np.sum(zh * A))
    return A


@pytest.fixture(scope="module")
def tiny_problem():
    rng = np.random.default_rng(0)
    n, p, K = 36, 4, 3
    X = rng.normal(size=(n, p)) * 0.8
    Y = rng.integers(0, K, size=n)
    Xt = np.hstack([X, np.ones((n, 1))])
    return X, Xt, Y, K


@pytest.mark.parametrize("config", ["measured_weight_norm", "projection", "lam_zero", "clip_binding"])
def test_bound_dominates_actual_distance(tiny_problem, config):
    X, Xt, Y, K = tiny_problem
    n = len(Y)
    lam, R, C = 0.3, None, None
    lr = 0.4
    if config == "projection":
        R = 0.4  # small enough that the projection is active (unprojected max ‖w_t‖ ≈ 0.62)
    if config == "lam_zero":
        lam = 0.0
    if config == "clip_binding":
        C, lr = 0.3, 0.1
    s = Schedule.make(n_train=n, epochs=4, batch_size=8, lr=lr, decay=0.99, seed=1)
    W_T, traj, pre = _train(s, Xt, Y, K, lam, R=R, C=C)
    xmax = float(np.linalg.norm(X, axis=1).max())
    kw = {}
    if config == "measured_weight_norm":
        kw["measured_max_weight_norm"] = max(float(np.linalg.norm(W)) for W in traj)
    if config == "projection":
        assert any(np.linalg.norm(z) > R for z in pre)
        kw["weight_norm_bound"] = R
    if config == "clip_binding":
        kw["clip_norm"] = C
    rng = np.random.default_rng(42)
    for trial in range(6):
        U = rng.choice(n, size=int(rng.integers(1, 7)), replace=False)
        cert = softmax_regression_constants(s, U, lam, xmax, K, **kw)
        W_ret, _, _ = _train(s, Xt, Y, K, lam, forget=U, R=R, C=C)
        true_diff = np.linalg.norm(W_ret - W_T)
        assert true_diff <= cert.sensitivity / 2 * (1 + 1e-12), (config, trial)
        if config != "clip_binding":
            A = _approximator_sum(s, traj, pre, Xt, Y, lam, U, R=R)
            assert np.linalg.norm(A) <= cert.sensitivity / 2 * (1 + 1e-12)
            # the certified quantity: noiseless unlearned vs sum-retrain
            assert np.linalg.norm(W_T + A - W_ret) <= cert.sensitivity
            assert np.linalg.norm(W_T + A - W_ret) < 0.5 * true_diff  # the approximators actually approximate


def test_measured_rho_never_exceeds_analytic(tiny_problem):
    """Power iteration with an autograd (double-backward) HVP of the softmax model agrees with the analytic ρ."""
    X, Xt, Y, K = tiny_problem
    lam, eta = 0.3, 2.5  # dominant eigenvalue of I − ηH ≈ −0.78, well separated from the next (≈ −0.35)
    Xt_t = torch.tensor(Xt)
    Y_t = torch.tensor(Y)
    W0 = torch.randn(K, Xt.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    B = torch.arange(8)

    def loss(w):
        logits = Xt_t[B] @ w.view(K, -1).T
        return torch.nn.functional.cross_entropy(logits, Y_t[B]) + lam / 2 * (w ** 2).sum()

    w = W0.reshape(-1).clone().requires_grad_(True)

    def hvp(v):
        (g,) = torch.autograd.grad(loss(w), w, create_graph=True)
        (hv,) = torch.autograd.grad(g @ v, w)
        return hv

    est = power_iteration_rho(hvp, w.numel(), eta, n_iter=200, seed=1)
    Hd = torch.autograd.functional.hessian(loss, W0.reshape(-1).clone())
    exact = float(torch.linalg.eigvalsh(torch.eye(w.numel(), dtype=torch.float64) - eta * Hd).abs().max())
    assert est == pytest.approx(exact, rel=1e-6)
    L = (np.linalg.norm(X[:8], axis=1).max() ** 2 + 1) / 2
    assert est <= max(abs(1 - eta * lam), abs(1 - eta * (lam + L))) + 1e-12


# ---------------------------------------------------------------------------------------------------------------------
# power iteration against the exact eigen-decomposition
def _sym_with_spectrum(eigs, seed):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(len(eigs), len(eigs))))
    return (Q * eigs) @ Q.T


@pytest.mark.parametrize("lr", [0.1, 0.3])  # 0.3: the dominant eigenvalue of I − ηH is negative
def test_power_iteration_known_spectrum(lr):
    H = torch.tensor(_sym_with_spectrum(np.linspace(0.5, 12.0, 30), seed=3))
    exact = float(np.abs(1 - lr * np.linalg.eigvalsh(H.numpy())).max())
    est = power_iteration_rho(lambda v: H @ v, 30, lr, n_iter=400, seed=0)
    assert est == pytest.approx(exact, rel=1e-6)
    assert est <= exact * (1 + 1e-12)  # an estimate from below


def test_power_iteration_random_symmetric():
    rng = np.random.default_rng(5)
    M = rng.normal(size=(40, 40))
    H = (M + M.T) / 2
    lr = 0.05
    exact = float(np.abs(np.linalg.eigvalsh(np.eye(40) - lr * H)).max())
    Ht = torch.tensor(H)
    est = power_iteration_rho(lambda v: Ht @ v, 40, lr, n_iter=3000, seed=2)
    assert est == pytest.approx(exact, rel=1e-3)
    assert est <= exact * (1 + 1e-12)
    # float32 HVPs work too
    H32 = Ht.float()
    est32 = power_iteration_rho(lambda v: H32 @ v, 40, lr, n_iter=3000, seed=2, dtype=torch.float32)
    assert est32 == pytest.approx(exact, rel=1e-3)


def test_power_iteration_validation():
    with pytest.raises(CertificationError, match="hvp"):
        power_iteration_rho(lambda v: v[:3], 5, 0.1)
    with pytest.raises(CertificationError, match="dim"):
        power_iteration_rho(lambda v: v, 0, 0.1)
    with pytest.raises(CertificationError, match="n_iter"):
        power_iteration_rho(lambda v: v, 3, 0.1, n_iter=0)
    assert power_iteration_rho(lambda v: v, 3, 1.0) == 0.0  # I − H = 0


# ---------------------------------------------------------------------------------------------------------------------
# the one certificate path: typed constants -> certificate
def test_certificate_from_constants_is_the_softmax_bound_and_survives_json():
    from unlearn_audit.certify import SoftmaxRegressionConstants, certificate_from_constants, constants_from_dict

    s = _sched()
    c = SoftmaxRegressionConstants(lam=0.05, max_feature_norm=2.5, n_classes=3, clip="per_sample", clip_norm=1.5,
                                   weight_norm_bound=4.0, measured_max_weight_norm=3.0)
    direct = softmax_regression_constants(s, [1, 7], 0.05, 2.5, 3, clip_norm=1.5, weight_norm_bound=4.0,
                                          measured_max_weight_norm=3.0, order="inject_first")
    via = certificate_from_constants(s, [1, 7], constants_from_dict(json.loads(json.dumps(c.to_dict()))),
                                     order="inject_first")
    assert via.to_dict() == direct.to_dict()
    # without per-sample clipping the clip norm must not be used (G comes from lambda*R instead)
    unclipped = certificate_from_constants(s, [1, 7], SoftmaxRegressionConstants(0.05, 2.5, 3, "none", 0.01, 4.0))
    assert unclipped.constants["G"]["value"] > 1.0


def test_certificate_from_constants_recursion_kind_and_refusals():
    from unlearn_audit.certify import (
        Constant,
        RecursionConstants,
        SoftmaxRegressionConstants,
        certificate_from_constants,
        constants_from_dict,
    )

    s = _sched()
    rc = RecursionConstants(model="mlp", rho=Constant(1.01, "measured", "power iteration"),
                            G=Constant(2.0, "enforced", "clipping"))
    cert = certificate_from_constants(s, [3], constants_from_dict(rc.to_dict()))
    assert cert.sensitivity == pytest.approx(sensitivity_recursion(s, [3], 1.01, 2.0))
    assert cert.constants["rho_max"]["source"] == "measured" and cert.constants_kind == "measured constants"
    with pytest.raises(CertificationError, match="batch-gradient clipping"):
        certificate_from_constants(s, [3], SoftmaxRegressionConstants(0.05, 2.5, 3, "batch", 1.0))
    with pytest.raises(CertificationError, match="kind 'nope' is not known"):
        constants_from_dict({"kind": "nope"})
    with pytest.raises(CertificationError, match="malformed"):
        constants_from_dict({"kind": "recursion", "rho": {"value": 1.0}})
    with pytest.raises(CertificationError, match="source"):
        Constant(1.0, "guessed", "")


def test_power_norm_is_shared_with_the_baselines():
    from unlearn_audit.baselines import cns
    from unlearn_audit.certify import power_norm

    assert cns.power_norm is power_norm
    A = torch.diag(torch.tensor([3.0, -5.0, 1.0], dtype=torch.float64))
    assert power_norm(lambda v: A @ v, 3, iters=200) == pytest.approx(5.0, rel=1e-9)
