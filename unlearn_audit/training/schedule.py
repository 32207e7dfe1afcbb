"""The recorded batch schedule: part of a trained model's provenance (DESIGN §2.1).

Indices are positions into the training set (0..n-1), not record ids. ``lrs[t]`` is the step size η_t
used at step t (η_t = η_0·γ^t).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """Mini-batch schedule B_0..B_{T-1} with step sizes.

    Attributes:
        batches: list of int64 arrays, ``batches[t]`` = training-set positions in B_t.
        lrs: float64 array of shape (T,), step size η_t of step t.
        n_train: number of training records n.
    """

    batches: tuple[np.ndarray, ...]
    lrs: np.ndarray
    n_train: int

    @classmethod
    def make(cls, n_train: int, epochs: int, batch_size: int, lr: float, decay: float, seed: int) -> "Schedule":
        """Shuffled epochs of fixed-size batches (the last batch of an epoch may be smaller); η_t = lr·decay^t."""
        if n_train <= 0 or epochs <= 0 or batch_size <= 0:
            raise ValueError("n_train, epochs and batch_size must be positive")
        rng = np.random.default_rng(seed)
        batches = []
        for _ in range(epochs):
            perm = rng.permutation(n_train)
            for start in range(0, n_train, batch_size):
                batches.append(np.sort(perm[start:start + batch_size]).astype(np.int64))
        lrs = lr * decay ** np.arange(len(batches), dtype=np.float64)
        return cls(tuple(batches), lrs, n_train)

    @property
    def n_steps(self) -> int:
        return len(self.batches)

    def batch_sizes(self) -> np.ndarray:
        return np.array([len(b) for b in self.batches], dtype=np.int64)

    def membership_counts(self, positions: np.ndarray) -> np.ndarray:
        """|U ∩ B_t| for every step t, where U is the given set of training positions."""
        mask = np.zeros(self.n_train, dtype=bool)
        mask[np.asarray(positions, dtype=np.int64)] = True
        return np.array([int(mask[b].sum()) for b in self.batches], dtype=np.int64)

    def digest(self) -> str:
        """SHA-256 over the batches and step sizes: ties a store or certificate to this schedule (computed once:
        a schedule is immutable)."""
        return self._digest

    @cached_property
    def _digest(self) -> str:
        return self.content_digest()

    def content_digest(self) -> str:
        """The digest recomputed from the arrays as they are now (:meth:`digest` is computed once): shows whether
        code that was handed the schedule changed it in place."""
        h = hashlib.sha256()
        h.update(np.int64(self.n_train).tobytes())
        for b in self.batches:
            h.update(np.int64(len(b)).tobytes())
            h.update(np.ascontiguousarray(b, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.lrs, dtype=np.float64).tobytes())
        return h.hexdigest()

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        sizes = self.batch_sizes()
        flat = np.concatenate(self.batches) if self.batches else np.zeros(0, np.int64)
        return {"batch_flat": flat, "batch_sizes": sizes, "lrs": self.lrs, "n_train": np.array(self.n_train)}

    @classmethod
    def from_npz_dict(cls, d) -> "Schedule":
        sizes = np.asarray(d["batch_sizes"], dtype=np.int64)
        flat = np.asarray(d["batch_flat"], dtype=np.int64)
        splits = np.cumsum(sizes)[:-1]
        return cls(tuple(np.split(flat, splits)), np.asarray(d["lrs"], dtype=np.float64), int(d["n_train"]))
