"""Per-record membership signals computed from a model's logits or probabilities, in float64.

Label convention of the package: 1 = member, 0 = non-member; higher score = more likely member.
The signals here are raw statistics, with their orientation stated on each function:
a *loss* is lower for members (so the loss attack scores ``-loss``), a *confidence* is higher for members.

All functions accept numpy arrays, lists or torch tensors; ``logits``/``probs`` have shape (..., C) and
``labels`` the leading shape (...). Pass exactly one of ``logits=`` or ``probs=`` (keyword-only, so
the two cannot be confused). Logits are preferred: every quantity is then computed with logsumexp in
float64 and stays finite and accurate even when p_y is within 1e-15 of 1. From probabilities, values
are clipped to [tiny, 1] so that the results stay finite (exact zeros lose information: use logits).
NaN/inf inputs raise :class:`~attacks.errors.InvalidInputError` (a ``ValueError``) naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from ._validation import float_array, label_array
from .errors import InvalidInputError

__all__ = ["softmax", "log_softmax", "cross_entropy", "true_class_probability", "logit_scaled_confidence"]

_TINY = np.finfo(np.float64).tiny
_PROB_SUM_TOL = 1e-3


def _pick(logits: Any, probs: Any, labels: Any) -> tuple[str, np.ndarray, np.ndarray]:
    if (logits is None) == (probs is None):
        raise InvalidInputError("pass exactly one of logits= or probs=")
    name = "logits" if logits is not None else "probs"
    arr = float_array(name, logits if logits is not None else probs)
    if arr.ndim < 1 or arr.shape[-1] < 2:
        raise InvalidInputError(f"{name}: expected shape (..., C) with C >= 2 classes, got {arr.shape}")
    if name == "probs":
        if arr.min() < -1e-12 or arr.max() > 1 + 1e-12:
            raise InvalidInputError("probs: values must lie in [0, 1] (pass logits= for unnormalised scores)")
        sums = arr.sum(axis=-1)
        if np.abs(sums - 1.0).max() > _PROB_SUM_TOL:
            raise InvalidInputError(
                f"probs: rows must sum to 1 (max deviation {np.abs(sums - 1.0).max():.3g}); pass logits= instead")
        arr = np.clip(arr, 0.0, 1.0)
    y = label_array("labels", labels, n_classes=arr.shape[-1])
    if y.shape != arr.shape[:-1]:
        try:
            y = np.broadcast_to(y, arr.shape[:-1])
        except ValueError:
            raise InvalidInputError(
                f"labels: shape {y.shape} does not match {name} shape {arr.shape} (expected {arr.shape[:-1]})"
            ) from None
    return name, arr, y


def _take(arr: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.take_along_axis(arr, y[..., None], axis=-1)[..., 0]


def softmax(logits: Any) -> np.ndarray:
    """Softmax over the last axis in float64 (validated: NaN/inf raise)."""
    z = float_array("logits", logits)
    return np.exp(z - logsumexp(z, axis=-1, keepdims=True))


def log_softmax(logits: Any) -> np.ndarray:
    """Log-softmax over the last axis in float64."""
    z = float_array("logits", logits)
    return z - logsumexp(z, axis=-1, keepdims=True)


def cross_entropy(labels: Any, *, logits: Any = None, probs: Any = None) -> np.ndarray:
    """Per-record cross-entropy loss -log p_y, float64, shape = labels' shape. Lower for members.

    From logits: logsumexp(z) - z_y (exact, no underflow). From probabilities: -log(max(p_y, tiny)).
    """
    kind, arr, y = _pick(logits, probs, labels)
    if kind == "logits":
        return logsumexp(arr, axis=-1) - _take(arr, y)
    return -np.log(np.maximum(_take(arr, y), _TINY))


def true_class_probability(labels: Any, *, logits: Any = None, probs: Any = None) -> np.ndarray:
    """p_y in float64. Higher for members."""
    kind, arr, y = _pick(logits, probs, labels)
    if kind == "logits":
        return np.exp(_take(arr, y) - logsumexp(arr, axis=-1))
    return _take(arr, y)


def logit_scaled_confidence(labels: Any, *, logits: Any = None, probs: Any = None) -> np.ndarray:
    """LiRA's logit-scaled confidence  log p_y - log sum_{y' != y} p_{y'}  in float64. Higher for members.

    From logits this equals  z_y - logsumexp_{y' != y} z_{y'}  (the normaliser cancels), which is
    exact and finite for any finite logits, including p_y = 1 - 1e-15 and beyond.
    From probabilities the sum over the other classes is formed directly (never as 1 - p_y, which
    cancels catastrophically near 1) and both terms are clipped at the smallest positive float64,
    so the result is finite but saturates near +-708 when a probability is exactly 0.
    """
    kind, arr, y = _pick(logits, probs, labels)
    onehot = np.zeros(arr.shape, dtype=bool)
    np.put_along_axis(onehot, y[..., None], True, axis=-1)
    if kind == "logits":
        others = np.where(onehot, -np.inf, arr)
        return _take(arr, y) - logsumexp(others, axis=-1)
    p_y = np.maximum(_take(arr, y), _TINY)
    p_rest = np.maximum(np.where(onehot, 0.0, arr).sum(axis=-1), _TINY)
    return np.log(p_y) - np.log(p_rest)
