"""MIA-U features (Chen et al., CCS 2021) from a record's posteriors under two models.

Label convention of the package: 1 = deleted record (member of the original model, removed from the
unlearned one), 0 = non-member (never trained on); higher attack score = more likely deleted/member.

``p_o`` are the original model's posteriors and ``p_u`` the unlearned model's, both (n, C) rows of
probabilities for the same n records in the same order. Constructions (Chen et al., Section 4):

* ``direct_diff``   p_o - p_u                                  (n, C)   -- the default
* ``sorted_diff``   sort(p_o) - sort(p_u), each sorted descending (n, C)
* ``direct_concat`` [p_o, p_u]                                  (n, 2C)
* ``sorted_concat`` [sort(p_o), sort(p_u)]                      (n, 2C)
* ``l2``            ||p_o - p_u||_2                             (n, 1)

and, for the classical attack on the original model only (the baseline of DegCount/DegRate):

* ``original_features(p_o, kind)`` with kind ``"sorted"`` (default: sort(p_o) descending, the
  label-free classical attack feature) or ``"direct"`` (p_o as is).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._validation import float_array
from .errors import InvalidInputError

__all__ = ["FEATURES", "ORIGINAL_FEATURES", "direct_diff", "sorted_diff", "direct_concat", "sorted_concat", "l2",
           "build_features", "original_features", "check_pair"]


def _posteriors(name: str, p: Any) -> np.ndarray:
    a = float_array(name, p, ndim=2)
    if a.shape[1] < 2:
        raise InvalidInputError(f"{name}: expected (n, C) posteriors with C >= 2, got shape {a.shape}")
    if a.min() < -1e-9 or a.max() > 1 + 1e-9:
        raise InvalidInputError(f"{name}: posteriors must lie in [0, 1]")
    return a


def check_pair(p_original: Any, p_unlearned: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of posterior matrices of the same shape (n, C); returns float64 copies."""
    po = _posteriors("p_original", p_original)
    pu = _posteriors("p_unlearned", p_unlearned)
    if po.shape != pu.shape:
        raise InvalidInputError(f"p_unlearned: shape {pu.shape} differs from p_original's {po.shape}")
    return po, pu


def _sort_desc(p: np.ndarray) -> np.ndarray:
    return -np.sort(-p, axis=1)


def direct_diff(p_o: Any, p_u: Any) -> np.ndarray:
    """p_o - p_u, (n, C)."""
    po, pu = check_pair(p_o, p_u)
    return po - pu


def sorted_diff(p_o: Any, p_u: Any) -> np.ndarray:
    """sort(p_o) - sort(p_u), both sorted descending, (n, C)."""
    po, pu = check_pair(p_o, p_u)
    return _sort_desc(po) - _sort_desc(pu)


def direct_concat(p_o: Any, p_u: Any) -> np.ndarray:
    """[p_o, p_u], (n, 2C)."""
    po, pu = check_pair(p_o, p_u)
    return np.concatenate([po, pu], axis=1)


def sorted_concat(p_o: Any, p_u: Any) -> np.ndarray:
    """[sort(p_o), sort(p_u)], both sorted descending, (n, 2C)."""
    po, pu = check_pair(p_o, p_u)
    return np.concatenate([_sort_desc(po), _sort_desc(pu)], axis=1)


def l2(p_o: Any, p_u: Any) -> np.ndarray:
    """||p_o - p_u||_2 per record, (n, 1)."""
    po, pu = check_pair(p_o, p_u)
    return np.linalg.norm(po - pu, axis=1, keepdims=True)


FEATURES: dict[str, Callable[[Any, Any], np.ndarray]] = {
    "direct_diff": direct_diff,
    "sorted_diff": sorted_diff,
    "direct_concat": direct_concat,
    "sorted_concat": sorted_concat,
    "l2": l2,
}

ORIGINAL_FEATURES = ("sorted", "direct")


def build_features(feature: str, p_o: Any, p_u: Any) -> np.ndarray:
    """Feature matrix of the named construction (see the module docstring)."""
    if feature not in FEATURES:
        raise InvalidInputError(f"feature: expected one of {sorted(FEATURES)}, got {feature!r}")
    return FEATURES[feature](p_o, p_u)


def original_features(p_o: Any, kind: str = "sorted") -> np.ndarray:
    """Features of the classical (original-posterior-only) attack: sort(p_o) descending, or p_o as is."""
    po = _posteriors("p_original", p_o)
    if kind == "sorted":
        return _sort_desc(po)
    if kind == "direct":
        return po.copy()
    raise InvalidInputError(f"kind: expected one of {ORIGINAL_FEATURES}, got {kind!r}")
