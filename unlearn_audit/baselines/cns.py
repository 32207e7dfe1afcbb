"""Certified Newton step for deep nets (Zhang, Dong, Wang & Li, ICML 2024), implemented from the stated math.

Objective of the retained data D_r: L(w, D_r) = (1/|D_r|) Σ_{i∈D_r} CE + (λ_train/2)‖w‖² (our per-sample loss,
DESIGN §2.1), H_r its Hessian (λ_train I included). One request removes U_k and takes one Newton step from the
current estimate (the trained w* for the first request; "sequential requests start from the previous estimate"):

    w̃_k = w̃_{k−1} − (H_r(w̃_{k−1}) + λI)⁻¹ ∇L(w̃_{k−1}, D_r)

with λ the "local convex approximation" damping (a true λI, not the public code's per-tensor norm term) and the
inverse applied by LiSSA (:mod:`unlearn_audit.baselines.lissa`).

Error bound (their Theorem; re-derived: with g = H̄ (w − w̃*) for the mean-value Hessian H̄ on the segment and
‖H_r(w) − H̄‖ ≤ M‖w − w̃*‖/2 ≤ MR, ‖w − w̃*‖ ≤ 2R): for a stationary point w̃* of L(·, D_r) in the ball ‖w‖ ≤ R,

    ‖w̃_exact − w̃*‖ ≤ 2R(MR + λ)/(λ + λ_min)

M the Hessian-Lipschitz constant, λ_min the smallest eigenvalue of H_r at the step's start. The LiSSA error is added
as an a-posteriori bound, ‖v − A⁻¹g‖ ≤ ‖A v − g‖/(λ + λ_min) (A = H_r + λI, one exact HVP), in place of the paper's
concentration term: it is deterministic given λ_min, and it also catches a truncated series. The bound does not
depend on the starting point, so after sequential requests the last request's bound covers the release.

Constants and provenance: R "enforced" when the model was trained with ``weight_norm_bound`` (and the estimate is
projected back onto the ball: nonexpansive towards any point in it, so the bound survives), otherwise "measured" as
the largest norm seen (w*, every estimate) — the retrained model's norm is not known to the unlearner, so that is an
assumption, labelled as such. M "measured": power iteration on H(w + t u) − H(w) over sampled directions and radii,
and along each actual step (a lower estimate of the true sup). λ_min "measured": Lanczos at the step's start;
λ_min is "analytic" for softmax regression (convex cross-entropy: λ_min ≥ λ_train). σ from the shared analytic
Gaussian mechanism for the config's (ε, δ).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from unlearn_audit.baselines.hessian import DTYPE, DataHessian, extreme_eigenvalues, resolve_hvp_dtype
from unlearn_audit.baselines.lissa import chain_hvps, lissa_solve
from unlearn_audit.baselines.retained import TrainingSetBaseline
from unlearn_audit.certify import calibrate, power_norm
from unlearn_audit.models import FunctionalModel
from unlearn_audit.training.sgd import project_ball

BOUND = ("Zhang et al. 2024 (ICML) Newton-step bound 2R(MR+lambda)/(lambda+lambda_min) at the last request's start, "
         "plus the LiSSA error as the a-posteriori residual bound ||A v - g|| / (lambda+lambda_min)")


def hessian_lipschitz(make_hessian, w: torch.Tensor, directions: list[torch.Tensor], radii: list[float], *,
                      iters: int = 20, seed: int = 0) -> float:
    """max over pairs (w, w + t u) of ‖H(w + t u) − H(w)‖₂ / t (u unit): a measured Hessian-Lipschitz estimate."""
    h0 = make_hessian(w)
    best = 0.0
    for i, u in enumerate(directions):
        u = u / u.norm()
        for t in radii:
            h1 = make_hessian(w + t * u)
            diff = power_norm(lambda v: h1.matvec(v) - h0.matvec(v), len(w), iters=iters, seed=seed + i)
            best = max(best, diff / t)
    return best


class CertifiedNewtonStep(TrainingSetBaseline):
    """CNS unlearner: ``fit(w, x, y)`` (precompute: measured M, LiSSA scale), ``delete(positions)`` per request,
    ``certificate(epsilon, delta)`` for the release after the requests so far.

    Args:
        model, lam: the model and the training λ (part of the objective).
        damping: the paper's λ (local convex approximation), default 0.01 as in their code.
        chains, depth, hessian_batch: LiSSA settings (paper code: 10, 1000, 10).
        scale: LiSSA scale; ``None`` = 1.25 × the largest |eigenvalue| measured on sampled Hessian mini-batches and
            on H_S (the series needs scale ≥ ‖H_batch + λI‖). The public code's fixed 1000 is a hidden damping.
        radius: the training weight-norm bound R if there was one (enforced), else ``None`` (measured).
    """

    name = "cns"

    def __init__(self, model: FunctionalModel, lam: float, *, damping: float = 0.01, chains: int = 10,
                 depth: int = 1000, hessian_batch: int = 10, scale: float | None = None,
                 radius: float | None = None, seed: int = 0, lipschitz_directions: int = 1,
                 power_iters: int = 10, hvp_precision: str = "float64"):
        if damping < 0:
            raise ValueError("damping must be >= 0")
        self.model, self.lam, self.damping = model, float(lam), float(damping)
        self.hvp_dtype = resolve_hvp_dtype(model, hvp_precision)
        self.chains, self.depth, self.hessian_batch = int(chains), int(depth), int(hessian_batch)
        self.scale, self.radius, self.seed = scale, radius, int(seed)
        self.lipschitz_directions, self.power_iters = int(lipschitz_directions), int(power_iters)

    def fit(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        self._keep_training_set(w, x, y)
        self.requests_: list[dict] = []
        self.max_norm_ = float(self.w_.norm())
        d = self.model.dim
        start = time.perf_counter()
        h_all = self._hessian_at(self.w_)
        # Hessian-Lipschitz constant (measured): the gradient direction and random directions, two radii.
        gen = torch.Generator().manual_seed(self.seed)
        dirs = [h_all.gradient()] + [torch.randn(d, generator=gen, dtype=DTYPE)
                                     for _ in range(self.lipschitz_directions)]
        dirs = [u for u in dirs if float(u.norm()) > 0]
        r = self.radius if self.radius is not None else max(self.max_norm_, 1.0)
        self.M_ = hessian_lipschitz(self._hessian_at, self.w_, dirs, [0.05 * r, 0.5 * r], iters=self.power_iters,
                                    seed=self.seed)
        self.M_how_ = (f"max of ||H(w*+t u) - H(w*)||_2 / t by {self.power_iters} power iterations over {len(dirs)} "
                       "directions (the gradient and random) and t in {0.05R, 0.5R}, and along every Newton step "
                       "taken")
        # LiSSA scale: should bound ‖H_batch + λI‖ (each factor I − (H_batch + λI)/scale is then a contraction on
        # the positive part; up to 2·scale the recursion still does not blow up, and the residual term certifies
        # whatever it returns). Measured on H_S and sampled mini-batches; capped by the analytic bound for softmax.
        if self.scale is None:
            norms = [power_norm(h_all.matvec, d, iters=2 * self.power_iters, seed=self.seed)]
            for k in range(4):
                idx = torch.randint(self.n_, (1, self.hessian_batch), generator=gen)
                xb, yb = self.x_[idx], self.y_[idx]
                norms.append(power_norm(lambda v: chain_hvps(self.model, self.lam, self.w_, xb, yb, v[None],
                                                                     self.hvp_dtype)[0], d,
                                        iters=2 * self.power_iters, seed=self.seed + k))
            self.scale_ = 1.25 * (max(norms) + self.damping)
            self.scale_how_ = ("1.25 x (largest |eigenvalue| by power iteration over H_S and 4 sampled Hessian "
                               "mini-batches + lambda)")
            if self.model.kind == "softmax":
                cap = 1.25 * (self._softmax_hessian_bound() + self.damping)
                if cap < self.scale_:
                    self.scale_ = cap
                    self.scale_how_ = ("1.25 x (0.5 max||[x,1]||^2 + lambda_train + lambda): analytic bound on "
                                       "every softmax-regression Hessian")
        else:
            self.scale_, self.scale_how_ = float(self.scale), "given"
        self.precompute_seconds_ = time.perf_counter() - start
        return self

    def _softmax_hessian_bound(self) -> float:
        """‖∇²ℓ_i‖ ≤ ‖diag p − p pᵀ‖·‖x̃_i‖² + λ_train ≤ ‖x̃_i‖²/2 + λ_train for softmax regression."""
        X = self.x_.reshape(self.n_, -1)
        return 0.5 * (float(X.norm(dim=1).max()) ** 2 + 1.0) + self.lam

    def _eigen_bounds(self, h_r: DataHessian, k: int) -> tuple[float, float, str]:
        """λ_min and λ_max of H_r at the step's start: analytic for softmax regression (the cross-entropy part is
        convex, so λ_min ≥ λ_train; λ_max ≤ max‖x̃‖²/2 + λ_train), Lanczos otherwise (measured)."""
        if self.model.kind == "softmax":
            return self.lam, self._softmax_hessian_bound(), "analytic (softmax regression: convex CE, lambda_min >= " \
                                                            "lambda_train)"
        return extreme_eigenvalues(h_r.matvec, self.model.dim, steps=40, seed=self.seed + k)

    def delete(self, positions) -> float:
        """One request: remove ``positions`` (training positions) and take one Newton step from the current estimate.
        Returns the step's seconds (gradient + LiSSA); the curvature checks and the bound are timed apart."""
        pos = np.unique(np.asarray(positions, dtype=np.int64))
        if len(pos) == 0 or self.removed_[pos].any():
            raise ValueError("empty request, or a position already deleted")
        self.removed_[pos] = True
        if self.removed_.all():
            raise ValueError("cannot delete every training record")
        k = len(self.requests_)
        start_w = self.state_
        t0 = time.perf_counter()
        # λ_min of H_r at the step's start: decides whether H_r + λI is positive definite, and enters the bound.
        h_r = self._hessian_at(start_w, ~self.removed_)
        lam_min, lam_max, eig_how = self._eigen_bounds(h_r, k)
        damping, note = self.damping, ""
        if damping + lam_min <= 0:
            damping = -lam_min + max(self.damping, 1e-3 * abs(lam_max))
            note = (f"H_r + lambda I not positive definite (lambda_min {lam_min:.4g}); damping raised from "
                    f"{self.damping:g} to {damping:.4g}")
        t_curv = time.perf_counter() - t0

        t1 = time.perf_counter()
        g = h_r.gradient()
        keep = torch.as_tensor(np.nonzero(~self.removed_)[0])
        scale = self.scale_
        if self.scale is None and self.model.kind != "softmax":      # Lanczos λ_max of H_r is measured here anyway
            scale = max(scale, 1.25 * (abs(lam_max) + damping))
        v, linfo = lissa_solve(self.model, self.lam, start_w, self.x_[keep], self.y_[keep], g, damping=damping,
                               scale=scale, chains=self.chains, depth=self.depth, hessian_batch=self.hessian_batch,
                               seed=self.seed + 1000 + k, mu_lower=damping + lam_min, hvp_dtype=self.hvp_dtype)
        new = start_w - v
        if self.radius is not None:
            new = project_ball(new, self.radius)
        step_seconds = time.perf_counter() - t1

        t2 = time.perf_counter()
        mu = damping + lam_min
        residual = float((h_r.matvec(v) + damping * v - g).norm())
        step_len = float((new - start_w).norm())
        m_step = 0.0
        if step_len > 0:
            h_new = self._hessian_at(new, ~self.removed_)
            m_step = power_norm(lambda u: h_new.matvec(u) - h_r.matvec(u), self.model.dim, iters=self.power_iters,
                                seed=self.seed + k) / step_len
        self.M_ = max(self.M_, m_step)
        self.max_norm_ = max(self.max_norm_, float(start_w.norm()), float(new.norm()))
        R = self.radius if self.radius is not None else self.max_norm_
        newton_term = 2 * R * (self.M_ * R + damping) / mu
        lissa_term = residual / mu
        cert_seconds = time.perf_counter() - t2 + t_curv
        self.state_ = new
        self.requests_.append({
            "n_records": len(pos), "seconds": step_seconds, "certificate_seconds": cert_seconds,
            "lambda_min": lam_min, "lambda_max": lam_max, "eigen_method": eig_how, "damping": damping,
            "damping_note": note, "lissa": linfo.to_dict(),
            "relative_residual": residual / max(float(g.norm()), 1e-300),
            "gradient_norm": float(g.norm()), "newton_term": newton_term, "lissa_term": lissa_term,
            "sensitivity": newton_term + lissa_term, "R": R, "M": self.M_})
        return step_seconds

    def certificate(self, epsilon: float, delta: float, mechanism: str = "analytic") -> tuple[dict, float]:
        """The certificate of a release after the requests so far, and its σ."""
        if not self.requests_:
            raise ValueError("nothing deleted yet")
        last = self.requests_[-1]
        enforced = self.radius is not None
        sens = last["sensitivity"]
        sigma = calibrate(epsilon, delta, sens, mechanism)
        constants = {
            "R": {"value": last["R"], "source": "enforced" if enforced else "measured",
                  "how": "training weight_norm_bound (estimate projected onto the ball)" if enforced else
                  "largest norm of w* and of every estimate (the model was NOT trained with weight_norm_bound; "
                  "the retrained model is assumed inside this ball)"},
            "M": {"value": self.M_, "source": "measured", "how": self.M_how_},
            "lambda_min": {"value": last["lambda_min"],
                           "source": "analytic" if last["eigen_method"].startswith("analytic") else "measured",
                           "how": f"{last['eigen_method']}, H_r at the last request's start"},
            "lambda": {"value": last["damping"], "source": "enforced" if not last["damping_note"] else "measured",
                       "how": last["damping_note"] or "configured damping (local convex approximation)"},
            "lissa_residual": {"value": last["lissa_term"] * (last["damping"] + last["lambda_min"]),
                               "source": "measured", "how": "||(H_r + lambda I) v - g|| with one exact HVP"},
        }
        cert = {"epsilon": epsilon, "delta": delta, "mechanism": mechanism, "sigma": sigma, "sensitivity": sens,
                "bound": BOUND, "newton_term": last["newton_term"], "lissa_term": last["lissa_term"],
                "constants": constants,
                "constants_kind": "measured constants",
                "trained_with_weight_norm_bound": enforced,
                "assumption": "the retrained model is a stationary point of the retained objective inside the ball "
                              "(the paper's theorem); an SGD replay is only approximately one",
                "n_forget": int(self.removed_.sum()), "requests": len(self.requests_)}
        return cert, sigma
