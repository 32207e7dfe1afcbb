"""A worked example of bringing your own model and unlearning method to unlearn-audit (examples/plugin/audit.toml).

* ``tanh_mlp``: the architecture, named by ``model.factory = "my_unlearning:tanh_mlp"``. Called as
  ``tanh_mlp(input_shape, n_classes)``; returns an ``nn.Module`` mapping a batch of records to logits. Every layer is
  per-sample (GroupNorm normalises each record on its own, tanh is smooth): a BatchNorm in training mode would be
  refused, because a record's loss would then depend on the rest of its batch.
* ``GradientAscent``: the method, named by ``unlearning.methods = ["my_unlearning:GradientAscent"]``. A few steps of
  gradient ascent on the forget set's loss, from the trained weights (uncertified; NegGrad-like).

Nothing here imports the audit's internals beyond the protocol; the audit runs the method on the trained model and
on every paired model, and judges it like a built-in one.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import grad

from unlearn_audit.audit.protocol import UnlearningMethod, UnlearningResult, UnlearningTask

__version__ = "1.0"


def tanh_mlp(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Flatten → Linear(d, 32) → GroupNorm(4 groups) → tanh → Linear(32, n_classes)."""
    d = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.GroupNorm(4, 32), nn.Tanh(), nn.Linear(32, n_classes))


class GradientAscent(UnlearningMethod):
    """``steps`` full-batch gradient-ascent steps on the forget set's mean cross-entropy, step size ``lr``."""

    description = "gradient ascent on the forget set: 5 steps at lr 0.01 (example plugin, uncertified)"
    steps = 5
    lr = 0.01

    def unlearn(self, task: UnlearningTask) -> UnlearningResult:
        x_u, y_u = task.forget
        x_u = x_u.to(task.weights.dtype)

        def forget_loss(w: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(task.model.logits(w, x_u), y_u)

        g = grad(forget_loss)
        w = task.weights.detach().clone()
        for _ in range(self.steps):
            w = w + self.lr * g(w).detach()
        return UnlearningResult(weights=w, extra={"steps": self.steps, "lr": self.lr})
