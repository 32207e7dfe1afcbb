"""Input checks shared by every function of :mod:`unlearn_audit.stats`.

Label convention everywhere: 1 = member (or deleted record), 0 = non-member; a higher score means
"more likely a member". Every check raises :class:`ValueError` with a one-line message that names
the offending argument, so callers (the CLI) can print it as is.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "as_scores",
    "as_labels",
    "check_same_length",
    "check_alpha",
    "check_probability",
    "check_positive_int",
    "split_by_labels",
]


def as_scores(values, name: str, *, min_size: int = 1) -> np.ndarray:
    """Return ``values`` as a 1-D float64 array of finite numbers with at least ``min_size`` entries.

    The input is never modified; the result may share memory with it.
    """
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be a 1-D array of numeric scores, not a string")
    try:
        raw = np.asarray(values)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} could not be read as an array ({exc})") from None
    if raw.dtype.kind == "c":
        raise ValueError(f"{name} must contain real numbers, not complex ones")
    if raw.dtype.kind not in "biuf":
        try:
            raw = raw.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must contain numeric scores (got dtype {raw.dtype})") from None
    arr = np.asarray(raw, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (got shape {arr.shape})")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.size < min_size:
        raise ValueError(f"{name} needs at least {min_size} values (got {arr.size})")
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name} contains {bad} NaN/inf values")
    return arr


def as_labels(labels, name: str = "labels", *, length: int | None = None,
              length_of: str = "scores", min_per_class: int = 1) -> np.ndarray:
    """Return ``labels`` as a 1-D int array of 0/1 (1 = member, 0 = non-member).

    Checks the length against ``length`` (the length of the argument named ``length_of``) and that
    each class holds at least ``min_per_class`` records.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (got shape {arr.shape})")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if length is not None and arr.size != length:
        raise ValueError(f"{name} has length {arr.size} but {length_of} has length {length}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "iuf":
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN/inf values; labels must be 0 (non-member) or 1 (member)")
        bad = arr[(arr != 0) & (arr != 1)]
        if bad.size:
            shown = ", ".join(repr(v.item()) for v in np.unique(bad)[:3])
            raise ValueError(f"{name} must contain only 0 (non-member) and 1 (member); found {shown}")
        arr = arr.astype(np.int64)
    else:
        raise ValueError(f"{name} must contain only 0 (non-member) and 1 (member) (got dtype {arr.dtype})")
    n_members = int(np.count_nonzero(arr))
    n_nonmembers = int(arr.size - n_members)
    if n_members < min_per_class:
        raise ValueError(f"{name} has {n_members} members (label 1); at least {min_per_class} needed")
    if n_nonmembers < min_per_class:
        raise ValueError(f"{name} has {n_nonmembers} non-members (label 0); at least {min_per_class} needed")
    return arr


def split_by_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split validated scores into (member scores, non-member scores) using validated 0/1 labels."""
    mask = labels == 1
    return scores[mask], scores[~mask]


def check_same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise if two arrays that describe the same records differ in length."""
    if len(a) != len(b):
        raise ValueError(f"{name_b} has length {len(b)} but {name_a} has length {len(a)}")


def _as_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number (got {value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite (got {value!r})")
    return value


def check_probability(value, name: str, *, low: float = 0.0, high: float = 1.0,
                      low_inclusive: bool = False, high_inclusive: bool = False) -> float:
    """Return ``value`` as float after checking it lies in the interval (low, high) (ends as configured)."""
    value = _as_real(value, name)
    ok_low = value >= low if low_inclusive else value > low
    ok_high = value <= high if high_inclusive else value < high
    if not (ok_low and ok_high):
        lb = "[" if low_inclusive else "("
        rb = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must lie in {lb}{low:g}, {high:g}{rb} (got {value!r})")
    return value


def check_alpha(alpha, name: str = "alpha", *, high: float = 1.0) -> float:
    """Significance level: a float in (0, high)."""
    return check_probability(alpha, name, low=0.0, high=high)


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    """An integer (not bool) that is at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer (got {value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum} (got {value})")
    return int(value)
