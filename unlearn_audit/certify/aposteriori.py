"""The a-posteriori certificate (DESIGN §2.4b): a rigorous bound on the linearisation error of HF-OCU, computed for
the forget set U being released from quantities replayed along the recorded training trajectory.

Notation (``sum`` retrain, DESIGN §2.2): Δ_t = w_t^{-U} − w_t (true retrain minus original), A_t = Σ_{u∈U} a_u(t)
(the approximator sum, which the unlearner adds), e_t = Δ_t − A_t (the error the certificate bounds), c(·) per-sample
clipping at C (identity when off), Π the projection onto ‖w‖ ≤ R (identity when off), D_i the Jacobian of c at
∇ℓ_i(w_t), p_t = w_t − η_t g_t the original's pre-projection point and q_t the linearised pre-projection difference,
so that A_{t+1} = JΠ(p_t) q_t. Writing the true pre-projection difference as q_t + r_t,

    e_{t+1} = [Π(p_t + q_t + r_t) − Π(p_t + q_t)] + [Π(p_t + q_t) − Π(p_t) − JΠ(p_t) q_t] − o_t

and, Π being non-expansive (projection onto a convex set), ‖e_{t+1}‖ ≤ ‖r_t‖ + π_t + ‖o_t‖ where π_t is the
projection's linearisation remainder, COMPUTED exactly along the replay (0 without projection), and o_t the
floating-point rounding of the recorded original step (w_{t+1} minus the exact step from the recorded w_t, measured in
float64). Split the retained batch B_t\\U into N_t (clipping provably inactive on the whole segment w_t → w_t + Δ_t:
‖∇ℓ_i(w_t)‖ + (λ + L_i)(‖A_t‖ + ε_t) < C, always true without clipping) and K_t (clipping may bind). Then

    r_t = (I − η_t H̄_t^N) e_t − (η_t/|B_t|) Σ_{i∈N_t} (H̄_i − H_i) A_t
          − (η_t/|B_t|) Σ_{i∈K_t} [c_i(w_t + Δ_t) − c_i(w_t) − D_i H_i A_t] + (η_t/|B_t|) Σ_{u∈U∩B_t} D_u ∇²ℓ_u(w_t) A_t

with H̄_i = ∫₀¹ ∇²ℓ_i(w_t + sΔ_t) ds and H̄_t^N = (1/|B_t|) Σ_{i∈N_t} H̄_i. Bounds used, each rigorous:

* ρ_t ≥ ‖I − η_t H̄_t^N‖: H̄_t^N has spectrum in [λ c_t, λ c_t + L_t] with c_t = |N_t|/|B_t| and
  L_t = λ_max(Σ_{i∈B_t} x̃_i x̃_iᵀ)/(2|B_t|) (each CE Hessian is x̃x̃ᵀ ⊗ (diag p − ppᵀ), the softmax covariance has
  norm ≤ 1/2, and the retained part of the batch's second moment is dominated by the whole batch's), so
  ρ_t = max(|1 − η_t λ c_t|, |1 − η_t (λ c_t + L_t)|).
* Third derivative of softmax CE: D³ℓ_i[a, b, z] is the third cumulant under p of (a x̃_i, b x̃_i, z x̃_i) (logit
  directions); a symmetric trilinear form's norm is its sup over one direction (Banach), and the third central moment
  of a variable of range r ≤ √2‖s‖ is at most r³/(6√3), so |D³ℓ_i[a, b, z]| ≤ κ ‖a x̃_i‖ ‖b x̃_i‖ ‖z x̃_i‖ with
  κ = 2√2/(6√3) ≈ 0.2722. Hence ‖(H̄_i − H_i) A_t‖ ≤ (κ/2) ‖Δ_t‖ ‖x̃_i‖² ‖A_t x̃_i‖ (``perturbation="directional"``,
  the default: ‖A_t x̃_i‖ is replayed) ≤ (M_i/2) ‖Δ_t‖ ‖A_t‖ with M_i = κ‖x̃_i‖³ (``perturbation="uniform"``, the
  design's M = 0.272‖x̃‖³ form). ‖Δ_t‖ ≤ ‖A_t‖ + ε_t. The λ part of the Hessian is constant and cancels.
* K_t: c is 1-Lipschitz and ∇ℓ_i is (λ + L_i)-Lipschitz (L_i = ‖x̃_i‖²/2), ‖D_i‖ ≤ 1, so each term is at most
  (λ + L_i)(‖Δ_t‖ + ‖A_t‖) ≤ (λ + L_i)(2‖A_t‖ + ε_t). Per-sample clipping that binds therefore costs a first-order
  term: choose C above the gradient norms (or no clipping) for a tight certificate.
* The injection-step term ‖(1/|B_t|) Σ_{u∈U∩B_t} D_u ∇²ℓ_u(w_t) A_t‖ is computed exactly in the replay.

Together, with ε_0 = 0:

    ε_{t+1} = ρ_t ε_t + η_t [ P_t (‖A_t‖ + ε_t) + I_t + Σ_{i∈K_t} (λ + L_i)(2‖A_t‖ + ε_t)/|B_t| ] + π_t + ‖o_t‖ + s_t

P_t = (κ/2)(1/|B_t|) Σ_{i∈N_t} ‖x̃_i‖² ‖A_t x̃_i‖ (directional), I_t the injection-step term, s_t the float rounding
of the retrain reference itself (a model: 2u‖w'_{t+1}‖ + γ_k η_t ḡ_t with the probabilistic γ_k = 4√k·u of
Higham & Mary 2019 (:func:`rounding_gamma`), k = D + |B_t| + K + 4 the longest dot product, u the unit round-off of
the training dtype, ḡ_t the mean per-sample gradient norm bound). The certified sensitivity is
Δ(U) = ε_T + ‖A_T − A_T^{stored}‖ + u‖w̄‖: the second term is the measured gap between the float64 replay and
the float32 approximator sum the unlearner actually added, the third the rounding of w̄ = w_T + A.

Data dependence: the bound depends on the training data and on U (as Guo et al.'s data-dependent bound does); σ
calibrated to it can itself reveal something about D and U. The certificate records this.

When the recursion explodes (the quadratic term P_t‖A_t‖ outgrows the contraction 1 − ρ_t), ε_T is useless; if it is
not finite or exceeds the worst-case bound 2b_T of DESIGN §2.4 for the same U, :class:`NotCertifiable` is raised with
the reason (never an astronomical σ). The worst-case bound stays available as a named option.

The plug-in variant (``plug_in_terms``) needs no weight trajectory: ‖A_t‖ ≤ b_t from the a-priori recursion, I_t ≤
(1/|B_t|) Σ_u (λ + L_u) b_t, P_t ≤ (1/|B_t|) Σ_{i∈N_t} (M_i/2) b_t; looser, and it covers neither binding clipping nor
projection (their terms need the trajectory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from unlearn_audit.certify.bounds import SensitivityCertificate, _const, _positions, forget_digest
from unlearn_audit.certify.errors import CertificationError
from unlearn_audit.training.schedule import Schedule

__all__ = ["A_POSTERIORI_BOUND", "A_POSTERIORI_MEASURED_BOUND", "KAPPA_SOFTMAX", "MeasuredReplayTerms",
           "NotCertifiable", "ReplayTerms", "a_posteriori_certificate", "a_posteriori_recursion",
           "measured_certificate", "measured_recursion", "plug_in_terms", "unit_roundoff"]

KAPPA_SOFTMAX = 2.0 * math.sqrt(2.0) / (6.0 * math.sqrt(3.0))       # ≈ 0.2722
A_POSTERIORI_BOUND = ("a-posteriori linearisation-error recursion (DESIGN 2.4b): eps_{t+1} = rho_t eps_t + eta_t "
                      "[P_t (||A_t|| + eps_t) + I_t + K_t] + pi_t + ||o_t|| + s_t, eps_0 = 0, "
                      "Delta = eps_T + state gap")
PERTURBATIONS = ("directional", "uniform")


class NotCertifiable(CertificationError):
    """The a-posteriori recursion blew up for this U in this training regime (message says why and what to do)."""


ROUNDING_LAMBDA = 4.0


def rounding_gamma(k: int, u: float) -> float:
    """Relative error model of a float dot product of length k: λ√k·u with λ = 4 (Higham & Mary 2019: the error of
    a length-k sum exceeds λ√k·u with probability at most 2·exp(−λ²(1 − u)²/2) ≈ 7e-4 per entry, and an error vector's
    norm concentrates far below its entries' worst case). The deterministic bound k·u/(1 − k·u) is 30× larger at
    k ≈ 800 and swamps the certificate of a single deletion in float32; this model is a stated assumption, not a
    proof (it applies to the retrain reference's own rounding only: the original trajectory's rounding is measured)."""
    return ROUNDING_LAMBDA * math.sqrt(k) * u


def unit_roundoff(dtype_name: str) -> float:
    """Unit round-off u of a float dtype name ('float32', 'torch.float32', 'float64', ...)."""
    name = str(dtype_name).replace("torch.", "")
    table = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
    if name not in table:
        raise CertificationError(f"unknown training dtype '{dtype_name}' for the rounding slack")
    return table[name]


@dataclass(frozen=True)
class ReplayTerms:
    """Per-step quantities of one replay of U's summed approximator along the recorded trajectory (all float64).

    Per step t = 0..T-1 (``norm_A`` has T + 1 entries, A_0..A_T):
        lrs: η_t. batch_sizes: |B_t|. norm_A: ‖A_t‖. injection: I_t = ‖(1/|B_t|) Σ_{u∈U∩B_t} D_u ∇²ℓ_u(w_t) A_t‖.
        gram_top: λ_max(Σ_{i∈B_t} x̃_i x̃_iᵀ) over the whole batch (U-independent).
        retained_x2[t]: ‖x̃_i‖² for i ∈ B_t\\U. retained_ax[t]: ‖A_t x̃_i‖ (A_t as a K×(D+1) matrix), same order.
        retained_gnorm[t]: an upper bound on ‖∇ℓ_i(w_t)‖, same order (only when clipping is on, else None).
        proj_remainder: π_t (0 without projection). rounding: ‖o_t‖ measured (NaN if the trajectory has no w_{t+1}).
        ref_round: s_t without its ε part (see module docstring).
    Scalars: lam λ, clip_norm C or None, projection (bool), state_gap ‖A_T − A_T^stored‖ (None if not measured),
    state_norm ‖w_T + A_T‖, u unit round-off of the training dtype, n_classes K, n_features D, max_x2 max‖x̃‖² over
    the training set, source "replay" or "plug-in".
    """

    lrs: np.ndarray
    batch_sizes: np.ndarray
    norm_A: np.ndarray
    injection: np.ndarray
    gram_top: np.ndarray
    retained_x2: tuple
    retained_ax: tuple
    retained_gnorm: tuple | None
    proj_remainder: np.ndarray
    rounding: np.ndarray
    ref_round: np.ndarray
    lam: float
    clip_norm: float | None
    projection: bool
    state_gap: float | None
    state_norm: float
    u: float
    n_classes: int
    n_features: int
    max_x2: float
    source: str = "replay"

    @property
    def n_steps(self) -> int:
        return int(len(self.lrs))


@dataclass(frozen=True)
class RecursionOutcome:
    """ε_0..ε_T and diagnostics of one evaluation of the recursion."""

    eps: np.ndarray
    growth: np.ndarray            # ρ_t + η_t P_t + η_t Σ_K (λ + L_i)/|B_t|: the per-step factor multiplying ε_t
    n_binding: int                # Σ_t |K_t|: retained records whose clipping could bind
    terms: dict                   # summed contributions (for the certificate's constants)


def a_posteriori_recursion(terms: ReplayTerms, *, perturbation: str = "directional") -> RecursionOutcome:
    """Evaluate the ε recursion of the module docstring (a forward loop in float64; no closed forms)."""
    if perturbation not in PERTURBATIONS:
        raise CertificationError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, got {perturbation!r}")
    if terms.clip_norm is None or terms.retained_gnorm is None:
        return _recursion_no_binding(terms, perturbation)
    T = terms.n_steps
    lam, C = float(terms.lam), terms.clip_norm
    eps = np.zeros(T + 1)
    growth = np.zeros(T)
    n_binding = 0
    sums = {"contraction_loss": 0.0, "perturbation": 0.0, "injection": 0.0, "clipping": 0.0, "projection": 0.0,
            "rounding": 0.0}
    u = float(terms.u)
    e = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T):
            eta, b = float(terms.lrs[t]), float(terms.batch_sizes[t])
            a = float(terms.norm_A[t])
            x2 = np.asarray(terms.retained_x2[t], dtype=np.float64)
            ax = np.asarray(terms.retained_ax[t], dtype=np.float64)
            Li = x2 / 2.0
            if C is not None and terms.retained_gnorm is not None:
                gn = np.asarray(terms.retained_gnorm[t], dtype=np.float64)
                binding = gn + (lam + Li) * (a + e) >= C
            else:
                binding = np.zeros(len(x2), dtype=bool)
            keep = ~binding
            n_binding += int(binding.sum())
            c = float(keep.sum()) / b
            Lt = float(terms.gram_top[t]) / (2.0 * b)
            rho = max(abs(1.0 - eta * lam * c), abs(1.0 - eta * (lam * c + Lt)))
            if perturbation == "directional":
                P = KAPPA_SOFTMAX / 2.0 * float((x2[keep] * ax[keep]).sum()) / b
            else:
                P = KAPPA_SOFTMAX / 2.0 * float((x2[keep] ** 1.5).sum()) / b * a
            kb = float((lam + Li[binding]).sum()) / b
            growth[t] = rho + eta * P + eta * kb
            pert = eta * P * (a + e)
            inj = eta * float(terms.injection[t])
            clip_term = eta * kb * (2.0 * a + e)
            proj = float(terms.proj_remainder[t])
            rnd = float(terms.rounding[t]) if math.isfinite(float(terms.rounding[t])) else 0.0
            rnd += float(terms.ref_round[t]) + 2.0 * u * (float(terms.norm_A[t + 1]) + e)
            e_next = rho * e + pert + inj + clip_term + proj + rnd
            sums["contraction_loss"] += (rho - 1.0) * e
            sums["perturbation"] += pert
            sums["injection"] += inj
            sums["clipping"] += clip_term
            sums["projection"] += proj
            sums["rounding"] += rnd
            e = e_next
            eps[t + 1] = e
    return RecursionOutcome(eps, growth, n_binding, sums)


def _affine_scan(g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """ε_0 = 0, ε_{t+1} = g_t ε_t + h_t (float64, overflow to inf allowed: the caller refuses it)."""
    eps = np.zeros(len(g) + 1)
    e = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for t, (gt, ht) in enumerate(zip(np.asarray(g, np.float64).tolist(), np.asarray(h, np.float64).tolist())):
            e = gt * e + ht
            eps[t + 1] = e
    return eps


def _recursion_no_binding(terms: ReplayTerms, perturbation: str) -> RecursionOutcome:
    """The recursion when no per-sample clipping can bind (K_t empty): ε_{t+1} = g_t ε_t + h_t is affine in ε_t with
    coefficients that do not depend on ε, so they are computed for all steps at once and only the scalar affine
    recursion runs step by step (the same arithmetic as the general loop, a certified release's per-request cost)."""
    T = terms.n_steps
    lrs = np.asarray(terms.lrs, dtype=np.float64)
    b = np.asarray(terms.batch_sizes, dtype=np.float64)
    a = np.asarray(terms.norm_A, dtype=np.float64)
    lam, u = float(terms.lam), float(terms.u)
    counts = np.array([len(v) for v in terms.retained_x2], dtype=np.int64)
    x2 = np.concatenate(terms.retained_x2).astype(np.float64) if T else np.zeros(0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if T else np.zeros(0, np.int64)
    if perturbation == "directional":
        ax = np.concatenate(terms.retained_ax).astype(np.float64) if T else np.zeros(0)
        per_rec = x2 * ax
    else:
        per_rec = x2 ** 1.5
    sums = np.zeros(T)
    nz = counts > 0
    if per_rec.size:
        sums[nz] = np.add.reduceat(per_rec, starts[nz])
    P = KAPPA_SOFTMAX / 2.0 * sums / b
    if perturbation != "directional":
        P = P * a[:T]
    c = counts / b
    Lt = np.asarray(terms.gram_top, dtype=np.float64) / (2.0 * b)
    rho = np.maximum(np.abs(1.0 - lrs * lam * c), np.abs(1.0 - lrs * (lam * c + Lt)))
    growth = rho + lrs * P
    rounding = np.asarray(terms.rounding, dtype=np.float64)
    rnd_base = np.where(np.isfinite(rounding), rounding, 0.0) + np.asarray(terms.ref_round, np.float64) \
        + 2.0 * u * a[1:]
    inj = lrs * np.asarray(terms.injection, dtype=np.float64)
    proj = np.asarray(terms.proj_remainder, dtype=np.float64)
    eps = _affine_scan(rho + lrs * P + 2.0 * u, lrs * P * a[:T] + inj + proj + rnd_base)
    with np.errstate(over="ignore", invalid="ignore"):
        e_prev = eps[:T]
        out = {"contraction_loss": float(((rho - 1.0) * e_prev).sum()),
               "perturbation": float((lrs * P * (a[:T] + e_prev)).sum()), "injection": float(inj.sum()),
               "clipping": 0.0, "projection": float(proj.sum()),
               "rounding": float((rnd_base + 2.0 * u * e_prev).sum())}
    return RecursionOutcome(eps, growth, 0, out)


def a_posteriori_certificate(terms: ReplayTerms, schedule: Schedule, forget_positions, *,
                             worst_case: SensitivityCertificate | None = None, perturbation: str = "directional",
                             model: str = "softmax_regression") -> SensitivityCertificate:
    """Δ(U) from the a-posteriori recursion, with every constant and its provenance.

    Args:
        terms: the replay of U (``unlearn_audit.hfocu.replay.replay_bound_terms``) or ``plug_in_terms``.
        schedule: the recorded schedule the replay ran on; forget_positions: U (training positions).
        worst_case: the §2.4 certificate for the same U; the a-posteriori bound is declared blown up when it exceeds
            it (NotCertifiable names the worst-case Δ as the alternative).
        perturbation: ``directional`` (replayed ‖A_t x̃_i‖) or ``uniform`` (M_i = κ‖x̃_i‖³).

    Raises:
        NotCertifiable: the recursion is not finite or exceeds the worst-case bound.
    """
    pos = _positions(schedule, forget_positions)
    if terms.n_steps != schedule.n_steps:
        raise CertificationError(f"the replay has {terms.n_steps} steps, the schedule {schedule.n_steps}")
    out = a_posteriori_recursion(terms, perturbation=perturbation)
    eps_T = float(out.eps[-1])
    gap = float(terms.state_gap) if terms.state_gap is not None else 0.0
    delta = eps_T + gap + terms.u * float(terms.state_norm)
    wc = None if worst_case is None else float(worst_case.sensitivity)
    _refuse_blow_up(delta, wc, float(terms.state_norm), out.growth, out.n_binding, terms.n_steps)
    mx = math.sqrt(terms.max_x2)
    constants = {
        "kappa": _const(KAPPA_SOFTMAX, "analytic",
                        "|D^3 CE[a,b,z]| <= kappa ||a x~|| ||b x~|| ||z x~||, kappa = 2 sqrt2/(6 sqrt3): third "
                        "cumulant of a logit direction of range <= sqrt2 ||s||, sup over one direction (Banach)"),
        "M": _const(KAPPA_SOFTMAX * mx ** 3, "analytic",
                    "Hessian-Lipschitz constant of the per-sample CE, 0.272 max||x~||^3 (x~ = (x, 1), bias)"
                    + ("; the directional form below uses ||A_t x~_i|| instead of ||A_t|| ||x~_i||"
                       if perturbation == "directional" else "")),
        "L_max": _const(float(np.max(terms.gram_top / (2.0 * terms.batch_sizes))) if terms.n_steps else 0.0,
                        "analytic", "max_t lambda_max(sum_B x~ x~^T)/(2|B_t|): CE Hessian of the batch <= that, "
                                    "softmax covariance norm <= 1/2; rho_t = max(|1-eta lam c_t|, "
                                    "|1-eta(lam c_t + L_t)|), c_t = |N_t|/|B_t|"),
        "lam": _const(terms.lam, "enforced", "regularisation strength of the training objective (all parameters)"),
        "max_A": _const(float(np.max(terms.norm_A)), "measured" if terms.source == "replay" else "analytic",
                        "max_t ||A_t||, A_t replayed in float64 along the recorded trajectory (T Hessian-vector "
                        "products on one vector)" if terms.source == "replay" else
                        "max_t b_t, the a-priori bound on ||A_t|| (plug-in: no trajectory)"),
        "injection_sum": _const(out.terms["injection"], "measured" if terms.source == "replay" else "analytic",
                                "sum_t eta_t ||(1/|B_t|) sum_{u in U cap B_t} D_u Hess l_u(w_t) A_t||"
                                + (" computed exactly in the replay" if terms.source == "replay" else
                                   " bounded by (lam + L_u) b_t")),
        "perturbation_sum": _const(out.terms["perturbation"], "analytic",
                                   f"sum_t eta_t P_t (||A_t|| + eps_t), perturbation = {perturbation}"),
        "clipping_sum": _const(out.terms["clipping"], "analytic",
                               f"retained records whose per-sample clipping may bind ({out.n_binding} record-steps):"
                               " (lam + L_i)(2||A_t|| + eps_t)/|B_t| each"),
        "projection_sum": _const(out.terms["projection"], "measured",
                                 "sum_t ||Pi(p_t+q_t) - Pi(p_t) - JPi(p_t) q_t||, computed in float64 (0 without "
                                 "projection; the projection onto a ball is non-expansive)"),
        "rounding_sum": _const(out.terms["rounding"], "analytic",
                               "measured float rounding of the recorded original steps ||o_t|| plus a probabilistic "
                               "float model of the retrain reference's rounding (4 sqrt(k) u per dot product, Higham & "
                               f"Mary 2019; unit round-off u = {terms.u:.3g}): a stated assumption, not a proof"),
        **_closing_constants(out, eps_T, gap, terms.state_gap is not None, "analytic",
                             "rho_t + eta_t (P_t + K_t)"),
    }
    if terms.clip_norm is not None:
        constants["C"] = _const(terms.clip_norm, "enforced", "per-sample clipping at norm C")
    if wc is not None:
        constants["worst_case_Delta"] = _const(wc, "analytic", "the DESIGN 2.4 first-order bound 2 b_T, same U")
    return SensitivityCertificate(
        bound=A_POSTERIORI_BOUND + f" [{terms.source}, perturbation={perturbation}]",
        sensitivity=float(delta), constants=constants, schedule_digest=schedule.digest(),
        forget_digest=forget_digest(pos), n_forget=int(pos.size), model=model)


def plug_in_terms(schedule: Schedule, forget_positions, *, lam: float, G: float, n_classes: int, n_features: int,
                  u: float, state_norm: float, weight_norm: float, x2_train: np.ndarray | None = None,
                  max_x2: float | None = None, gram_top: np.ndarray | None = None) -> ReplayTerms:
    """ReplayTerms without a trajectory: ‖A_t‖ ≤ b_t (a-priori, ρ^A_t ≥ ‖I − η_t H_t‖ of the full batch) and the
    data-dependent terms bounded through b_t (see the module docstring). Covers neither clipping that may bind nor
    projection (the caller refuses those). Rounding: the float model s_t for the original trajectory too (nothing
    recorded to measure it on).

    Args:
        G: bound on every injected gradient norm. u: unit round-off of the training dtype. state_norm: ‖w̄‖ (or a
        bound). weight_norm: max_t ‖w_t‖ (for the rounding model). x2_train: ‖x̃_i‖² of every training record
        (position order), or ``max_x2`` for all of them. gram_top: λ_max(Σ_{i∈B_t} x̃x̃ᵀ) per step (default: the
        trace bound Σ_{i∈B_t} ‖x̃_i‖²).
    """
    pos = _positions(schedule, forget_positions)
    if x2_train is None:
        if max_x2 is None:
            raise CertificationError("plug_in_terms needs x2_train or max_x2")
        x2_train = np.full(schedule.n_train, float(max_x2))
    x2_train = np.asarray(x2_train, dtype=np.float64)
    forget = np.zeros(schedule.n_train, dtype=bool)
    forget[pos] = True
    T = schedule.n_steps
    lrs = np.asarray(schedule.lrs, dtype=np.float64)
    sizes = schedule.batch_sizes().astype(np.float64)
    if gram_top is None:
        gram_top = np.array([x2_train[bt].sum() for bt in schedule.batches])
    b = np.zeros(T + 1)
    inj = np.zeros(T)
    ref = np.zeros(T)
    rx2, rax = [], []
    for t, bt in enumerate(schedule.batches):
        hit = forget[bt]
        Lt = gram_top[t] / (2.0 * sizes[t])
        rhoA = max(abs(1.0 - lrs[t] * lam), abs(1.0 - lrs[t] * (lam + Lt)))
        inj[t] = float((lam + x2_train[bt[hit]] / 2.0).sum()) / sizes[t] * b[t]
        xr = x2_train[bt[~hit]]
        rx2.append(xr)
        rax.append(np.sqrt(xr) * b[t])                     # ‖A_t x̃_i‖ ≤ ‖A_t‖ ‖x̃_i‖ ≤ b_t ‖x̃_i‖
        b[t + 1] = rhoA * b[t] + lrs[t] * hit.sum() * G / sizes[t]
        k = n_features + len(bt) + n_classes + 4
        ref[t] = 2.0 * (2.0 * u * weight_norm + rounding_gamma(k, u) * lrs[t] * G)   # original and retrain
    return ReplayTerms(lrs=lrs, batch_sizes=sizes, norm_A=b, injection=inj, gram_top=np.asarray(gram_top, float),
                       retained_x2=tuple(rx2), retained_ax=tuple(rax), retained_gnorm=None,
                       proj_remainder=np.zeros(T), rounding=np.zeros(T), ref_round=ref, lam=float(lam),
                       clip_norm=None, projection=False, state_gap=None, state_norm=float(state_norm), u=float(u),
                       n_classes=int(n_classes), n_features=int(n_features), max_x2=float(x2_train.max()),
                       source="plug-in")


def _closing_constants(out: RecursionOutcome, eps_T: float, gap: float, gap_measured: bool, source: str,
                       growth: str) -> dict:
    """The constants every a-posteriori certificate ends with: the state gap, ε_T, the largest growth factor (its
    formula given) and the data-dependence statement."""
    return {
        "state_gap": _const(gap, "measured", "||A_T(float64 replay) - approximator sum actually added (stored)||"
                            if gap_measured else "not measured (no stored sum given)"),
        "eps_T": _const(eps_T, source, "the recursion's value at T"),
        "max_growth": _const(float(out.growth.max()) if len(out.growth) else 0.0, source,
                             f"max_t {growth}: above 1 the recursion amplifies"),
        "data_dependent": _const(1.0, "analytic",
                                 "Delta depends on the training data and on U (a data-dependent bound, as Guo et al. "
                                 "2020): the sigma calibrated to it can itself reveal something about them"),
    }


def _refuse_blow_up(delta: float, wc: float | None, state_norm: float, growth: np.ndarray, n_binding: int,
                    n_steps: int, *, remedy: str = "smaller step sizes (training.lr) or a larger lam make it "
                                                  "certifiable") -> None:
    """Raise NotCertifiable (with where and why) when Δ is not finite, exceeds the worst-case bound ``wc``, or
    exceeds the model's own norm (noise calibrated to it would drown the model)."""
    vast = math.isfinite(delta) and delta >= state_norm > 0
    if math.isfinite(delta) and not (wc is not None and delta > wc) and not vast:
        return
    above = np.nonzero(growth > 1.0)[0]
    where = (f"the per-step growth factor exceeds 1 at {len(above)} of {n_steps} steps (first at step "
             f"{int(above[0])}, max {float(growth.max()):.3g})" if len(above) else
             f"the accumulated first-order terms dominate (max growth factor "
             f"{float(growth.max()) if len(growth) else 0.0:.3g})")
    alt = (f"; the worst-case bound (privacy.bound = 'worst_case') certifies it at Delta = {wc:.4g}"
           if wc is not None and math.isfinite(wc) else "")
    clip = (f"; per-sample clipping may bind for {n_binding} retained record-steps (first-order cost)"
            if n_binding else "")
    if not math.isfinite(delta):
        what = "is not finite"
    elif wc is not None and delta > wc:
        what = f"({delta:.4g}) exceeds the worst-case bound"
    else:
        what = (f"({delta:.4g}) exceeds the norm of the model itself ({state_norm:.4g}): noise calibrated to it "
                "would drown the model")
    raise NotCertifiable(f"not certifiable in this regime: the a-posteriori bound on the linearisation error {what}: "
                         f"{where}{clip}{alt}; {remedy}")


# ---------------------------------------------------------------------------------------------------------------------
# other models: the same recursion with measured constants (labelled measured, not rigorous)
A_POSTERIORI_MEASURED_BOUND = ("a-posteriori linearisation-error recursion with MEASURED constants (not rigorous): "
                               "eps_{t+1} = rho_t eps_t + eta_t [c_t (M/2)(||A_t|| + eps_t)||A_t|| + I_t] + r_t, "
                               "eps_0 = 0, Delta = eps_T + state gap")


@dataclass(frozen=True)
class MeasuredReplayTerms:
    """Per-step quantities of a replay of U's summed approximator for a model without analytic constants (MLP, CNN):
    the §2.4b recursion with ρ_t and M measured along the replay instead of derived (all float64).

    Per step t = 0..T-1 (``norm_A`` has T + 1 entries): lrs η_t; batch_sizes |B_t|; norm_A ‖A_t‖; injection
    I_t = ‖(1/|B_t|) Σ_{u∈U∩B_t} ∇²ℓ_u(w_t) A_t‖ (exact, Hessian-vector products); retained c_t = |B_t\\U|/|B_t|;
    lam_min/lam_max the extreme eigenvalues of the whole batch's mean Hessian H_B at w_t (Lanczos Ritz values moved
    outwards by their residuals; U-independent); removed_norm ‖(1/|B_t|) Σ_{u∈U∩B_t} ∇²ℓ_u(w_t)‖ (power iteration on
    the removed records alone, 0 where U misses the step), so that, with c_t H_N = H_B − (1/|B_t|) Σ_u ∇²ℓ_u,
    ρ_t = ‖I − η_t H_B‖ + η_t removed_norm_t ≥ ‖I − η_t c_t H_N‖ (triangle inequality); hess_lipschitz M_t = max over
    probe directions r ∈ {A_t, random of norm ‖A_t‖} of ‖(H_N(w_t + r) − H_N(w_t)) A_t‖ / (‖r‖ ‖A_t‖) at sampled
    steps (NaN elsewhere); rounding ‖o_t‖ measured; ref_round the retrain reference's rounding model. Scalars as in
    :class:`ReplayTerms`; ``lanczos_steps`` per step.
    """

    lrs: np.ndarray
    batch_sizes: np.ndarray
    norm_A: np.ndarray
    injection: np.ndarray
    retained: np.ndarray
    lam_min: np.ndarray
    lam_max: np.ndarray
    removed_norm: np.ndarray
    hess_lipschitz: np.ndarray
    rounding: np.ndarray
    ref_round: np.ndarray
    state_gap: float | None
    state_norm: float
    u: float
    lanczos_steps: int
    model: str = "generic"

    @property
    def n_steps(self) -> int:
        return int(len(self.lrs))

    @property
    def rho(self) -> np.ndarray:
        """ρ_t = max(|1 − η_t λ_min(H_B)|, |1 − η_t λ_max(H_B)|) + η_t removed_norm_t ≥ ‖I − η_t c_t H_N‖."""
        whole = np.maximum(np.abs(1.0 - self.lrs * self.lam_min), np.abs(1.0 - self.lrs * self.lam_max))
        return whole + self.lrs * self.removed_norm

    @property
    def M(self) -> float:
        """The Hessian-Lipschitz constant used: the largest M_t measured along the replay."""
        m = self.hess_lipschitz[np.isfinite(self.hess_lipschitz)]
        return float(m.max()) if m.size else 0.0


def measured_recursion(terms: MeasuredReplayTerms) -> RecursionOutcome:
    """ε_{t+1} = ρ_t ε_t + η_t [c_t (M/2)(‖A_t‖ + ε_t)‖A_t‖ + I_t] + ‖o_t‖ + s_t + 2u(‖A_{t+1}‖ + ε_t): the
    §2.4b recursion, an affine scalar loop (coefficients for all steps at once)."""
    T = terms.n_steps
    lrs, a, u = np.asarray(terms.lrs, np.float64), np.asarray(terms.norm_A, np.float64), float(terms.u)
    rho = terms.rho
    P = terms.retained * terms.M / 2.0 * a[:T]
    rounding = np.asarray(terms.rounding, np.float64)
    rnd = np.where(np.isfinite(rounding), rounding, 0.0) + np.asarray(terms.ref_round, np.float64) + 2.0 * u * a[1:]
    inj = lrs * np.asarray(terms.injection, np.float64)
    growth = rho + lrs * P
    eps = _affine_scan(growth + 2.0 * u, lrs * P * a[:T] + inj + rnd)
    with np.errstate(over="ignore", invalid="ignore"):
        e_prev = eps[:T]
        sums = {"contraction_loss": float(((rho - 1.0) * e_prev).sum()),
                "perturbation": float((lrs * P * (a[:T] + e_prev)).sum()), "injection": float(inj.sum()),
                "clipping": 0.0, "projection": 0.0, "rounding": float((rnd + 2.0 * u * e_prev).sum())}
    return RecursionOutcome(eps, growth, 0, sums)


def measured_certificate(terms: MeasuredReplayTerms, schedule: Schedule, forget_positions, *,
                         worst_case: SensitivityCertificate | None = None) -> SensitivityCertificate:
    """Δ(U) from :func:`measured_recursion`, every constant labelled measured (an estimate, not a proof: Lanczos
    Ritz values and finite-difference Hessian-Lipschitz probes can miss the worst direction). Raises NotCertifiable
    as :func:`a_posteriori_certificate` does."""
    pos = _positions(schedule, forget_positions)
    if terms.n_steps != schedule.n_steps:
        raise CertificationError(f"the replay has {terms.n_steps} steps, the schedule {schedule.n_steps}")
    out = measured_recursion(terms)
    eps_T = float(out.eps[-1])
    gap = float(terms.state_gap) if terms.state_gap is not None else 0.0
    delta = eps_T + gap + terms.u * float(terms.state_norm)
    wc = None if worst_case is None else float(worst_case.sensitivity)
    _refuse_blow_up(delta, wc, float(terms.state_norm), out.growth, 0, terms.n_steps,
                    remedy="smaller step sizes (training.lr), a larger lam or fewer deletions per release make it "
                           "certifiable; a non-convex model whose Hessian has negative eigenvalues grows the error "
                           "at every step")
    rho = terms.rho
    constants = {
        "rho_max": _const(float(rho.max()) if terms.n_steps else 0.0, "measured",
                          f"max_t of ||I - eta_t H_B(w_t)|| + eta_t ||(1/|B_t|) sum_u Hess l_u(w_t)|| >= "
                          f"||I - eta_t c_t H_N||: extreme eigenvalues of the batch's mean Hessian at every recorded "
                          f"w_t by Lanczos ({terms.lanczos_steps} steps, Ritz values moved outwards by their "
                          "residuals), the removed records' part by power iteration; at w_t, not along the segment "
                          "to the retrain"),
        "lam_min": _const(float(np.min(terms.lam_min)) if terms.n_steps else 0.0, "measured",
                          "smallest batch Hessian eigenvalue seen (negative: non-convex, the error grows)"),
        "M": _const(terms.M, "measured",
                    "Hessian-Lipschitz constant: max over sampled steps and probe directions r in {A_t, random of "
                    "norm ||A_t||} of ||(H_N(w_t + r) - H_N(w_t)) A_t|| / (||r|| ||A_t||) (finite differences along "
                    "the replay)"),
        "max_A": _const(float(np.max(terms.norm_A)), "measured",
                        "max_t ||A_t||, A_t replayed in float64 along the recorded trajectory"),
        "injection_sum": _const(out.terms["injection"], "measured",
                                "sum_t eta_t ||(1/|B_t|) sum_{u in U cap B_t} Hess l_u(w_t) A_t|| (exact HVPs)"),
        "perturbation_sum": _const(out.terms["perturbation"], "measured",
                                   "sum_t eta_t c_t (M/2)(||A_t|| + eps_t) ||A_t||"),
        "rounding_sum": _const(out.terms["rounding"], "analytic",
                               "measured float rounding of the recorded original steps plus a probabilistic float "
                               f"model of the retrain reference's rounding (unit round-off u = {terms.u:.3g})"),
        **_closing_constants(out, eps_T, gap, terms.state_gap is not None, "measured",
                             "rho_t + eta_t c_t (M/2)||A_t||"),
    }
    if wc is not None:
        constants["worst_case_Delta"] = _const(wc, "measured", "the DESIGN 2.4 first-order bound 2 b_T, same U")
    return SensitivityCertificate(
        bound=A_POSTERIORI_MEASURED_BOUND, sensitivity=float(delta), constants=constants,
        schedule_digest=schedule.digest(), forget_digest=forget_digest(pos), n_forget=int(pos.size),
        model=terms.model)
