"""Input validation shared by the attack modules (private)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidInputError


def to_numpy(value: Any) -> np.ndarray:
    """Convert array-likes (numpy, lists, torch tensors) to a numpy array without copying if possible."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def float_array(name: str, value: Any, ndim: int | tuple[int, ...] | None = None,
                allow_empty: bool = False) -> np.ndarray:
    """Return ``value`` as a finite float64 array, or raise :class:`InvalidInputError` naming ``name``."""
    if value is None:
        raise InvalidInputError(f"{name}: expected an array, got None")
    arr = to_numpy(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidInputError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in dims:
            raise InvalidInputError(f"{name}: expected {' or '.join(map(str, dims))}-d array, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise InvalidInputError(f"{name}: empty array")
    bad = ~np.isfinite(arr)
    if bad.any():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(bad.sum()) - n_nan
        raise InvalidInputError(f"{name}: contains {n_nan} NaN and {n_inf} infinite value(s)")
    return arr


def label_array(
    name: str, value: Any, n_classes: int | None = None, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """Return integer class labels as int64, validated against ``n_classes`` and ``shape``."""
    arr = to_numpy(value)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InvalidInputError(f"{name}: expected integer labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if shape is not None and arr.shape != tuple(shape):
        raise InvalidInputError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    if arr.size and arr.min() < 0:
        raise InvalidInputError(f"{name}: negative label {int(arr.min())}")
    if n_classes is not None and arr.size and arr.max() >= n_classes:
        raise InvalidInputError(f"{name}: label {int(arr.max())} out of range for {n_classes} classes")
    return arr


def membership_labels(name: str, value: Any, n: int | None = None) -> np.ndarray:
    """Validate 0/1 membership labels (1 = member/deleted, 0 = non-member); returns int64."""
    arr = label_array(name, value)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-d array of 0/1 labels, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise InvalidInputError(f"{name}: expected {n} labels, got {arr.shape[0]}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise InvalidInputError(f"{name}: membership labels must be 0 (non-member) or 1 (member)")
    return arr
