"""Replay mode (DESIGN §2.3): for a batch U known now, one vector recursion on the summed injection over the
recorded trajectory — T Hessian-vector products, no per-record storage:

    a ← (I − η_t H_t) a;   a ← a + η_t/|B_t| Σ_{u∈U∩B_t} ∇ℓ(w_t; z_u)

It needs the weights w_t of every step (:class:`WeightTrajectory`, a training hook). The result equals the sum of
the per-record approximators of mode ``all`` (the recursion is linear), at a cost of T HVPs per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from unlearn_audit.hfocu.curvature import make_curvature
from unlearn_audit.models import FunctionalModel
from unlearn_audit.training.sgd import SGDConfig, StepInfo


@dataclass
class WeightTrajectory:
    """Training hook keeping w_t (flat) for every step."""

    weights: list = field(default_factory=list)

    def __call__(self, info: StepInfo) -> None:
        self.weights.append(info.w.detach().clone())

    def nbytes(self) -> int:
        return int(sum(w.numel() * w.element_size() for w in self.weights))


def replay_unlearn(model: FunctionalModel, sgd: SGDConfig, x: torch.Tensor, y: torch.Tensor, schedule,
                   trajectory: WeightTrajectory, forget_positions, *, curvature: str = "exact",
                   order: str = "propagate_first") -> torch.Tensor:
    """Σ_{u∈U} a_u computed directly by one recursion over the stored trajectory (flat, model dtype)."""
    if sgd.clip != "none" or sgd.weight_norm_bound is not None:
        raise ValueError("replay mode supports plain SGD only (no clipping, no projection); use mode 'all'")
    op = make_curvature(model, sgd.lam, curvature)
    forget = np.zeros(schedule.n_train, dtype=bool)
    forget[np.asarray(forget_positions, dtype=np.int64)] = True
    w0 = trajectory.weights[0]
    a = torch.zeros(1, model.dim, dtype=w0.dtype, device=w0.device)
    active = False
    for t, (pos, lr) in enumerate(zip(schedule.batches, schedule.lrs)):
        w = trajectory.weights[t]
        pt = torch.as_tensor(pos)
        ctx = op.prepare(w, x[pt].to(w.dtype), y[pt])
        hit = forget[pos]
        inj = None
        if hit.any():
            g = op.per_sample_grads(ctx)[torch.as_tensor(np.nonzero(hit)[0])]
            inj = float(lr) / len(pos) * g.sum(0, keepdim=True)
        if order == "inject_first" and inj is not None:
            a, active = a + inj, True
        if active:
            a = a - float(lr) * op.apply(ctx, a)
        if order == "propagate_first" and inj is not None:
            a, active = a + inj, True
    return a[0]
