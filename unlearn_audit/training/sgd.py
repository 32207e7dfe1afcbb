"""Mini-batch SGD over a recorded schedule (DESIGN §2.1), and exact retraining by replay (§2.2).

Per-sample loss ℓ(w; z) = CE(f_w(x), y) + (λ/2)‖w‖². One step:

    w_{t+1} = Π_R( w_t − η_t · g_t ),   g_t = (1/N_t) Σ_{i∈B_t} c(∇ℓ(w_t; z_i))

where c is per-sample clipping at C (or identity), N_t the normaliser (|B_t|, or |B_t \\ U| for ``mean`` retraining),
optional batch clipping applies to g_t, and Π_R projects onto ‖w‖ ≤ R when a weight-norm bound is set.
``update_map`` is that exact map as a differentiable function of w, so the unlearner can linearise it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch.func import grad, vmap

from unlearn_audit.models import FunctionalModel
from unlearn_audit.training.schedule import Schedule

ClipMode = Literal["none", "per_sample", "batch"]


@dataclass(frozen=True)
class SGDConfig:
    """Training hyper-parameters. ``lr`` is η_0, ``decay`` is γ per step, ``lam`` is λ (L2 on all parameters)."""

    epochs: int = 15
    batch_size: int = 32
    lr: float = 0.05
    decay: float = 0.995
    lam: float = 0.01
    clip: ClipMode = "none"
    clip_norm: float | None = None
    weight_norm_bound: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.clip != "none" and (self.clip_norm is None or self.clip_norm <= 0):
            raise ValueError(f"clip '{self.clip}' needs a positive clip_norm")

    def clipping_norm(self) -> float:
        """C, the clipping norm; set whenever ``clip`` is not "none" (construction refuses otherwise)."""
        if self.clip_norm is None:
            raise ValueError("clip_norm is not set (clip = 'none')")
        return self.clip_norm


def clip_rows(g: torch.Tensor, c: float) -> torch.Tensor:
    """Scale each row of g to norm ≤ c (differentiable)."""
    norms = g.norm(dim=-1, keepdim=True)
    return g * torch.clamp(c / torch.clamp(norms, min=1e-30), max=1.0)


def project_ball(w: torch.Tensor, radius: float | None) -> torch.Tensor:
    if radius is None:
        return w
    return w * torch.clamp(radius / torch.clamp(w.norm(), min=1e-30), max=1.0)


def per_sample_gradients(model: FunctionalModel, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                         lam: float) -> torch.Tensor:
    """∇ℓ(w; z_i) for each record, (m, d), λw included."""

    def loss_one(w_, xi, yi):
        return torch.nn.functional.cross_entropy(model.logits(w_, xi[None]), yi[None])

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(w, x, y) + lam * w


def batch_gradient(model: FunctionalModel, cfg: SGDConfig, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   normaliser: float | torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """g_t of the module docstring (before the step size), differentiable in w.

    ``weights`` (one per record, default all 1) scale each record's term: 0 removes a record from the batch
    without changing the batch's shape (how many models with different forget sets are trained at once), and the
    map is differentiable in them (how an HF-OCU injection is the derivative along a removal).
    """
    if len(x) == 0:
        return torch.zeros_like(w)
    ce = torch.nn.functional.cross_entropy
    if cfg.clip == "per_sample":
        g = clip_rows(per_sample_gradients(model, w, x, y, cfg.lam), cfg.clipping_norm())
        g = (g if weights is None else weights.to(w.dtype)[:, None] * g).sum(0) / normaliser
    elif weights is None:
        g = grad(lambda w_: ce(model.logits(w_, x), y, reduction="sum"))(w)
        g = g / normaliser + cfg.lam * w * (len(x) / normaliser)
    else:
        m = weights.to(w.dtype)
        g = grad(lambda w_: (m * ce(model.logits(w_, x), y, reduction="none")).sum())(w)
        g = g / normaliser + cfg.lam * w * (m.sum() / normaliser)
    if cfg.clip == "batch":
        g = clip_rows(g[None], cfg.clipping_norm())[0]
    return g


def update_map(model: FunctionalModel, cfg: SGDConfig, lr: float, x: torch.Tensor, y: torch.Tensor,
               normaliser: float | torch.Tensor, weights: torch.Tensor | None = None
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exact training step w ↦ w_{t+1} as a function (for jvp by the unlearner); ``weights`` as in
    :func:`batch_gradient`."""

    def step(w: torch.Tensor) -> torch.Tensor:
        return project_ball(w - lr * batch_gradient(model, cfg, w, x, y, normaliser, weights), cfg.weight_norm_bound)

    return step


@dataclass
class StepInfo:
    """What a step hook sees: step t, weights w_t BEFORE the step, the batch and its step size η_t."""

    t: int
    w: torch.Tensor
    positions: np.ndarray
    x: torch.Tensor
    y: torch.Tensor
    lr: float


StepHook = Callable[[StepInfo], None]


@dataclass
class TrainResult:
    weights: torch.Tensor
    schedule: Schedule
    config: SGDConfig
    max_weight_norm: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def starting_point(model: FunctionalModel, cfg: SGDConfig, w0: torch.Tensor | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """w_0: the model's initial weights (or ``w0``), projected onto the ball ‖w‖ ≤ R when ``weight_norm_bound`` is
    set, so that every iterate, w_0 included, obeys the bound the certificate relies on."""
    w = model.initial_weights(dtype) if w0 is None else w0.to(dtype)
    return project_ball(w.clone(), cfg.weight_norm_bound)


def train_sgd(model: FunctionalModel, x: torch.Tensor, y: torch.Tensor, cfg: SGDConfig, *,
              schedule: Schedule | None = None, w0: torch.Tensor | None = None,
              hooks: Sequence[StepHook] = (), dtype: torch.dtype = torch.float32,
              progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train on (x, y) over ``schedule`` (made from cfg if not given); hooks run before each step."""
    import time

    n = len(x)
    if schedule is None:
        schedule = Schedule.make(n, cfg.epochs, cfg.batch_size, cfg.lr, cfg.decay, cfg.seed)
    w = starting_point(model, cfg, w0, dtype).to(x.device)
    x = x.to(dtype)
    start = time.perf_counter()
    max_norm = float(w.norm())
    for t, (pos, lr) in enumerate(zip(schedule.batches, schedule.lrs)):
        pos_t = torch.as_tensor(pos, device=x.device)
        bx, by = x[pos_t], y[pos_t]
        info = StepInfo(t, w, pos, bx, by, float(lr))
        for hook in hooks:
            hook(info)
        with torch.no_grad():
            w = update_map(model, cfg, float(lr), bx, by, float(len(pos)))(w).detach()
        max_norm = max(max_norm, float(w.norm()))
        if progress is not None:
            progress(t + 1, schedule.n_steps)
    return TrainResult(w, schedule, cfg, max_norm, time.perf_counter() - start)


Normalisation = Literal["sum", "mean"]


def retrain_without(model: FunctionalModel, x: torch.Tensor, y: torch.Tensor, cfg: SGDConfig, schedule: Schedule,
                    forget_positions: np.ndarray, *, normalisation: Normalisation = "sum",
                    w0: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Exact retraining: replay ``schedule`` with U removed from every batch (DESIGN §2.2).

    ``sum`` divides by the original |B_t| (what HF-OCU approximates, the default); ``mean`` divides by |B_t \\ U|
    and skips a batch that became empty.
    """
    if normalisation not in ("sum", "mean"):
        raise ValueError(f"normalisation must be 'sum' or 'mean', got '{normalisation}'")
    forget = np.zeros(schedule.n_train, dtype=bool)
    forget[np.asarray(forget_positions, dtype=np.int64)] = True
    w = starting_point(model, cfg, w0, dtype).to(x.device)
    x = x.to(dtype)
    for pos, lr in zip(schedule.batches, schedule.lrs):
        keep = pos[~forget[pos]]
        if len(keep) == 0 and normalisation == "mean":
            continue
        normaliser = float(len(pos)) if normalisation == "sum" else float(len(keep))
        kt = torch.as_tensor(keep, device=x.device)
        with torch.no_grad():
            w = update_map(model, cfg, float(lr), x[kt], y[kt], normaliser)(w).detach()
    return w
