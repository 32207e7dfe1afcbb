"""Chunk-outer HF-OCU precompute for softmax regression (DESIGN §9).

For softmax regression a training step's curvature needs only the batch inputs, the batch probabilities and η_t:

    H_t V = (1/|B|) Σ_i [(diag p_i − p_i p_iᵀ)(V x̃_i)] x̃_iᵀ + λ V,     x̃ = [x, 1]

so training records a tiny trajectory (batch positions, P_t, η_t, and w_t for the injected λw_t term), and the
approximators are computed afterwards one cache-sized chunk of records at a time, each chunk running through all
T steps before the next. Inside a chunk, records are ordered by the step of their first injection, so the vectors
that are still zero (never injected) are a suffix and are skipped by slicing, not masking.

Layout: a chunk is a (k, C, D+1) tensor (weights then the bias column); it is converted to the model's flat
layout (weight rows flattened, then the bias) at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch

from unlearn_audit.training.sgd import StepInfo


@dataclass
class SoftmaxTrajectory:
    """What a softmax training run leaves for the chunk-outer recursion. A training hook (``__call__``).

    Attributes (one entry per step t): ``positions[t]`` batch positions, ``probs[t]`` (|B_t|, C) probabilities at
    w_t, ``lrs[t]`` η_t, ``weights[t]`` w_t (flat, for the λ w_t part of the injected gradients).
    """

    positions: list = field(default_factory=list)
    probs: list = field(default_factory=list)
    lrs: list = field(default_factory=list)
    weights: list = field(default_factory=list)

    def __call__(self, info: StepInfo) -> None:
        from unlearn_audit.models.zoo import softmax_probs_flat

        self.positions.append(np.asarray(info.positions))
        self.probs.append(softmax_probs_flat(info.w, info.x).detach())
        self.lrs.append(float(info.lr))
        self.weights.append(info.w.detach().clone())

    @property
    def n_steps(self) -> int:
        return len(self.lrs)

    def nbytes(self) -> int:
        return int(sum(p.numel() * p.element_size() for p in self.probs)
                   + sum(w.numel() * w.element_size() for w in self.weights)
                   + sum(p.nbytes for p in self.positions) + 8 * len(self.lrs))


Order = Literal["propagate_first", "inject_first"]


def softmax_chunk_outer(x: torch.Tensor, y: torch.Tensor, n_classes: int, lam: float, traj: SoftmaxTrajectory,
                        positions: np.ndarray, *, chunk_size: int = 64, dtype: torch.dtype = torch.float32,
                        order: Order = "propagate_first",
                        progress: Callable[[int, int], None] | None = None,
                        sink: Callable[[np.ndarray, torch.Tensor], None] | None = None
                        ) -> tuple[torch.Tensor | None, int]:
    """Approximators (len(positions), d) in the model's flat layout for the given training positions.

    Returns the approximators and the number of Hessian-vector products applied (zero vectors skipped). With
    ``sink(rows, block)`` each finished chunk is handed over instead (``rows`` index ``positions``) and nothing
    is kept in memory: a file-backed store can then hold more than RAM; the first return value is then None.
    """
    n, D = x.shape[0], int(np.prod(x.shape[1:]))
    C, D1 = n_classes, D + 1
    dev = x.device
    xt = torch.cat([x.reshape(n, D).to(dtype), torch.ones(n, 1, dtype=dtype, device=dev)], dim=1)        # x̃ (n, D+1)
    T = traj.n_steps
    # Per step: the batch's x̃ (b, D+1), Pᵀ (C, b), one-hot residual (b, C), η_t, and w_t in (C, D+1) layout.
    batch_xt = [xt[torch.as_tensor(p, device=dev)] for p in traj.positions]
    probs_t = [pr.to(dtype).T.contiguous() for pr in traj.probs]
    resid = [(pr.to(dtype) - torch.nn.functional.one_hot(y[torch.as_tensor(p, device=dev)], C).to(dtype))
             for pr, p in zip(traj.probs, traj.positions)]
    w_cd = [flat_to_cd(w.to(dtype), C, D) for w in traj.weights]
    # Where each training position is injected: step -> slot in the batch.
    first_step = np.full(n, T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        first_step[traj.positions[t]] = t
    positions = np.asarray(positions, dtype=np.int64)
    out = None if sink is not None else torch.zeros(len(positions), C * D + C, dtype=dtype, device=dev)
    hvps = 0
    order_all = np.argsort(first_step[positions], kind="stable")
    chunks = [order_all[i:i + chunk_size] for i in range(0, len(order_all), chunk_size)]
    for ci, rows in enumerate(chunks):
        pos = positions[rows]                                 # sorted by first injection step
        starts = first_step[pos]
        k = len(pos)
        A = torch.zeros(k, C, D1, dtype=dtype, device=dev)
        A2 = A.view(k * C, D1)
        slot_of = {int(p): j for j, p in enumerate(pos)}
        n_active = 0
        for t in range(T):
            lr = traj.lrs[t]
            b = batch_xt[t].shape[0]
            if order == "inject_first":
                n_active = _inject(A, traj.positions[t], slot_of, resid[t], batch_xt[t], w_cd[t], lam, lr, b,
                                   n_active, starts, t)
            if n_active:
                a = A[:n_active]
                vx = torch.matmul(a.view(n_active * C, D1), batch_xt[t].T).view(n_active, C, b)     # V x̃_i
                p = probs_t[t]
                m = p * (vx - (p * vx).sum(1, keepdim=True))                                        # (diag p − ppᵀ)Vx̃
                a2 = A2[: n_active * C]
                a2.mul_(1.0 - lr * lam)
                a2.addmm_(m.view(n_active * C, b), batch_xt[t], alpha=-lr / b)
                hvps += n_active
            if order == "propagate_first":
                n_active = _inject(A, traj.positions[t], slot_of, resid[t], batch_xt[t], w_cd[t], lam, lr, b,
                                   n_active, starts, t)
        if out is not None:                         # allocated exactly when there is no sink
            out[torch.as_tensor(rows, device=dev)] = cd_to_flat(A, C, D)
        elif sink is not None:
            sink(rows, cd_to_flat(A, C, D))
        if progress:
            progress(ci + 1, len(chunks))
    return out, hvps


def _inject(A, batch_pos, slot_of, resid, bxt, w_cd, lam, lr, b, n_active, starts, t) -> int:
    """a_u += η/|B| (r_u ⊗ x̃_u + λ w_t) for the chunk's records in this batch; returns the new active count."""
    for j, p in enumerate(batch_pos):
        s = slot_of.get(int(p))
        if s is None:
            continue
        A[s].addr_(resid[j], bxt[j], alpha=lr / b)
        A[s].add_(w_cd, alpha=lr * lam / b)
    while n_active < len(starts) and starts[n_active] <= t:
        n_active += 1
    return n_active


def flat_to_cd(w: torch.Tensor, C: int, D: int) -> torch.Tensor:
    """Softmax-regression weights from the model's flat layout (C·D weight rows, then C biases), shape (..., C·D + C),
    to the class-major layout (..., C, D + 1) with the bias as the last column (x̃ = [x, 1])."""
    lead = w.shape[:-1]
    return torch.cat([w[..., : C * D].reshape(*lead, C, D), w[..., C * D:].reshape(*lead, C, 1)], dim=-1)


def cd_to_flat(A: torch.Tensor, C: int, D: int) -> torch.Tensor:
    """The inverse of :func:`flat_to_cd` for a batch: (k, C, D + 1) → (k, C·D + C)."""
    k = A.shape[0]
    return torch.cat([A[:, :, :D].reshape(k, C * D), A[:, :, D]], dim=1)
