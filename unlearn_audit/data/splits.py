"""Train / test / population splits, deterministic for a seed.

- ``train``: the records the target model is trained on (and from which deletions are requested);
- ``test``: held-out records for utility (test accuracy);
- ``population``: records never trained on, kept apart for the attacks (shadow/reference pools, non-members);
- ``unused`` (only in ``positions``): records in none of the three, i.e. the ``1 - sum(fractions)`` remainder and
  training records dropped by ``max_train``.

The four are disjoint and together cover every record of the source exactly once. Each split keeps the source's
record ids and is ordered by position in the source. Sizes are ``floor(fraction * n)``.

Stratification: records get the key ``(j + u_c) / n_c`` (j: rank within a random permutation of class c, u_c a
random offset per class) and are sorted on it; every contiguous block of that order, hence every split, holds each
class in proportion to within about one record per class.

``official_test=True`` (Fashion-MNIST, IDX folders, CIFAR-10) draws the test split from the source's official test
records only (``test_fraction`` of them, 1.0 allowed) and train/population from the official training records
(fractions of those).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .dataset import DataError, Dataset

if TYPE_CHECKING:  # pragma: no cover
    from .transforms import Standardizer


@dataclass(eq=False)
class Splits:
    """The three datasets of an experiment plus where they came from.

    ``positions[k]`` (k in train, test, population, unused) are int64 positions into the source dataset.
    ``standardizer`` / ``unit_norm`` record the transform applied by :func:`prepare` (None / False if none).
    """

    train: Dataset
    test: Dataset
    population: Dataset
    positions: dict[str, np.ndarray]
    seed: int
    stratified: bool
    official_test: bool
    source_name: str
    source_n: int
    standardizer: "Standardizer | None" = None
    unit_norm: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: sizes, class counts, seed, options, transform and data digests."""
        out: dict[str, Any] = {
            "source": self.source_name, "source_n": self.source_n, "seed": self.seed,
            "stratified": self.stratified, "official_test": self.official_test,
            "unused_n": int(self.positions["unused"].size),
            "standardizer": None if self.standardizer is None else self.standardizer.to_dict(summary=True),
            "unit_norm": self.unit_norm,
        }
        for k in ("train", "test", "population"):
            ds: Dataset = getattr(self, k)
            out[k] = {"n": ds.n, "class_counts": ds.class_counts().tolist(), "digest": ds.digest(),
                      "max_norm": ds.max_norm()}
        return out


def _check_fraction(name: str, value, *, allow_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise DataError(f"{name} must be a number in (0, 1), got {value!r}")
    v = float(value)
    if not (0.0 < v < 1.0 or (allow_one and v == 1.0)):
        raise DataError(f"{name} must be in (0, {'1]' if allow_one else '1)'}, got {v}")
    return v


def _order(y: np.ndarray, rng: np.random.Generator, stratify: bool) -> np.ndarray:
    """A random order of range(len(y)); stratified so every contiguous block keeps the class proportions."""
    n = int(y.shape[0])
    if not stratify:
        return rng.permutation(n)
    key = np.empty(n, dtype=np.float64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        perm = rng.permutation(members)
        key[perm] = (np.arange(perm.size) + rng.random()) / perm.size
    return np.lexsort((rng.random(n), key))


def _size(fraction: float, n: int, what: str, ds_name: str) -> int:
    k = int(math.floor(fraction * n + 1e-9))
    if k < 1:
        raise DataError(f"{what}={fraction} of {n} records of dataset '{ds_name}' gives an empty split")
    return k


def split_dataset(ds: Dataset, *, train_fraction: float, test_fraction: float, population_fraction: float,
                  seed: int, stratify: bool = True, max_train: int | None = None,
                  official_test: bool = False) -> Splits:
    """Split ``ds`` into disjoint train / test / population datasets (see the module docstring).

    Fractions each in (0, 1) with sum <= 1 (with ``official_test``: train + population <= 1 of the official
    training records, test in (0, 1] of the official test records). ``max_train`` caps the training set (the
    dropped records go to ``unused``, so test and population do not depend on it). Same inputs and seed give the
    same splits on every platform (numpy's PCG64 generator).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if max_train is not None and (isinstance(max_train, bool) or not isinstance(max_train, numbers.Integral)
                                  or max_train < 1):
        raise DataError(f"max_train must be a positive integer or None, got {max_train!r}")
    ftr = _check_fraction("train_fraction", train_fraction)
    fte = _check_fraction("test_fraction", test_fraction, allow_one=official_test)
    fpo = _check_fraction("population_fraction", population_fraction)
    rng = np.random.default_rng(int(seed))
    n = ds.n

    if official_test:
        if ds.official_test_mask is None or not ds.official_test_mask.any() or ds.official_test_mask.all():
            raise DataError(f"dataset '{ds.name}' has no official train/test split; use official_test=False")
        if ftr + fpo > 1.0 + 1e-9:
            raise DataError(f"train_fraction + population_fraction = {ftr + fpo:.6g} exceeds 1")
        pool_tr = np.flatnonzero(~ds.official_test_mask)
        pool_te = np.flatnonzero(ds.official_test_mask)
        order_tr = pool_tr[_order(ds.y[pool_tr], rng, stratify)]
        order_te = pool_te[_order(ds.y[pool_te], rng, stratify)]
        n_tr = _size(ftr, pool_tr.size, "train_fraction", ds.name)
        n_po = _size(fpo, pool_tr.size, "population_fraction", ds.name)
        n_te = _size(fte, pool_te.size, "test_fraction", ds.name)
        train = order_tr[:n_tr]
        population = order_tr[n_tr:n_tr + n_po]
        test = order_te[:n_te]
    else:
        total = ftr + fte + fpo
        if total > 1.0 + 1e-9:
            raise DataError(f"train_fraction + test_fraction + population_fraction = {total:.6g} exceeds 1")
        order = _order(ds.y, rng, stratify)
        n_tr = _size(ftr, n, "train_fraction", ds.name)
        n_te = _size(fte, n, "test_fraction", ds.name)
        n_po = _size(fpo, n, "population_fraction", ds.name)
        if n_tr + n_te + n_po > n:  # only reachable through the 1e-9 tolerance
            n_po = n - n_tr - n_te
        train = order[:n_tr]
        test = order[n_tr:n_tr + n_te]
        population = order[n_tr + n_te:n_tr + n_te + n_po]
    if max_train is not None:
        train = train[:max_train]  # a prefix of a stratified block is stratified too

    train, test, population = (np.sort(p).astype(np.int64) for p in (train, test, population))
    used = np.zeros(n, dtype=bool)
    for p in (train, test, population):
        used[p] = True
    positions = {"train": train, "test": test, "population": population, "unused": np.flatnonzero(~used)}
    return Splits(train=ds.subset(train), test=ds.subset(test), population=ds.subset(population),
                  positions=positions, seed=int(seed), stratified=bool(stratify), official_test=bool(official_test),
                  source_name=ds.name, source_n=n)
