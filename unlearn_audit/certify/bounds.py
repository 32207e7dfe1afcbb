"""Request-specific sensitivity bounds for certified HF-OCU unlearning (DESIGN §2.4).

The quantity certified is Δ(U) ≥ ‖w̄^{-U} − w^{-U}‖, the distance between the noiseless unlearned model
w̄^{-U} = w_T + Σ_{u∈U} a_u and the exact retrain w^{-U} with the ``sum`` normalisation (DESIGN §2.2: the retained
gradients of B_t divided by the original |B_t|, the reference HF-OCU approximates). A ``mean``-normalised retrain is a
different reference and is not covered by this bound.

First-order recursion. Let ρ_t ≥ ‖I − η_t H‖ for every curvature operator H the two recursions below can see at step t
and G ≥ the norm of every injected per-sample gradient. Then both

* the true difference D_t = w_t^{-U} − w_t, which obeys D_{t+1} = (I − η_t M_t) D_t + (η_t/|B_t|) Σ_{u∈U∩B_t} g_u(w_t)
  with M_t the averaged (mean-value) Hessian of the *retained* part of B_t, and
* the approximator sum A_t = Σ_{u∈U} a_u, which obeys the same with M_t = H_t, the full-batch Hessian at w_t,

are bounded in norm by b_t, where b_0 = 0 and b_{t+1} = ρ_t b_t + η_t |U∩B_t| G / |B_t|. Hence
‖w̄^{-U} − w^{-U}‖ = ‖A_T − D_T‖ ≤ 2 b_T =: Δ(U). A weight-norm projection ‖w‖ ≤ R after every step is a
nonexpansive map (and its linearisation has norm ≤ 1), so it leaves the recursion valid.

The recursion is evaluated as a plain forward loop: no closed forms dividing by (1 − ρ) or (1 − γ), so ρ = 1, ρ = γ,
γ = 1 and ρ > 1 all work.

Constants carry their provenance: ``source`` is "enforced" (guaranteed by the training procedure: clipping,
projection), "analytic" (a mathematical bound from stated facts), or "measured" (estimated on this run: a measured
trajectory maximum or a power-iteration estimate; the certificate is then labelled "measured constants").
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from numbers import Real
from typing import Callable, Mapping

import numpy as np

from unlearn_audit.certify.errors import CertificationError
from unlearn_audit.training.schedule import Schedule

__all__ = [
    "RECURSION_BOUND",
    "SOURCES",
    "SensitivityCertificate",
    "forget_digest",
    "power_iteration_rho",
    "power_norm",
    "recursion_certificate",
    "sensitivity_recursion",
    "softmax_regression_constants",
]

SOURCES = ("enforced", "analytic", "measured")
RECURSION_BOUND = "first-order recursion: b_{t+1} = rho_t b_t + eta_t |U∩B_t| G / |B_t|, b_0 = 0, Delta = 2 b_T"
RECURSION_BOUND_INJECT_FIRST = (
    "first-order recursion, inject-first approximators: b_{t+1} = rho_t b_t + i_t (true difference) and "
    "a_{t+1} = rho_t (a_t + i_t) (approximators, injected before propagating), i_t = eta_t |U∩B_t| G / |B_t|, "
    "Delta = b_T + a_T")
ORDERS = ("propagate_first", "inject_first")
CERTIFICATE_SCHEMA = 1


# ---------------------------------------------------------------------------------------------------------------------
# the certificate
@dataclass(frozen=True)
class SensitivityCertificate:
    """A sensitivity bound Δ(U) with every constant it used and where each came from.

    Attributes:
        bound: which bound was used (text naming the recursion).
        sensitivity: Δ(U), an upper bound on ‖w̄^{-U} − w^{-U}‖₂ (noiseless unlearned vs ``sum`` retrain).
        constants: name -> {"value": float, "source": "enforced"|"analytic"|"measured", "how": str}.
        schedule_digest: ``Schedule.digest()`` of the schedule the bound was computed on.
        forget_digest: SHA-256 of the sorted unique forget positions (the bound is request-specific).
        n_forget: |U|.
        model: the model family the constants were derived for ("softmax_regression", "generic", ...).
        reference: retraining normalisation the bound refers to ("sum").
    """

    bound: str
    sensitivity: float
    constants: dict = field(default_factory=dict)
    schedule_digest: str = ""
    forget_digest: str = ""
    n_forget: int = 0
    model: str = "generic"
    reference: str = "sum"

    @property
    def constants_kind(self) -> str:
        """"measured constants" if any constant was measured, else "analytic constants"."""
        if any(c.get("source") == "measured" for c in self.constants.values()):
            return "measured constants"
        return "analytic constants"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["constants_kind"] = self.constants_kind
        d["schema"] = CERTIFICATE_SCHEMA
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping) -> "SensitivityCertificate":
        keys = {"bound", "sensitivity", "constants", "schedule_digest", "forget_digest", "n_forget", "model",
                "reference"}
        return cls(**{k: d[k] for k in keys if k in d})


def _const(value, source: str, how: str) -> dict:
    if source not in SOURCES:  # pragma: no cover - internal misuse
        raise ValueError(f"source must be one of {SOURCES}")
    return {"value": float(value), "source": source, "how": how}


# ---------------------------------------------------------------------------------------------------------------------
# helpers
def _positions(schedule: Schedule, forget_positions) -> np.ndarray:
    pos = np.asarray(forget_positions)
    if pos.ndim != 1:
        pos = pos.reshape(-1)
    if pos.size and not np.issubdtype(pos.dtype, np.integer):
        raise CertificationError(f"forget_positions must be integer training-set positions, got dtype {pos.dtype}")
    pos = pos.astype(np.int64)
    bad = pos[(pos < 0) | (pos >= schedule.n_train)]
    if bad.size:
        raise CertificationError(
            f"forget position {int(bad[0])} is outside the training set (n_train={schedule.n_train})"
        )
    return np.unique(pos)


def forget_digest(forget_positions) -> str:
    """SHA-256 over the sorted unique forget positions (int64): ties a certificate to its deletion set."""
    pos = np.unique(np.asarray(forget_positions).reshape(-1).astype(np.int64))
    return hashlib.sha256(np.ascontiguousarray(pos, dtype=np.int64).tobytes()).hexdigest()


def _per_step(x, n_steps: int, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n_steps, float(arr))
    elif arr.shape != (n_steps,):
        raise CertificationError(f"{name} must be a scalar or an array of one value per step ({n_steps}), "
                                 f"got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise CertificationError(f"{name} must be finite and >= 0 at every step")
    return arr


def _check_nonneg(x, name: str, allow_none: bool = False):
    if x is None and allow_none:
        return None
    if isinstance(x, bool) or not isinstance(x, Real) or not math.isfinite(float(x)) or float(x) < 0:
        raise CertificationError(f"{name} must be a finite number >= 0, got {x!r}")
    return float(x)


# ---------------------------------------------------------------------------------------------------------------------
# the recursion
def sensitivity_recursion(schedule: Schedule, forget_positions, rho, G, *, return_trajectory: bool = False,
                          order: str = "propagate_first"):
    """Δ(U) = 2·b_T with b_0 = 0, b_{t+1} = ρ_t b_t + η_t |U∩B_t| G_t / |B_t| (DESIGN §2.4).

    With ``order="inject_first"`` (the paper code's order) the approximator sum obeys a_{t+1} = ρ_t (a_t + i_t)
    instead (its injection is propagated in the same step), while the true difference still obeys the b recursion:
    Δ = b_T + a_T, which exceeds 2·b_T whenever ρ_t > 1.

    Args:
        schedule: the recorded batch schedule (η_t = ``schedule.lrs[t]``).
        forget_positions: training-set positions of U (duplicates ignored).
        rho: ρ_t ≥ ‖I − η_t H‖, a scalar or one value per step (any value ≥ 0, including ≥ 1).
        G: bound on every injected per-sample gradient norm, a scalar or one value per step.
        return_trajectory: also return b_0..b_T (length T + 1).
        order: the approximators' update order, ``propagate_first`` (DESIGN §2.3) or ``inject_first``.

    Returns:
        Δ as a float (``inf`` if the recursion overflows), or ``(Δ, b)`` with ``return_trajectory``.
    """
    if order not in ORDERS:
        raise CertificationError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    pos = _positions(schedule, forget_positions)
    T = schedule.n_steps
    rho_t = _per_step(rho, T, "rho")
    g_t = _per_step(G, T, "G")
    counts = schedule.membership_counts(pos).astype(np.float64)
    sizes = schedule.batch_sizes().astype(np.float64)
    lrs = np.asarray(schedule.lrs, dtype=np.float64)
    inject = np.zeros(T)
    nz = sizes > 0
    inject[nz] = lrs[nz] * counts[nz] * g_t[nz] / sizes[nz]
    traj = np.empty(T + 1)
    b = a = 0.0
    traj[0] = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T):
            b = rho_t[t] * b + inject[t]
            a = rho_t[t] * (a + inject[t])
            traj[t + 1] = b
    delta = 2.0 * float(b) if order == "propagate_first" else float(b) + float(a)
    if math.isnan(delta):  # inf * 0 cannot occur (b_t ≥ 0 finite until it overflows to inf)
        delta = math.inf  # pragma: no cover
    return (delta, traj) if return_trajectory else delta


def recursion_certificate(
    schedule: Schedule,
    forget_positions,
    rho,
    G,
    *,
    rho_source: str,
    rho_how: str,
    G_source: str,
    G_how: str,
    model: str = "generic",
    extra_constants: Mapping[str, dict] | None = None,
    order: str = "propagate_first",
) -> SensitivityCertificate:
    """Certificate from given constants (for any model), e.g. ρ_t measured by ``power_iteration_rho`` along the
    trajectory (the max taken) and G enforced by per-sample clipping.

    Raises:
        CertificationError: bad constants, or the recursion overflowed (the constants cannot certify this schedule).
    """
    pos = _positions(schedule, forget_positions)
    rho_t = _per_step(rho, schedule.n_steps, "rho")
    g_t = _per_step(G, schedule.n_steps, "G")
    delta = sensitivity_recursion(schedule, pos, rho_t, g_t, order=order)
    if not math.isfinite(delta):
        raise CertificationError(
            "sensitivity bound overflowed: the product of rho_t over the schedule exceeds float range, "
            "these constants cannot certify this schedule"
        )
    constants = {
        "rho_max": _const(rho_t.max() if rho_t.size else 0.0, rho_source, rho_how),
        "G": _const(g_t.max() if g_t.size else 0.0, G_source, G_how),
    }
    if extra_constants:
        for k, v in extra_constants.items():
            constants[k] = _const(v["value"], v["source"], v["how"])
    return SensitivityCertificate(
        bound=RECURSION_BOUND if order == "propagate_first" else RECURSION_BOUND_INJECT_FIRST,
        sensitivity=delta,
        constants=constants,
        schedule_digest=schedule.digest(),
        forget_digest=forget_digest(pos),
        n_forget=int(pos.size),
        model=model,
    )


# ---------------------------------------------------------------------------------------------------------------------
# softmax regression: analytic constants
def softmax_regression_constants(
    schedule: Schedule,
    forget_positions,
    lam: float,
    max_feature_norm: float,
    n_classes: int,
    clip_norm: float | None = None,
    weight_norm_bound: float | None = None,
    measured_max_grad_norm: float | None = None,
    measured_max_weight_norm: float | None = None,
    *,
    clip_mode: str = "per_sample",
    order: str = "propagate_first",
) -> SensitivityCertificate:
    """Certificate for multinomial logistic regression with bias, per-sample loss CE(W x̃, y) + (λ/2)‖w‖².

    Model and facts. x̃ = (x, 1), so ‖x̃‖² = ‖x‖² + 1; λ regularises every parameter (bias included).
    * Per-sample CE Hessian: x̃x̃ᵀ ⊗ (diag p − ppᵀ). The softmax covariance diag p − ppᵀ is PSD with spectral norm
      ≤ 1/2, so the CE Hessian has spectrum in [0, L_i] with L_i = ‖x̃_i‖²/2 ≤ L := (max‖x‖² + 1)/2, for every w.
    * Per-sample CE gradient: (p − e_y) ⊗ x̃ with ‖p − e_y‖² = (1 − p_y)² + Σ_{k≠y} p_k² ≤ 2(1 − p_y)² ≤ 2, so
      ‖∇CE‖ ≤ √2 ‖x̃‖. With the λ term, ‖∇ℓ(w; z)‖ ≤ √2 ‖x̃‖ + λ‖w‖.

    Contraction ρ_t (which operator contracts). The TRUE retrain difference D_t is propagated by the mean-value
    Hessian of the RETAINED part of the batch, (1/|B_t|) Σ_{i∈B_t\\U} H_i (``sum`` normalisation: divide by the full
    |B_t|). Its λ part is λ c_t I with c_t = |B_t\\U| / |B_t| and its CE part lies in [0, L c_t], so its spectrum lies
    in [λ c_t, (λ + L) c_t] and ‖I − η_t M‖ ≤ max(|1 − η_t λ c_t|, |1 − η_t (λ + L) c_t|). The HF-OCU approximators
    are propagated with the FULL-batch Hessian H_t, spectrum in [λ, λ + L]: ‖I − η_t H_t‖ ≤ max(|1 − η_t λ|,
    |1 − η_t (λ + L)|). The recursion bounds both, so ρ_t is the max of the four terms.

    Gradient bound G (of the injected per-sample gradients ∇ℓ(w_t; z_u), evaluated on the ORIGINAL trajectory w_t).
    The smallest available of:
    * √2·max‖x̃‖ + λR, R = ``weight_norm_bound`` enforced by projection (source "analytic"), or R = 0 when λ = 0;
    * √2·max‖x̃‖ + λ·``measured_max_weight_norm`` (max ‖w_t‖ along the original trajectory; source "measured");
    * ``clip_norm`` C: per-sample clipping of the whole per-sample gradient (source "enforced");
    * ``measured_max_grad_norm`` (max per-sample gradient norm along the trajectory; source "measured").

    Per-sample clipping and ρ. Clipping can only bind if C < √2·max‖x̃‖ + λR (with R enforced, or λ = 0). If it can
    bind, the update map is no longer a gradient step: the clipped map's Jacobian is D_i H_i with D_i the Jacobian of
    the projection onto the C-ball (symmetric, 0 ⪯ D_i ⪯ I). D_i H_i is not symmetric and ‖I − η D_i H_i‖ can exceed
    1 even where ‖I − η H_i‖ < 1, so only the crude ρ_t = 1 + η_t (λ + L) is rigorous, and it is used (its "how"
    says so). For a useful certificate choose C ≥ √2·max‖x̃‖ + λR (clipping then never binds) or no clipping with
    an enforced R.

    Args:
        schedule: the recorded schedule; forget_positions: training positions of U.
        lam: λ ≥ 0. max_feature_norm: max ‖x‖ over the training set (without the bias 1). n_classes: K ≥ 2.
        clip_norm, weight_norm_bound, measured_max_grad_norm, measured_max_weight_norm: see above.
        clip_mode: how ``clip_norm`` was applied in training: "per_sample" (covered) or "batch" (refused: clipping
            the batch gradient does not split into per-sample injections, so this bound does not apply).
        order: the approximators' update order (``inject_first`` changes the approximator half of the bound).

    Raises:
        CertificationError: invalid inputs; no way to bound G (λ > 0 with neither R, a measured weight norm,
        clipping nor a measured gradient norm); or the bound overflowed.
    """
    lam = _check_nonneg(lam, "lam")
    xmax = _check_nonneg(max_feature_norm, "max_feature_norm")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise CertificationError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    C = _check_nonneg(clip_norm, "clip_norm", allow_none=True)
    if clip_mode not in ("per_sample", "batch"):
        raise CertificationError(f"clip_mode must be 'per_sample' or 'batch', got {clip_mode!r}")
    if C is not None and clip_mode == "batch":
        raise CertificationError("clip_mode='batch': batch-gradient clipping is not covered by the per-sample "
                                 "recursion bound; train with per-sample clipping or none")
    if C is not None and C == 0:
        raise CertificationError("clip_norm must be > 0 (use None for no clipping)")
    R = _check_nonneg(weight_norm_bound, "weight_norm_bound", allow_none=True)
    g_meas = _check_nonneg(measured_max_grad_norm, "measured_max_grad_norm", allow_none=True)
    r_meas = _check_nonneg(measured_max_weight_norm, "measured_max_weight_norm", allow_none=True)

    x2 = xmax * xmax + 1.0
    L = x2 / 2.0
    ce = math.sqrt(2.0 * x2)

    constants: dict[str, dict] = {
        "lam": _const(lam, "enforced", "regularisation strength of the training objective (all parameters)"),
        "max_feature_norm": _const(xmax, "analytic", "max ||x|| computed exactly over the whole training set "
                                                     "(bias 1 added separately)"),
        "L": _const(L, "analytic", "CE Hessian norm <= ||x~||^2/2 (softmax covariance norm <= 1/2), "
                                   "||x~||^2 = max||x||^2 + 1"),
        "n_classes": _const(n_classes, "enforced", "number of classes K"),
    }
    if R is not None:
        constants["R"] = _const(R, "enforced", "weight-norm projection ||w|| <= R after every step")
    if C is not None:
        constants["C"] = _const(C, "enforced", "per-sample clipping of the whole per-sample gradient at norm C")

    # --- G --------------------------------------------------------------------------------------------------------
    candidates: list[tuple[float, str, str]] = []
    global_bound = None  # a gradient bound valid for every w the training can reach
    if lam == 0.0:
        global_bound = ce
        candidates.append((ce, "analytic", "sqrt(2)*max||x~|| (lambda = 0)"))
    elif R is not None:
        global_bound = ce + lam * R
        candidates.append((global_bound, "analytic", "sqrt(2)*max||x~|| + lambda*R, R enforced by projection"))
    if lam > 0.0 and r_meas is not None:
        candidates.append((ce + lam * r_meas, "measured",
                           "sqrt(2)*max||x~|| + lambda*max_t||w_t||, weight norm measured along the trajectory"))
    if C is not None:
        candidates.append((C, "enforced", f"per-sample gradient clipping at C={C:g}"))
    if g_meas is not None:
        candidates.append((g_meas, "measured", "max per-sample gradient norm measured along the trajectory"))
    if not candidates:
        raise CertificationError(
            "cannot bound the gradient norm G: with lam > 0 give weight_norm_bound (enforced R), "
            "measured_max_weight_norm, clip_norm or measured_max_grad_norm"
        )
    G, g_source, g_how = min(candidates, key=lambda c: c[0])
    constants["G"] = _const(G, g_source, g_how)

    # --- rho_t ----------------------------------------------------------------------------------------------------
    lrs = np.asarray(schedule.lrs, dtype=np.float64)
    pos = _positions(schedule, forget_positions)
    sizes = schedule.batch_sizes().astype(np.float64)
    counts = schedule.membership_counts(pos).astype(np.float64)
    c = np.where(sizes > 0, (sizes - counts) / np.where(sizes > 0, sizes, 1.0), 0.0)
    clip_may_bind = C is not None and (global_bound is None or global_bound > C)
    if clip_may_bind:
        rho_t = 1.0 + lrs * (lam + L)
        rho_how = ("per-sample clipping may bind (C < sqrt(2)*max||x~|| + lambda*R or R unknown): clipped-map "
                   "Jacobian D_i H_i has ||.|| <= lambda+L, rho_t = 1 + eta_t*(lambda+L) (crude, rigorous)")
    else:
        rho_t = np.maximum.reduce([
            np.abs(1.0 - lrs * lam * c),
            np.abs(1.0 - lrs * (lam + L) * c),
            np.abs(1.0 - lrs * lam) * np.ones_like(c),
            np.abs(1.0 - lrs * (lam + L)) * np.ones_like(c),
        ]) if lrs.size else np.zeros(0)
        rho_how = ("max(|1-eta_t lambda c_t|, |1-eta_t(lambda+L)c_t|, |1-eta_t lambda|, |1-eta_t(lambda+L)|), "
                   "c_t = |B_t\\U|/|B_t|: retained-batch Hessian (true retrain) and full-batch Hessian "
                   "(approximators)")
    return recursion_certificate(
        schedule, pos, rho_t, G,
        rho_source="analytic", rho_how=rho_how, G_source=g_source, G_how=g_how,
        model="softmax_regression", extra_constants=constants, order=order,
    )


# ---------------------------------------------------------------------------------------------------------------------
# power iteration (the one implementation: ρ here, Hessian norms and Lipschitz estimates in the baselines)
def power_norm(matvec: Callable, dim: int, *, iters: int = 20, seed: int = 0, dtype=None, device=None) -> float:
    """‖A‖₂ of a symmetric operator ``matvec: v -> A v`` by power iteration from a seeded Gaussian start.

    The estimate ‖A v‖ for the unit iterate v converges to ‖A‖₂ from below (an estimate: results that use it are
    "measured"). Stops early, returning the current value, when A v is zero or not finite. ``dtype``/``device`` of
    the iterate (default torch.float64 on the CPU); the start vector is drawn in float64 on the CPU either way.
    """
    import torch

    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise CertificationError(f"dim must be a positive integer, got {dim!r}")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise CertificationError(f"n_iter (power iterations) must be a positive integer, got {iters!r}")
    dtype = torch.float64 if dtype is None else dtype
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    v = torch.randn(int(dim), generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    v = v / torch.linalg.vector_norm(v)
    est = 0.0
    for _ in range(int(iters)):
        u = matvec(v)
        est = float(torch.linalg.vector_norm(u))
        if est == 0.0 or not math.isfinite(est):
            return est
        v = u / est
    return est


def power_iteration_rho(
    hvp: Callable,
    dim: int,
    lr: float,
    n_iter: int = 50,
    seed: int = 0,
    *,
    dtype=None,
    device=None,
) -> float:
    """Estimate ‖I − ηH‖₂ by power iteration (:func:`power_norm`) on v ↦ v − η H v (H symmetric, given as an HVP).

    ``hvp`` maps a flat torch vector of length ``dim`` to H v (same shape). Since I − ηH is symmetric, the iterate
    converges to the eigenvector of the largest |eigenvalue| (of either sign) and ‖(I − ηH) v‖ for the unit iterate
    converges to ‖I − ηH‖ from below: this is an estimate, so a certificate that uses it must carry source "measured"
    (take the max over steps sampled along the trajectory, and consider a safety factor).

    Args:
        hvp: callable v -> H v on torch tensors. dim: length of v. lr: η ≥ 0. n_iter: iterations ≥ 1.
        seed: seed of the random start vector. dtype/device: of v (default torch.float64, CPU).
    """
    import torch

    lr = _check_nonneg(lr, "lr")

    def step(v):
        hv = hvp(v)  # no torch.no_grad(): double-backward HVPs need autograd
        if not isinstance(hv, torch.Tensor) or hv.shape != v.shape:
            raise CertificationError(f"hvp must return a tensor of shape {tuple(v.shape)}")
        return v - lr * hv.detach()

    est = power_norm(step, dim, iters=n_iter, seed=seed, dtype=dtype, device=device)
    if not math.isfinite(est):
        raise CertificationError("hvp returned non-finite values during power iteration")
    return est


@dataclass(frozen=True)
class LanczosExtremes:
    """Extreme Ritz pairs of a symmetric operator after ``steps`` Lanczos iterations (float64).

    lam_min/lam_max: the extreme Ritz values; res_min/res_max: their Ritz residuals ‖H y − θ y‖ (an eigenvalue of H
    lies within the residual of each Ritz value); exact: the Krylov space became invariant (or steps ≥ dim), so the
    extremes are exact to round-off. ``last``: the final Lanczos vector's Ritz vector for lam_min (a warm start)."""

    lam_min: float
    lam_max: float
    res_min: float
    res_max: float
    steps: int
    exact: bool
    ritz_min: object = None


def lanczos_extremes(matvec: Callable, dim: int, *, steps: int = 40, seed: int = 0, start=None) -> LanczosExtremes:
    """Lanczos with full reorthogonalisation on ``matvec: v -> H v`` (flat float64 torch vectors, H symmetric).

    A measured estimate: Ritz values lie inside the spectrum, so until convergence lam_min is ≥ the true λ_min and
    lam_max ≤ the true λ_max; θ ∓ residual is the safer side. ``start`` (a vector of length ``dim``) replaces the
    seeded Gaussian start (a warm start from a nearby operator's Ritz vector)."""
    import torch

    steps = int(min(steps, dim))
    if start is None:
        gen = torch.Generator().manual_seed(int(seed))
        q = torch.randn(dim, generator=gen, dtype=torch.float64)
    else:
        q = torch.as_tensor(start, dtype=torch.float64).reshape(-1).clone()
    q /= q.norm()
    Q = torch.zeros(steps, dim, dtype=torch.float64)
    alphas, betas = [], []
    b = 0.0
    for j in range(steps):
        Q[j] = q
        z = matvec(q)
        a = float(q @ z)
        alphas.append(a)
        z = z - Q[:j + 1].T @ (Q[:j + 1] @ z)                  # full reorthogonalisation (twice is enough)
        z = z - Q[:j + 1].T @ (Q[:j + 1] @ z)
        b = float(z.norm())
        if j == steps - 1 or b <= 1e-12 * max(abs(a), 1.0):
            break
        betas.append(b)
        q = z / b
    k = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[:k - 1], dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    ev, S = torch.linalg.eigh(T)
    exact = k >= dim or k < steps
    res_min = 0.0 if exact else b * abs(float(S[-1, 0]))
    res_max = 0.0 if exact else b * abs(float(S[-1, -1]))
    ritz = Q[:k].T @ S[:, 0]
    return LanczosExtremes(float(ev[0]), float(ev[-1]), res_min, res_max, k, exact, ritz)
