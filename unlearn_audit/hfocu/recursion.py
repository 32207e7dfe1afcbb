"""The HF-OCU approximator recursion (DESIGN §2.3), run online as a training hook (time-outer layout).

For every tracked record u and every step t:

    a_u ← J_t a_u                              (propagate; J_t = ∂w_{t+1}/∂w_t = I − η_t H_t without clipping)
    a_u ← a_u + η_t/|B_t| · c(∇ℓ(w_t; z_u))    (inject, only if u ∈ B_t, after propagating)

so that w_T + Σ_{u∈U} a_u approximates the weights retrained without U (``sum`` normalisation).
Vectors that are still zero are not propagated. ``order="inject_first"`` reproduces the paper's public code
(inject, then propagate) and exists only for comparison: it is measurably worse at large η.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch.func import jvp, vjp, vmap

from unlearn_audit.hfocu.curvature import CurvatureOperator, make_curvature
from unlearn_audit.models import FunctionalModel
from unlearn_audit.training.sgd import SGDConfig, StepInfo, batch_gradient, clip_rows, project_ball

Order = Literal["propagate_first", "inject_first"]


class ApproximatorRecursion:
    """Keeps one approximator per tracked training position and advances them at every training step.

    Args:
        model: the model being trained.
        cfg: the training configuration (clipping and projection are linearised exactly).
        tracked_positions: training-set positions that get an approximator (all records for mode ``all``, the
            declared candidates for mode ``candidates``).
        curvature: ``exact`` or ``gauss-newton`` (see :mod:`unlearn_audit.hfocu.curvature`).
        dtype: dtype of the stored approximators (float32 by default).
        chunk_size: vectors per batched HVP call (bounds peak memory).
    """

    def __init__(self, model: FunctionalModel, cfg: SGDConfig, n_train: int,
                 tracked_positions: np.ndarray | None = None, *, curvature: str = "exact",
                 order: Order = "propagate_first", dtype: torch.dtype = torch.float32, chunk_size: int = 256,
                 device: str | torch.device = "cpu"):
        if order not in ("propagate_first", "inject_first"):
            raise ValueError(f"order must be 'propagate_first' or 'inject_first', got '{order}'")
        self.model, self.cfg, self.order = model, cfg, order
        self.device = torch.device(device)
        self.op: CurvatureOperator = make_curvature(model, cfg.lam, curvature, chunk_size=min(chunk_size, 64))
        tracked = np.arange(n_train) if tracked_positions is None else np.unique(np.asarray(tracked_positions))
        self.tracked_positions = tracked.astype(np.int64)
        self.row_of = np.full(n_train, -1, dtype=np.int64)
        self.row_of[self.tracked_positions] = np.arange(len(tracked))
        self.approximators = torch.zeros(len(tracked), model.dim, dtype=dtype, device=self.device)
        self.active = torch.zeros(len(tracked), dtype=torch.bool, device=self.device)
        self.chunk_size = int(chunk_size)
        self.hvp_count = 0
        # The plain SGD step is linear in the curvature: J v = v − η H v. Clipping or projection need the jvp of the
        # whole update map instead.
        self.linear_step = cfg.clip == "none" and cfg.weight_norm_bound is None

    @property
    def curvature_name(self) -> str:
        return self.op.name

    # -- the two halves of a step ---------------------------------------------------------------------------
    def _propagate(self, info: StepInfo, ctx) -> None:
        rows = torch.nonzero(self.active).squeeze(1)
        if len(rows) == 0:
            return
        w = ctx.w
        for start in range(0, len(rows), self.chunk_size):  # chunks bound the memory of one batched HVP
            r = rows[start:start + self.chunk_size]
            V = self.propagate_vectors(info, ctx, self.approximators[r].to(w.dtype))
            self.approximators[r] = V.to(self.approximators.dtype)
            self.hvp_count += len(r)

    def propagate_vectors(self, info: StepInfo, ctx, V: torch.Tensor) -> torch.Tensor:
        """J_t V for a (k, d) block: V − η_t H_t V for plain SGD, else the jvp of the exact update map (clipping,
        projection)."""
        if self.linear_step:
            return V - info.lr * self.op.apply(ctx, V)
        step = self._update_map(info)
        return vmap(lambda v: jvp(step, (ctx.w,), (v,))[1])(V)

    def propagate_rows(self, info: StepInfo, ctx, R: torch.Tensor) -> torch.Tensor:
        """R J_t for a (k, d) block of ROW vectors (reverse mode, :mod:`unlearn_audit.hfocu.reverse`): R − η_t H_t R
        for plain SGD (H_t is symmetric, so a row propagates like a column), else the vector-Jacobian product of the
        exact update map (clipping, projection: J_t is not symmetric)."""
        if self.linear_step:
            return R - info.lr * self.op.apply(ctx, R)
        pullback = vjp(self._update_map(info), ctx.w)[1]
        return vmap(lambda r: pullback(r)[0])(R)

    def _update_map(self, info: StepInfo):
        cfg, model = self.cfg, self.model
        n = float(len(info.positions))

        def step(w):
            return project_ball(w - info.lr * batch_gradient(model, cfg, w, info.x, info.y, n), cfg.weight_norm_bound)

        return step

    def _inject(self, info: StepInfo, ctx) -> None:
        rows = self.row_of[info.positions]
        keep = rows >= 0
        if not keep.any():
            return
        sel = torch.as_tensor(np.nonzero(keep)[0], device=self.device)
        rows_t = torch.as_tensor(rows[keep], device=self.device)
        g = self.op.per_sample_grads(ctx)[sel]                                   # (m, d) at w_t
        inj = self.injection_vectors(info, g)
        self.approximators[rows_t] += inj.to(self.approximators.dtype)
        self.active[rows_t] = True

    def injection_vectors(self, info: StepInfo, g: torch.Tensor) -> torch.Tensor:
        """U^{-U}(w_t) − U(w_t), linearised and split per record: η/|B| · (clipped) per-sample gradients, passed
        through the Jacobians of batch clipping and of the projection when those are on."""
        cfg, w = self.cfg, info.w
        b = float(len(info.positions))
        if cfg.clip == "per_sample":
            g = clip_rows(g, cfg.clipping_norm())
        inj = info.lr * g / b
        if cfg.clip == "batch" or cfg.weight_norm_bound is not None:
            g_batch = batch_gradient(self.model, SGDConfig(**{**cfg.__dict__, "clip": "none"}) if cfg.clip == "batch"
                                     else cfg, w, info.x, info.y, b)
            if cfg.clip == "batch":
                clip = lambda v: clip_rows(v[None], cfg.clipping_norm())[0]                # noqa: E731
                inj = vmap(lambda v: jvp(clip, (g_batch,), (v,))[1])(inj)
                g_batch = clip(g_batch)
            if cfg.weight_norm_bound is not None:
                pre = w - info.lr * g_batch
                proj = lambda v: project_ball(v, cfg.weight_norm_bound)                     # noqa: E731
                inj = vmap(lambda v: jvp(proj, (pre,), (v,))[1])(inj)
        return inj

    def __call__(self, info: StepInfo) -> None:
        """Training hook: advance every approximator by one step."""
        ctx = self.op.prepare(info.w, info.x, info.y)
        if self.order == "propagate_first":
            self._propagate(info, ctx)
            self._inject(info, ctx)
        else:
            self._inject(info, ctx)
            self._propagate(info, ctx)
