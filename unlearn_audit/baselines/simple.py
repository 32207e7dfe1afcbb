"""Uncertified contrast methods: fine-tuning on the retained records, and gradient ascent on the forget set.

Neither comes with a guarantee; they are here so the audit shows what an attack sees when no certified method is
used (DESIGN §2.5).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch.func import grad

from unlearn_audit.models import FunctionalModel
from unlearn_audit.training import SGDConfig, train_sgd
from unlearn_audit.training.sgd import project_ball


def finetune(model: FunctionalModel, sgd: SGDConfig, w: torch.Tensor, x_retain: torch.Tensor,
             y_retain: torch.Tensor, *, epochs: int = 2, lr: float, seed: int = 0) -> tuple[torch.Tensor, float]:
    """``epochs`` epochs of the training's own SGD update (same batch size, λ, clipping, projection) on the retained
    records from ``w``, at a constant step size ``lr``. Returns (weights, seconds)."""
    if epochs < 1 or lr <= 0:
        raise ValueError("finetune needs epochs >= 1 and lr > 0")
    cfg = replace(sgd, epochs=int(epochs), lr=float(lr), decay=1.0, seed=int(seed))
    start = time.perf_counter()
    res = train_sgd(model, x_retain, y_retain, cfg, w0=w, dtype=w.dtype)
    return res.weights, time.perf_counter() - start


def neggrad(model: FunctionalModel, w: torch.Tensor, x_forget: torch.Tensor, y_forget: torch.Tensor, *,
            steps: int = 5, lr: float, weight_norm_bound: float | None = None) -> tuple[torch.Tensor, float]:
    """Gradient ascent on the forget set's mean cross-entropy (no λ term: ascending it would only grow ‖w‖):
    w ← Π_R(w + lr·∇ mean CE(U)), ``steps`` full-batch steps. Returns (weights, seconds)."""
    if steps < 1 or lr <= 0:
        raise ValueError("neggrad needs steps >= 1 and lr > 0")
    x = x_forget.to(w.dtype)

    def loss(w_):
        return torch.nn.functional.cross_entropy(model.logits(w_, x), y_forget)

    g = grad(loss)
    start = time.perf_counter()
    w = w.detach().clone()
    for _ in range(int(steps)):
        w = project_ball(w + lr * g(w).detach(), weight_norm_bound)
    return w, time.perf_counter() - start
