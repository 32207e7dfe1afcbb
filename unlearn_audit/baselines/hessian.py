"""Data-set curvature and linear solvers for the Newton-type baselines (ns, ij, cns).

Objective of a data set D (the mean per-sample loss, λ term included, DESIGN §2.1):

    F_D(w) = (1/|D|) Σ_{i∈D} CE(f_w(x_i), y_i) + (λ/2)‖w‖²,   H_D = ∇²F_D(w)   (λI included)

Everything works on flat float64 vectors (``FunctionalModel`` layout). :class:`DataHessian` applies H_D to a block
of vectors (two matrix products for softmax regression; otherwise the batched curvature operators of
:mod:`unlearn_audit.hfocu.curvature` summed over chunks of D); ``DataHessian.dense`` materialises H_D (small d only;
closed form :func:`softmax_dense_hessian` for softmax regression); :func:`extreme_eigenvalues` is Lanczos;
:func:`factor_spd` / :func:`conjugate_gradient` solve H x = b and report, never hide, an indefinite H (non-convex
models): the damping added is returned with the solution and goes into the method's result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from unlearn_audit.certify import lanczos_extremes
from unlearn_audit.hfocu.curvature import make_curvature
from unlearn_audit.models import FunctionalModel

DTYPE = torch.float64
HVP_PRECISIONS = ("auto", "float64", "float32")


def resolve_hvp_dtype(model: FunctionalModel, precision: str = "float64", exact_max_dim: int = 5000) -> torch.dtype:
    """Arithmetic of the autodiff Hessian-vector products of the Newton-type baselines.

    Softmax regression always uses its float64 closed form. For other models: ``float64``; ``float32`` (the
    training precision: about 5× faster for convolutional nets on a CPU, relative HVP error about 1e-6 against
    float64); ``auto`` = float64 up to ``exact_max_dim`` parameters, float32 above. Vectors, solvers and
    gradients stay float64 whatever the choice."""
    if precision not in HVP_PRECISIONS:
        raise ValueError(f"hvp precision must be one of {', '.join(HVP_PRECISIONS)}, got {precision!r}")
    if model.kind == "softmax" or precision == "float64":
        return torch.float64
    if precision == "float32":
        return torch.float32
    return torch.float64 if model.dim <= exact_max_dim else torch.float32


@dataclass
class SolveInfo:
    """How one linear solve went. ``damping`` is the shift added to H (0 when H was positive definite)."""

    solver: str
    damping: float = 0.0
    indefinite: bool = False
    lambda_min: float | None = None
    iterations: int = 0
    relative_residual: float | None = None
    converged: bool = True
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class DataHessian:
    """H_D at ``w`` for the records (x, y): ``matmat(V)`` for a (k, d) block, ``gradient()`` = ∇F_D(w).

    The batch-dependent work (probabilities for softmax regression) is prepared once per data chunk. ``hvp_dtype``
    is the arithmetic of the autodiff HVPs (see :func:`resolve_hvp_dtype`); inputs and outputs are float64.
    """

    def __init__(self, model: FunctionalModel, lam: float, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *,
                 data_chunk: int | None = None, vector_chunk: int = 32, hvp_dtype: torch.dtype = DTYPE):
        if len(x) == 0:
            raise ValueError("DataHessian needs at least one record")
        self.model, self.lam = model, float(lam)
        self.w = w.detach().to(DTYPE)
        self.x, self.y = x.to(DTYPE), y
        self.n = len(x)
        self.hvp_dtype = DTYPE if model.kind == "softmax" else hvp_dtype
        self.op = make_curvature(model, 0.0, "exact", chunk_size=vector_chunk)    # data part; λ added here
        if data_chunk is None:
            data_chunk = 4096 if model.kind == "softmax" else 512
        self.data_chunk = int(data_chunk)
        self.chunks = self._prepare(self.hvp_dtype)
        self.hvp_count = 0

    def _prepare(self, dtype: torch.dtype) -> list:
        w, x, c = self.w.to(dtype), self.x.to(dtype), self.data_chunk
        return [(self.op.prepare(w, x[i:i + c], self.y[i:i + c]), min(c, self.n - i)) for i in range(0, self.n, c)]

    @property
    def _gradient_chunks(self) -> list:
        """float64 contexts for gradients (the HVP contexts may be float32)."""
        if self.hvp_dtype == DTYPE:
            return self.chunks
        if not hasattr(self, "_grad_chunks"):
            self._grad_chunks = self._prepare(DTYPE)
        return self._grad_chunks

    @property
    def dim(self) -> int:
        return self.model.dim

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """H_D V for V of shape (k, d)."""
        V = V.to(DTYPE)
        if self.model.kind == "softmax":
            return self._softmax_matmat(V)
        out = self.lam * V
        Vh = V.to(self.hvp_dtype)
        for ctx, b in self.chunks:
            out = out + (b / self.n) * self.op.apply(ctx, Vh).to(DTYPE)
        self.hvp_count += len(V)
        return out

    def _softmax_matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Softmax regression as two matrix products over all records: H V = (1/n) Σ_i [(diag p_i − p_i p_iᵀ)
        (V x̃_i)] x̃_iᵀ + λV."""
        if not hasattr(self, "_X"):
            self._X = self.x.reshape(self.n, -1)
            with torch.no_grad():
                self._P = torch.softmax(self.model.logits(self.w, self._X), dim=1)
        X, P = self._X, self._P
        k, C, D = len(V), self.model.n_classes, X.shape[1]
        with torch.no_grad():
            Vw, Vb = V[:, :C * D].reshape(k * C, D), V[:, C * D:]
            vx = (X @ Vw.T).view(self.n, k, C) + Vb[None]                                # (n, k, C)
            pv = P[:, None, :] * vx
            m = pv - P[:, None, :] * pv.sum(-1, keepdim=True)
            hw = (m.reshape(self.n, k * C).T @ X).reshape(k, C * D)
            out = torch.cat([hw, m.sum(0)], dim=1) / self.n + self.lam * V
        self.hvp_count += k
        return out

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matmat(v[None])[0]

    def per_sample_gradients(self) -> torch.Tensor:
        """∇ℓ(w; z_i) for every record, (n, d), λw included."""
        return torch.cat([self.op.per_sample_grads(ctx) for ctx, _ in self._gradient_chunks]) + self.lam * self.w

    def gradient_sum(self) -> torch.Tensor:
        """Σ_i ∇ℓ(w; z_i) (λw included in every term)."""
        return (sum(self.op.per_sample_grads(ctx).sum(0) for ctx, _ in self._gradient_chunks)
                + self.n * self.lam * self.w)

    def gradient(self) -> torch.Tensor:
        """∇F_D(w) = mean per-sample gradient, λw included."""
        return self.gradient_sum() / self.n

    def dense(self) -> torch.Tensor:
        """H_D as a (d, d) float64 matrix (closed form for softmax regression, HVPs on the identity otherwise)."""
        if self.model.kind == "softmax":
            return softmax_dense_hessian(self.model, self.lam, self.w, self.x, self.y)
        d = self.dim
        H = torch.empty(d, d, dtype=DTYPE)
        block = 256
        for i in range(0, d, block):
            E = torch.zeros(min(block, d - i), d, dtype=DTYPE)
            E[torch.arange(len(E)), torch.arange(i, i + len(E))] = 1.0
            H[i:i + len(E)] = self.matmat(E)
        return 0.5 * (H + H.T)


def softmax_dense_hessian(model: FunctionalModel, lam: float, w: torch.Tensor, x: torch.Tensor,
                          y: torch.Tensor) -> torch.Tensor:
    """Exact H_D of softmax regression: (1/n) Σ_i (diag p_i − p_i p_iᵀ) ⊗ x̃_i x̃_iᵀ + λI, x̃ = [x, 1], permuted from
    the class-major augmented layout to the flat layout (all weight rows, then the biases)."""
    C = model.n_classes
    w = w.to(DTYPE)
    X = x.reshape(len(x), -1).to(DTYPE)
    n, D = X.shape
    with torch.no_grad():
        P = torch.softmax(model.logits(w, X), dim=1)                                  # (n, C)
    Xt = torch.cat([X, torch.ones(n, 1, dtype=DTYPE)], dim=1)                          # (n, D+1)
    Haug = torch.empty(C, D + 1, C, D + 1, dtype=DTYPE)
    for c in range(C):
        a = P[:, c:c + 1] * ((torch.arange(C) == c).to(DTYPE)[None] - P)               # A_i[c, :], (n, C)
        Xa = (a[:, :, None] * Xt[:, None, :]).reshape(n, C * (D + 1))                  # (n, C(D+1))
        Haug[c] = (Xt.T @ Xa).reshape(D + 1, C, D + 1) / n                             # [j, c', k]
    Haug = Haug.reshape(C * (D + 1), C * (D + 1))
    flat = torch.arange(C * (D + 1))
    inv = torch.where(flat < C * D, (flat // D) * (D + 1) + flat % D, (flat - C * D) * (D + 1) + D)
    H = Haug.index_select(0, inv).index_select(1, inv)
    H.diagonal().add_(lam)
    return 0.5 * (H + H.T)


# ---------------------------------------------------------------------------------------------------------------------
# exact solves
@dataclass
class SPDFactor:
    """Cholesky factor L of H + damping·I (L Lᵀ), with what was found about H."""

    L: torch.Tensor
    info: SolveInfo = field(default_factory=lambda: SolveInfo("cholesky"))

    def solve(self, B: torch.Tensor) -> torch.Tensor:
        """(H + damping I)⁻¹ B for B of shape (d,) or (d, k)."""
        vec = B.ndim == 1
        X = torch.cholesky_solve(B.to(DTYPE)[:, None] if vec else B.to(DTYPE), self.L)
        return X[:, 0] if vec else X

    @property
    def nbytes(self) -> int:
        return self.L.element_size() * self.L.numel()


def factor_spd(H: torch.Tensor, *, floor: float = 1e-3) -> SPDFactor:
    """Cholesky of H in float64. If H is not positive definite, H is shifted by damping·I so that its smallest
    eigenvalue becomes ``floor``·λ_max (computed exactly with eigvalsh) and the shift is reported."""
    H = H.to(DTYPE)
    L, err = torch.linalg.cholesky_ex(H)
    if int(err) == 0:
        return SPDFactor(L, SolveInfo("cholesky (float64)"))
    ev = torch.linalg.eigvalsh(H)
    lam_min, lam_max = float(ev[0]), float(ev[-1])
    damping = -lam_min + floor * max(abs(lam_max), 1e-12)
    Hd = H + damping * torch.eye(len(H), dtype=DTYPE)
    L, err = torch.linalg.cholesky_ex(Hd)
    if int(err) != 0:                                                           # pragma: no cover - numerically odd H
        raise np.linalg.LinAlgError("Hessian could not be factored even after damping")
    return SPDFactor(L, SolveInfo("cholesky (float64)", damping=damping, indefinite=True, lambda_min=lam_min,
                                  note=f"H indefinite (smallest eigenvalue {lam_min:.4g}); solved with H + "
                                       f"{damping:.4g}·I (smallest eigenvalue raised to {floor:g}·λ_max)"))


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *, tol: float = 1e-10,
                       maxiter: int | None = None, x0: torch.Tensor | None = None) -> tuple[torch.Tensor, SolveInfo]:
    """Solve A x = b for symmetric A given as ``matvec``, float64. Stops at ‖r‖ ≤ tol·‖b‖, or when a search
    direction has pᵀAp ≤ 0 (negative curvature: A is not positive definite), which is reported in the info."""
    b = b.to(DTYPE)
    maxiter = int(maxiter or 10 * len(b))
    x = torch.zeros_like(b) if x0 is None else x0.to(DTYPE).clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    p = r.clone()
    rr = float(r @ r)
    bnorm = max(float(b.norm()), 1e-300)
    info = SolveInfo("conjugate gradients (float64)")
    it = 0
    while math.sqrt(rr) > tol * bnorm and it < maxiter:
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if pAp <= 0:
            info.indefinite = True
            info.converged = False
            info.note = f"negative curvature pᵀHp = {pAp:.4g} at iteration {it}"
            break
        alpha = rr / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        it += 1
    info.iterations = it
    info.relative_residual = float((b - matvec(x)).norm()) / bnorm
    if not info.indefinite:
        info.converged = info.relative_residual <= max(tol, 1e-14) * 10
    return x, info


def extreme_eigenvalues(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, *, steps: int = 40,
                        seed: int = 0) -> tuple[float, float, str]:
    """(λ_min, λ_max) of a symmetric operator: the extreme Ritz values of ``steps`` Lanczos iterations with full
    reorthogonalisation (:func:`unlearn_audit.certify.lanczos_extremes`; exact once steps ≥ dim). A measured
    estimate: Ritz values lie inside the spectrum, so the λ_min estimate is ≥ the true λ_min (optimistic) until it
    has converged; the method string says how many steps and gives the Ritz residual ‖H y − θ y‖ of the smallest
    pair."""
    ex = lanczos_extremes(matvec, dim, steps=steps, seed=seed)
    how = "exact (Lanczos to an invariant subspace)" if ex.exact else \
        (f"Lanczos, {ex.steps} steps (Ritz values; the lambda_min estimate is optimistic until converged; Ritz "
         f"residual {ex.res_min:.2g})")
    return ex.lam_min, ex.lam_max, how


def solve_with_damping(matvec, b, *, tol: float, maxiter: int | None, dim: int, floor: float = 1e-3,
                       damping_hint: float = 0.0) -> tuple[torch.Tensor, SolveInfo]:
    """CG on (H + damping_hint·I) x = b. If CG meets negative curvature, estimate λ_min/λ_max of H by Lanczos,
    shift H so its smallest eigenvalue becomes floor·λ_max, solve again (doubling the shift if CG still meets
    negative curvature) and report the shift. ``damping_hint`` (a shift that worked for a nearby H, e.g. the
    previous request's) is tried first and reported as damping when it suffices."""
    op = (lambda v: matvec(v) + damping_hint * v) if damping_hint > 0 else matvec
    x, info = conjugate_gradient(op, b, tol=tol, maxiter=maxiter)
    if not info.indefinite:
        if damping_hint > 0:
            info.indefinite, info.damping = True, damping_hint
            info.note = f"H indefinite earlier: solved with H + {damping_hint:.4g}·I (the previous shift)"
        return x, info
    first = info.note
    lam_min, lam_max, how = extreme_eigenvalues(matvec, dim)
    damping = max(-lam_min, 0.0) + floor * max(abs(lam_max), 1e-12)
    for _ in range(4):
        x, info = conjugate_gradient(lambda v: matvec(v) + damping * v, b, tol=tol, maxiter=maxiter)
        if not info.indefinite:
            break
        damping *= 2.0
    info.indefinite, info.damping, info.lambda_min = True, damping, lam_min
    info.note = (f"{first}: H indefinite (smallest eigenvalue {lam_min:.4g}, {how}); solved with H + {damping:.4g}·I "
                 f"(smallest eigenvalue raised to about {floor:g}·λ_max)")
    return x, info
