"""The in-memory dataset every other module consumes: features, labels and one stable id per record.

Record ids are what deletion requests name (DESIGN §6), so they must survive reloading, subsetting and
splitting unchanged: a loader either takes them from the file or derives them from the record's position in
the original source, ``f"{name}:{index}"`` (``f"{name}:{split}:{index}"`` for sources with official splits).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from unlearn_audit.common import record_id_problem


class DataError(ValueError):
    """Bad or missing input data. The message is always one line and names the dataset, file or record."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _one_line(value: object, limit: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(eq=False, init=False)
class Dataset:
    """Features ``x`` (float32, shape ``(n, *feature_shape)``), labels ``y`` (int64 in ``0..n_classes-1``) and
    unique string ``ids`` for ``n`` records.

    ``ids=None`` derives ``f"{name}:{i}"`` from the position ``i``. ``official_test_mask`` (bool, shape (n,)) marks
    the records of a source's official test split where there is one (Fashion-MNIST, IDX folders, CIFAR-10).
    Construction validates and fails with :class:`DataError` on: non-finite features (naming the first bad record
    id), labels out of range, duplicate ids, mismatched lengths.
    """

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    name: str
    class_names: list[str]
    official_test_mask: np.ndarray | None = None
    feature_names: list[str] | None = None
    source: str = ""

    def __init__(self, x: np.ndarray, y: np.ndarray, ids: np.ndarray | None, name: str, class_names: list[str],
                 official_test_mask: np.ndarray | None = None, feature_names: list[str] | None = None,
                 source: str = "") -> None:
        # Written out (not generated) because ``ids=None`` is accepted but the field is always an array afterwards.
        self.name = name = str(name)
        self.class_names = class_names
        self.official_test_mask = official_test_mask
        self.feature_names = feature_names
        self.source = source
        x = np.asarray(x)
        if x.ndim < 2:
            raise DataError(f"dataset '{name}': x must have shape (n, features...), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise DataError(f"dataset '{name}': x must be real numbers, got dtype {x.dtype}")
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        n = self.x.shape[0]

        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != n:
            raise DataError(f"dataset '{name}': y has shape {y.shape}, expected ({n},) to match x")
        if y.dtype == bool:
            y = y.astype(np.int64)
        if not np.issubdtype(y.dtype, np.integer):
            if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise DataError(f"dataset '{name}': labels must be integers 0..k-1, got dtype {y.dtype}")
        self.y = np.ascontiguousarray(y, dtype=np.int64)

        if ids is None:
            self.ids = np.array([f"{name}:{i}" for i in range(n)], dtype=str)
        else:
            ids = np.asarray(ids)
            if ids.ndim != 1 or ids.shape[0] != n:
                raise DataError(f"dataset '{name}': ids has shape {ids.shape}, expected ({n},) to match x")
            if ids.dtype.kind not in "U":
                ids = np.array([str(v.decode() if isinstance(v, bytes) else v) for v in ids.tolist()], dtype=str)
            self.ids = ids if n else np.zeros(0, dtype="<U1")

        self.class_names = [str(c) for c in self.class_names]
        if not self.class_names:
            raise DataError(f"dataset '{name}': class_names must name at least one class")
        if len(set(self.class_names)) != len(self.class_names):
            raise DataError(f"dataset '{name}': class_names are not unique")
        if self.feature_names is not None:
            self.feature_names = [str(f) for f in self.feature_names]
        if self.official_test_mask is not None:
            mask = np.asarray(self.official_test_mask)
            if mask.shape != (n,):
                raise DataError(f"dataset '{name}': official_test_mask has shape {mask.shape}, expected ({n},)")
            self.official_test_mask = mask.astype(bool)
        self._validate()

    def _validate(self) -> None:
        name, n, k = self.name, self.n, self.n_classes
        if n:
            bad_y = np.flatnonzero((self.y < 0) | (self.y >= k))
            if bad_y.size:
                i = bad_y[0]
                raise DataError(f"dataset '{name}': record '{self.ids[i]}' has label {self.y[i]}, "
                                f"outside 0..{k - 1} ({k} classes)")
            # Fast path: a float64 sum of finite float32 values cannot overflow, so it is finite iff all are.
            if not np.isfinite(self.x.sum(dtype=np.float64)):
                flat = self.x.reshape(n, -1)
                i = int(np.argmin(np.isfinite(flat).all(axis=1)))
                raise DataError(f"dataset '{name}': record '{_one_line(self.ids[i])}' has a non-finite feature "
                                "value (NaN or inf)")
            if np.any(self.ids == ""):
                i = int(np.flatnonzero(self.ids == "")[0])
                raise DataError(f"dataset '{name}': record at position {i} has an empty id")
            for i, rid in enumerate(self.ids.tolist()):
                problem = record_id_problem(rid)
                if problem:
                    raise DataError(f"dataset '{name}': record id {ascii(rid)[:80]} (position {i}) {problem}; "
                                    "record ids must be one line of visible text")
            uniq, counts = np.unique(self.ids, return_counts=True)
            if uniq.shape[0] != n:
                dup = uniq[counts > 1][0]
                raise DataError(f"dataset '{name}': duplicate record id '{_one_line(dup)}'")

    # ------------------------------------------------------------------ properties
    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def __len__(self) -> int:
        return self.n

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.feature_shape))

    def class_counts(self) -> np.ndarray:
        """Number of records per class, shape (n_classes,)."""
        return np.bincount(self.y, minlength=self.n_classes)

    def max_norm(self) -> float:
        """max over records of the L2 norm of the flattened features (certificates depend on it)."""
        if self.n == 0:
            return 0.0
        flat = self.x.reshape(self.n, -1).astype(np.float64)
        return float(np.sqrt(np.max(np.einsum("ij,ij->i", flat, flat))))

    # ------------------------------------------------------------------ operations
    def subset(self, positions) -> "Dataset":
        """The records at ``positions`` (int positions or a bool mask of length n), ids and metadata kept."""
        pos = np.asarray(positions)
        if pos.dtype == bool:
            if pos.shape != (self.n,):
                raise DataError(f"dataset '{self.name}': subset mask has shape {pos.shape}, expected ({self.n},)")
            pos = np.flatnonzero(pos)
        elif pos.size == 0:
            pos = np.zeros(0, dtype=np.int64)
        elif not np.issubdtype(pos.dtype, np.integer) or pos.ndim != 1:
            raise DataError(f"dataset '{self.name}': subset positions must be a 1-D integer array or bool mask")
        if pos.size and (pos.min() < -self.n or pos.max() >= self.n):
            raise DataError(f"dataset '{self.name}': subset position out of range 0..{self.n - 1}")
        return Dataset(
            x=self.x[pos], y=self.y[pos], ids=self.ids[pos], name=self.name, class_names=list(self.class_names),
            official_test_mask=None if self.official_test_mask is None else self.official_test_mask[pos],
            feature_names=None if self.feature_names is None else list(self.feature_names), source=self.source,
        )

    def with_x(self, x: np.ndarray) -> "Dataset":
        """A copy with new features for the same records (same ids, labels and metadata)."""
        x = np.asarray(x)
        if x.shape[0] != self.n:
            raise DataError(f"dataset '{self.name}': new x has {x.shape[0]} records, expected {self.n}")
        return Dataset(x=x, y=self.y.copy(), ids=self.ids.copy(), name=self.name, class_names=list(self.class_names),
                       official_test_mask=None if self.official_test_mask is None else self.official_test_mask.copy(),
                       feature_names=None if self.feature_names is None else list(self.feature_names),
                       source=self.source)

    def index_of(self, ids) -> np.ndarray:
        """Positions of the given record ids (int64, in the order given); DataError naming the first unknown id."""
        wanted = np.asarray([str(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else list(ids))], dtype=str)
        if wanted.size == 0:
            return np.zeros(0, dtype=np.int64)
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        loc = np.searchsorted(sorted_ids, wanted)
        loc_c = np.minimum(loc, max(self.n - 1, 0))
        found = (loc < self.n) & (sorted_ids[loc_c] == wanted) if self.n else np.zeros(wanted.shape, bool)
        if not found.all():
            bad = wanted[np.flatnonzero(~found)[0]]
            raise DataError(f"dataset '{self.name}': unknown record id '{_one_line(bad)}'")
        return order[loc_c].astype(np.int64)

    def digest(self) -> str:
        """sha256 (hex) of x (float32, shape included), y (int64) and ids (utf-8): identifies the data exactly."""
        h = hashlib.sha256()
        h.update(b"unlearn_audit.Dataset/v1\0")
        h.update(repr(self.x.shape).encode() + b"\0")
        h.update(np.ascontiguousarray(self.x, dtype="<f4").tobytes())
        h.update(np.ascontiguousarray(self.y, dtype="<i8").tobytes())
        for rid in self.ids.tolist():
            b = rid.encode("utf-8")
            h.update(len(b).to_bytes(4, "little") + b)
        return h.hexdigest()

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, n={self.n}, feature_shape={self.feature_shape}, "
                f"n_classes={self.n_classes})")
