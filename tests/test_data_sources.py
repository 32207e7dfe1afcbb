"""Real bundled / packaged datasets: shapes, label ranges, stable ids, registry."""

import numpy as np
import pytest

from unlearn_audit.data import DataError, Dataset, available_datasets, find_fashion_mnist_dir, load_dataset


def _check_basic(ds: Dataset, n: int, feature_shape: tuple, k: int):
    assert ds.n == n == len(ds.ids) == len(ds.y)
    assert ds.feature_shape == feature_shape
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.n_classes == k == len(ds.class_names)
    assert ds.y.min() == 0 and ds.y.max() == k - 1
    assert np.unique(ds.ids).size == n
    assert np.isfinite(ds.x).all()


@pytest.mark.parametrize("name,n,shape,k", [
    ("digits", 1797, (64,), 10),
    ("breast_cancer", 569, (30,), 2),
    ("wine", 178, (13,), 3),
])
def test_sklearn_sets(name, n, shape, k):
    ds = load_dataset(name)
    _check_basic(ds, n, shape, k)
    assert ds.ids[0] == f"{name}:0" and ds.ids[-1] == f"{name}:{n - 1}"
    again = load_dataset(name)
    assert np.array_equal(again.ids, ds.ids) and again.digest() == ds.digest()


def test_digits_scaled_to_unit_interval_and_image_shape():
    ds = load_dataset("digits")
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    img = load_dataset("digits", flatten=False)
    assert img.feature_shape == (1, 8, 8)
    assert np.array_equal(img.x.reshape(img.n, -1), ds.x) and np.array_equal(img.ids, ds.ids)


def test_tabular_sets_are_raw():
    bc = load_dataset("breast_cancer")
    assert bc.class_names == ["malignant", "benign"]
    assert bc.x.max() > 1000  # mean area: raw, standardised later on the train split only
    assert bc.feature_names is not None and len(bc.feature_names) == 30


def test_mnist5000():
    ds = load_dataset("mnist5000")
    _check_basic(ds, 5000, (784,), 10)
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert np.array_equal(ds.class_counts(), np.full(10, 500))
    img = load_dataset("mnist5000", flatten=False)
    assert img.feature_shape == (1, 28, 28)
    assert np.array_equal(img.ids, ds.ids) and np.array_equal(img.x.reshape(5000, -1), ds.x)


def test_fashion_mnist_debian_package():
    folder = find_fashion_mnist_dir()
    if folder is None:
        pytest.skip("Fashion-MNIST IDX files not installed (Debian package dataset-fashion-mnist absent)")
    ds = load_dataset("fashion_mnist")
    _check_basic(ds, 70000, (784,), 10)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.official_test_mask.sum() == 10000 and not ds.official_test_mask[:60000].any()
    assert ds.ids[0] == "fashion_mnist:train:0" and ds.ids[59999] == "fashion_mnist:train:59999"
    assert ds.ids[60000] == "fashion_mnist:test:0" and ds.ids[-1] == "fashion_mnist:test:9999"
    assert np.array_equal(ds.class_counts(), np.full(10, 7000))
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    first = ds.x[[0, 60000]].copy()
    del ds
    again = load_dataset("fashion_mnist", data_dir=str(folder), flatten=False)
    assert again.feature_shape == (1, 28, 28)
    assert again.ids[60000] == "fashion_mnist:test:0"
    assert np.array_equal(again.x[[0, 60000]].reshape(2, -1), first)


def test_registry_and_unknown_name():
    names = available_datasets()
    assert list(names)[0] == "digits"
    for required in ("digits", "breast_cancer", "wine", "mnist5000", "fashion_mnist", "mnist_idx",
                     "cifar10_local", "npz", "csv"):
        assert required in names and names[required] and "\n" not in names[required]
    with pytest.raises(DataError) as e:
        load_dataset("foo")
    msg = str(e.value)
    assert msg.startswith("unknown dataset 'foo'; choose one of: digits, ") and "fashion_mnist" in msg
    assert isinstance(e.value, ValueError)


def test_options_not_taken_are_errors():
    with pytest.raises(DataError, match="does not take path"):
        load_dataset("digits", path="x.npz")
    with pytest.raises(DataError, match="needs path"):
        load_dataset("npz")
    with pytest.raises(DataError, match="needs data_dir"):
        load_dataset("mnist_idx")
    with pytest.raises(DataError, match="needs data_dir"):
        load_dataset("cifar10_local")


def test_fashion_mnist_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no MNIST-format IDX files"):
        load_dataset("fashion_mnist", data_dir=str(tmp_path))
