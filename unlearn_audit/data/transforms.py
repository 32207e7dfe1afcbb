"""Feature transforms fitted on the training split only, applied to every split.

Why here and why this way:
- Standardising with statistics of the full dataset would leak (a little) information about test and population
  records into the model's inputs, and the population records must be ones the model never saw; so the mean and
  standard deviation come from the training split alone.
- The certified-unlearning bounds (DESIGN §2.4) depend on max‖x‖ over the training data: for softmax regression
  the per-sample gradient bound G grows with ‖x‖ and the Hessian bound behind ρ_t with ‖x‖². ``unit_norm``
  projects every record onto the unit L2 ball (x ↦ x / max(1, ‖x‖)), so max‖x‖ ≤ 1 holds by construction for
  every split, including records that arrive later. It is a per-record map, so it leaks nothing across records.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .dataset import DataError, Dataset
from .splits import Splits


class Standardizer:
    """Per-feature (x − mean) / scale with mean and std from the data given to :meth:`fit` (the train split).

    ``scale = max(std, std_floor)``, so rare features cannot blow up test values by more than 1/std_floor;
    features constant on the training data (std ≈ 0) get scale 1 (they are only centred).
    Works on any feature shape: statistics are per element of the flattened record.
    """

    def __init__(self, std_floor: float = 1e-3):
        if not (isinstance(std_floor, (int, float)) and np.isfinite(std_floor) and std_floor > 0):
            raise DataError(f"std_floor must be a positive number, got {std_floor!r}")
        self.std_floor = float(std_floor)
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.feature_shape_: tuple[int, ...] | None = None

    def fit(self, data) -> "Standardizer":
        x = data.x if isinstance(data, Dataset) else np.asarray(data)
        if x.ndim < 2 or x.shape[0] == 0:
            raise DataError(f"Standardizer.fit needs a non-empty (n, features...) array, got shape {x.shape}")
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        mean = flat.mean(axis=0)
        std = flat.std(axis=0)
        scale = np.maximum(std, self.std_floor)
        scale[std <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
        self.mean_, self.scale_, self.feature_shape_ = mean, scale, tuple(x.shape[1:])
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean_ is None:
            raise DataError("Standardizer is not fitted; call fit(train) first")
        x = np.asarray(x)
        if tuple(x.shape[1:]) != self.feature_shape_:
            raise DataError(f"Standardizer fitted on feature shape {self.feature_shape_}, got {tuple(x.shape[1:])}")
        flat = (x.reshape(x.shape[0], -1).astype(np.float64) - self.mean_) / self.scale_
        return flat.astype(np.float32).reshape(x.shape)

    def to_dict(self, summary: bool = False) -> dict[str, Any]:
        """JSON-ready state; ``summary=True`` leaves out the per-feature vectors."""
        out: dict[str, Any] = {"kind": "standardize", "std_floor": self.std_floor,
                               "feature_shape": None if self.feature_shape_ is None else list(self.feature_shape_)}
        if not summary and self.mean_ is not None and self.scale_ is not None:
            out["mean"] = self.mean_.tolist()
            out["scale"] = self.scale_.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Standardizer":
        s = cls(std_floor=d.get("std_floor", 1e-3))
        if "mean" in d:
            s.mean_ = np.asarray(d["mean"], dtype=np.float64)
            s.scale_ = np.asarray(d["scale"], dtype=np.float64)
            s.feature_shape_ = tuple(d["feature_shape"])
        return s


def unit_norm_rows(x: np.ndarray, max_norm: float = 1.0) -> np.ndarray:
    """Project each record (flattened) onto the L2 ball of radius ``max_norm``: records inside stay as they are,
    longer ones are scaled to norm ``max_norm·(1 − 1e-6)`` (the margin absorbs float32 rounding, so ‖x‖ ≤ max_norm
    holds for the float32 result)."""
    x = np.asarray(x)
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", flat, flat))
    factor = np.ones_like(norms)
    over = norms > max_norm
    factor[over] = max_norm * (1 - 1e-6) / norms[over]
    return (flat * factor[:, None]).astype(np.float32).reshape(x.shape)


def prepare(splits: Splits, standardize: bool = True, unit_norm: bool = False, *,
            std_floor: float = 1e-3) -> Splits:
    """Transformed copies of ``splits``: standardisation fitted on ``splits.train`` only (if ``standardize``),
    then projection onto the unit L2 ball (if ``unit_norm``), both applied to train, test and population.
    Ids, labels and positions are unchanged; the fitted transform is recorded in the result."""
    if splits.standardizer is not None or splits.unit_norm:
        raise DataError("splits are already prepared; prepare the original splits instead")
    std = Standardizer(std_floor=std_floor).fit(splits.train) if standardize else None

    def apply(ds: Dataset) -> Dataset:
        x = ds.x if std is None else std.transform(ds.x)
        if unit_norm:
            x = unit_norm_rows(x)
        return ds.with_x(np.array(x, dtype=np.float32, copy=True))

    return replace(splits, train=apply(splits.train), test=apply(splits.test), population=apply(splits.population),
                   positions={k: v.copy() for k, v in splits.positions.items()}, standardizer=std,
                   unit_norm=bool(unit_norm), meta=dict(splits.meta))
