"""Model families. Inputs are flattened for the dense models; convolutional models take (C, H, W)."""

from __future__ import annotations

import math

import torch
from torch import nn

from unlearn_audit.models.functional import FunctionalModel, ModelError


class SoftmaxRegression(nn.Module):
    """Multinomial logistic regression: one linear layer (weight then bias in the flat layout)."""

    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x):
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """One hidden layer with tanh (smooth, so the Hessian is defined everywhere)."""

    def __init__(self, n_features: int, n_classes: int, hidden: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(n_features, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


MODEL_KINDS = {
    "softmax": "multinomial logistic regression (closed-form Hessian path)",
    "mlp": "one-hidden-layer MLP with tanh (option: hidden)",
}


def build_model(kind: str, input_shape: tuple[int, ...], n_classes: int, *, seed: int = 0,
                hidden: int = 64, zero_init: bool = False) -> FunctionalModel:
    """Build a model of ``kind`` with deterministic initialisation from ``seed``."""
    n_features = math.prod(input_shape)
    torch.manual_seed(seed)
    if kind == "softmax":
        module = SoftmaxRegression(n_features, n_classes)
        if zero_init:
            nn.init.zeros_(module.linear.weight)
            nn.init.zeros_(module.linear.bias)
    elif kind == "mlp":
        module = MLP(n_features, n_classes, hidden)
    else:
        raise ModelError(f"unknown model '{kind}'; choose one of: {', '.join(MODEL_KINDS)}")
    module.eval()
    return FunctionalModel(module, kind, tuple(input_shape), n_classes)
