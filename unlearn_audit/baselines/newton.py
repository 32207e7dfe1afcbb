"""The classic second-order baselines, done as the math says (DESIGN §2.5): the λ term in every Hessian and gradient,
the update a flat vector in the model's parameter layout, the sum over the forget set, float64, the solve outside
nothing that is timed as a request unless it is part of the request.

* Newton step (Sekhari et al. 2021): w̃ = w + (1/(n−m)) H_{S\\U}⁻¹ Σ_{u∈U} ∇ℓ(w; z_u), H_{S\\U} the Hessian of the
  mean objective over the retained records at the trained w. Precompute (Cholesky mode): n·H_S, stored (d² numbers);
  a request subtracts the deleted records' Hessians, factors H_{S\\U} and solves (O(d³) per request). CG mode (large
  d): conjugate gradients with Hessian-vector products over the retained records, nothing stored.
* Infinitesimal jackknife / influence (Koh & Liang 2017; Giordano et al. 2019): w̃ = w + (1/n) H_S⁻¹ Σ_u ∇ℓ(w; z_u),
  H_S over all n records, factored once before any request (the precompute, timed separately); a request is two
  triangular solves. It is additive over requests.

Sequential requests: both are applied to the cumulative deleted set U_k = U_1 ∪ … ∪ U_k from the trained w, so after
the last request the state equals the one-shot formula for the whole forget set (one solve per request).
An indefinite H (non-convex models) is detected (Cholesky failure, or negative curvature inside CG) and the damping
added is reported in ``solves_`` / ``precompute_info_``, never silently.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Literal

import numpy as np
import torch

from unlearn_audit.baselines.hessian import (
    DTYPE,
    DataHessian,
    SolveInfo,
    extreme_eigenvalues,
    factor_spd,
    resolve_hvp_dtype,
    solve_with_damping,
)
from unlearn_audit.baselines.retained import TrainingSetBaseline
from unlearn_audit.models import FunctionalModel

Solver = Literal["auto", "cholesky", "cg"]


class _SecondOrderBaseline(TrainingSetBaseline, ABC):
    name = "abstract"

    def __init__(self, model: FunctionalModel, lam: float, *, solver: Solver = "auto", exact_max_dim: int = 5000,
                 cg_tol: float = 1e-10, cg_maxiter: int | None = None, damping_floor: float = 1e-3,
                 hvp_precision: str = "float64"):
        if solver not in ("auto", "cholesky", "cg"):
            raise ValueError(f"solver must be 'auto', 'cholesky' or 'cg', got '{solver}'")
        self.model, self.lam = model, float(lam)
        self.solver, self.exact_max_dim = solver, int(exact_max_dim)
        self.hvp_dtype = resolve_hvp_dtype(model, hvp_precision, self.exact_max_dim)
        self.cg_tol, self.cg_maxiter, self.damping_floor = float(cg_tol), cg_maxiter, float(damping_floor)

    @property
    def uses_cholesky(self) -> bool:
        return self.solver == "cholesky" or (self.solver == "auto" and self.model.dim <= self.exact_max_dim)

    def fit(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        """Keep the trained weights and data; do the request-independent precomputation (timed)."""
        self._keep_training_set(w, x, y)
        self.solves_: list[dict] = []
        self.precompute_info_: dict = {}
        start = time.perf_counter()
        self._precompute()
        self.precompute_seconds_ = time.perf_counter() - start
        return self

    @abstractmethod
    def _precompute(self) -> None:
        """Request-independent work, timed as the precompute."""

    def _hessian(self, mask: np.ndarray) -> DataHessian:
        return self._hessian_at(self.w_, mask)

    def _check_new(self, positions) -> np.ndarray:
        pos = np.unique(np.asarray(positions, dtype=np.int64))
        if len(pos) == 0:
            raise ValueError("empty deletion request")
        if (pos < 0).any() or (pos >= self.n_).any():
            raise ValueError("deletion request names a position outside the training set")
        if self.removed_[pos].any():
            raise ValueError(f"training position {int(pos[self.removed_[pos]][0])} was already deleted")
        return pos

    def delete(self, positions) -> float:
        """Apply one request (training positions); returns its wall-clock seconds."""
        pos = self._check_new(positions)
        start = time.perf_counter()
        self._delete(pos)
        self.removed_[pos] = True
        return time.perf_counter() - start

    @abstractmethod
    def _delete(self, pos: np.ndarray) -> None:
        """Apply one request (new training positions) to ``state_``."""

    @property
    def solver_name(self) -> str:
        if self.uses_cholesky:
            return "cholesky (float64)"
        hvp = str(self.hvp_dtype).removeprefix("torch.")
        return ("conjugate gradients with HVPs (float64)" if hvp == "float64" else
                f"conjugate gradients (float64) with {hvp} HVPs")

    def any_indefinite(self) -> bool:
        infos = self.solves_ + ([self.precompute_info_] if self.precompute_info_ else [])
        return any(i.get("indefinite") for i in infos)


class NewtonStep(_SecondOrderBaseline):
    """Newton step of Sekhari et al. (2021). See the module docstring."""

    name = "ns"

    def _precompute(self) -> None:
        self._g_removed = torch.zeros(self.model.dim, dtype=DTYPE)
        self._damping_hint = 0.0
        if self.uses_cholesky:
            everyone = np.ones(self.n_, dtype=bool)
            self._H_sum = self.n_ * self._hessian(everyone).dense()         # Σ_i ∇²ℓ_i (λI in every term)
            self._H_removed = torch.zeros_like(self._H_sum)

    @property
    def storage_bytes(self) -> int:
        return int(self._H_sum.element_size() * self._H_sum.numel()) if self.uses_cholesky else 0

    def _delete(self, pos: np.ndarray) -> None:
        new = np.zeros(self.n_, dtype=bool)
        new[pos] = True
        h_new = self._hessian(new)
        self._g_removed += h_new.gradient_sum()
        removed = self.removed_ | new
        m = int(removed.sum())
        if m >= self.n_:
            raise ValueError("cannot delete every training record with a Newton step")
        if self.uses_cholesky:
            self._H_removed += len(pos) * h_new.dense()
            H_r = (self._H_sum - self._H_removed) / (self.n_ - m)
            fac = factor_spd(H_r, floor=self.damping_floor)
            step, info = fac.solve(self._g_removed), fac.info
        else:
            h_r = self._hessian(~removed)
            step, info = solve_with_damping(h_r.matvec, self._g_removed, tol=self.cg_tol, maxiter=self.cg_maxiter,
                                            dim=self.model.dim, floor=self.damping_floor,
                                            damping_hint=self._damping_hint)
            self._damping_hint = info.damping
        self.state_ = self.w_ + step / (self.n_ - m)
        self.solves_.append({**info.to_dict(), "n_deleted_so_far": m})


class InfluenceJackknife(_SecondOrderBaseline):
    """Infinitesimal jackknife: H_S factored once before requests. See the module docstring."""

    name = "ij"

    def _precompute(self) -> None:
        everyone = np.ones(self.n_, dtype=bool)
        self._h_all = self._hessian(everyone)
        self._damping = 0.0
        if self.uses_cholesky:
            self._factor = factor_spd(self._h_all.dense(), floor=self.damping_floor)
            self.precompute_info_ = self._factor.info.to_dict()
        elif self.model.kind != "softmax":
            # No factorisation with CG; the request-independent part is deciding whether H_S is positive definite.
            lam_min, lam_max, how = extreme_eigenvalues(self._h_all.matvec, self.model.dim)
            if lam_min <= 0:
                self._damping = -lam_min + self.damping_floor * abs(lam_max)
            self.precompute_info_ = SolveInfo(
                "conjugate gradients (float64), no factorisation", damping=self._damping,
                indefinite=lam_min <= 0, lambda_min=lam_min,
                note=(f"H_S indefinite (smallest eigenvalue {lam_min:.4g}, {how}); requests solve with H_S + "
                      f"{self._damping:.4g}·I" if lam_min <= 0 else f"H_S positive definite ({how})")).to_dict()

    @property
    def storage_bytes(self) -> int:
        return self._factor.nbytes if self.uses_cholesky else 0

    def _delete(self, pos: np.ndarray) -> None:
        new = np.zeros(self.n_, dtype=bool)
        new[pos] = True
        g = self._hessian(new).gradient_sum()
        if self.uses_cholesky:
            step, info = self._factor.solve(g), SolveInfo("cholesky triangular solves (factor from the precompute)")
        else:
            step, info = solve_with_damping(self._h_all.matvec, g, tol=self.cg_tol, maxiter=self.cg_maxiter,
                                            dim=self.model.dim, floor=self.damping_floor, damping_hint=self._damping)
            self._damping = info.damping
        self.state_ = self.state_ + step / self.n_
        self.solves_.append({**info.to_dict(), "n_deleted_so_far": int(self.removed_.sum()) + len(pos)})
