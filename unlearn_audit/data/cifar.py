"""CIFAR-10 from the python-pickle batch files in a LOCAL folder (never downloaded).

The batch files are pickles, so they are read with a restricted unpickler: only plain containers and numpy
array reconstruction are allowed (the approach of the Python docs' "Restricting Globals"); anything else in the
file (a class, a function) is refused with a DataError instead of being executed.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def safe_unpickle(path: Path) -> object:
    """Unpickle ``path`` allowing only builtin containers, bytes/str/numbers and numpy arrays."""
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(io.BufferedReader(fh), encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{path}: not a safe CIFAR pickle ({' '.join(str(exc).split())})") from None


def _str_keys(obj: object, path: Path) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in the batch file, found {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _str_keys(safe_unpickle(path), path)
    if "data" not in d or "labels" not in d:
        raise DataError(f"{path}: batch file lacks 'data' or 'labels'")
    data, labels = d["data"], d["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (n, 3072), got {type(data).__name__} {shape}")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise DataError(f"{path}: 'labels' must be a list of integers")
    if len(labels) != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {len(labels)} labels")
    return data, np.asarray(labels, dtype=np.int64)


def _class_names(folder: Path) -> list[str]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    d = _str_keys(safe_unpickle(meta), meta)
    names = d.get("label_names")
    if not isinstance(names, list) or not names:
        return list(CIFAR10_CLASSES)
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar10_local(data_dir, *, flatten: bool = True, name: str = "cifar10_local") -> Dataset:
    """Read ``data_batch_1..5`` (any present, in numeric order) and ``test_batch`` from ``data_dir`` or its
    ``cifar-10-batches-py`` subfolder. Pixels /255; shape (n, 3, 32, 32), or (n, 3072) when ``flatten``.
    Ids ``cifar10_local:train:<i>`` and ``cifar10_local:test:<i>``; ``official_test_mask`` marks test_batch."""
    if data_dir is None:
        raise DataError(f"dataset '{name}' needs data_dir= (a local folder with the CIFAR-10 python batches)")
    folder = Path(data_dir)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DataError(f"dataset '{name}': folder {folder} does not exist")
    train_files = sorted((p for p in folder.iterdir() if re.fullmatch(r"data_batch_\d+", p.name)),
                         key=lambda p: int(p.name.rsplit("_", 1)[1]))
    test_file = folder / "test_batch"
    parts = [("train", p) for p in train_files] + ([("test", test_file)] if test_file.is_file() else [])
    if not parts:
        raise DataError(f"dataset '{name}': no data_batch_<k> or test_batch files in {folder}")
    xs, ys, is_test = [], [], []
    ids: list[str] = []
    counters = {"train": 0, "test": 0}
    for split, p in parts:
        data, labels = _read_batch(p)
        xs.append(data)
        ys.append(labels)
        start = counters[split]
        ids.extend(f"{name}:{split}:{start + i}" for i in range(len(labels)))
        counters[split] += len(labels)
        is_test.append(np.full(len(labels), split == "test"))
    raw = np.concatenate(xs)
    x: np.ndarray = np.empty(raw.shape, dtype=np.float32)
    np.multiply(raw, np.float32(1 / 255), out=x)
    if not flatten:
        x = x.reshape(-1, 3, 32, 32)
    return Dataset(x=x, y=np.concatenate(ys), ids=np.array(ids, dtype=str), name=name,
                   class_names=_class_names(folder), official_test_mask=np.concatenate(is_test), source=str(folder))
