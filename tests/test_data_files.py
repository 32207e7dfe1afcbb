"""Dataset validation, the IDX reader, npz/CSV user data and local CIFAR-10 batches (generated files)."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from unlearn_audit.data import DataError, Dataset, load_dataset, read_idx

# ----------------------------------------------------------------------------- Dataset


def test_dataset_derived_ids_subset_digest_and_index():
    ds = Dataset(x=np.arange(12.0).reshape(4, 3), y=[0, 1, 2, 1], ids=None, name="toy", class_names=["a", "b", "c"])
    assert ds.ids.tolist() == ["toy:0", "toy:1", "toy:2", "toy:3"]
    assert ds.x.dtype == np.float32 and ds.n == 4 and ds.n_classes == 3 and ds.feature_shape == (3,)
    sub = ds.subset([3, 1])
    assert sub.ids.tolist() == ["toy:3", "toy:1"] and sub.y.tolist() == [1, 1]
    assert ds.subset(np.array([True, False, False, True])).ids.tolist() == ["toy:0", "toy:3"]
    assert ds.index_of(["toy:2", "toy:0"]).tolist() == [2, 0]
    with pytest.raises(DataError, match="unknown record id 'toy:9'"):
        ds.index_of(["toy:9"])
    d = ds.digest()
    assert len(d) == 64 and d == Dataset(ds.x.copy(), ds.y.copy(), ds.ids.copy(), "toy", ["a", "b", "c"]).digest()
    other = Dataset(ds.x.copy(), ds.y.copy(), np.array(["toy:0", "toy:1", "toy:3", "toy:2"]), "toy", ["a", "b", "c"])
    assert other.digest() != d
    assert ds.max_norm() == pytest.approx(np.linalg.norm([9, 10, 11]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(x=[[1.0], [np.nan]], y=[0, 1], ids=["a", "b"]), "dataset 'toy': record 'b' has a non-finite"),
    (dict(x=[[np.inf], [1.0]], y=[0, 1], ids=None), "record 'toy:0' has a non-finite"),
    (dict(x=[[1.0], [2.0]], y=[0, 2], ids=None), "label 2, outside 0..1"),
    (dict(x=[[1.0], [2.0]], y=[0, -1], ids=None), "label -1"),
    (dict(x=[[1.0], [2.0]], y=[0, 1], ids=["a", "a"]), "duplicate record id 'a'"),
    (dict(x=[[1.0], [2.0]], y=[0], ids=None), "y has shape"),
    (dict(x=[[1.0], [2.0]], y=[0, 1], ids=["a"]), "ids has shape"),
    (dict(x=[1.0, 2.0], y=[0, 1], ids=None), "x must have shape"),
])
def test_dataset_validation(kwargs, match):
    with pytest.raises(DataError, match=match) as e:
        Dataset(name="toy", class_names=["0", "1"], **kwargs)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- IDX

_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
          np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def write_idx(path, arr, compress=False):
    """Our own test-side IDX writer (independent of the reader under test)."""
    arr = np.asarray(arr)
    header = bytes([0, 0, _CODES[arr.dtype], arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    payload = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if compress:
        payload = gzip.compress(payload)
    with open(path, "wb") as fh:
        fh.write(payload)


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=(5, 3, 2)) * 50).astype(dtype)
    p = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(p, arr, compress)
    got = read_idx(p)
    assert got.dtype == np.dtype(dtype).newbyteorder("=") and np.array_equal(got, arr)


def test_idx_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "t.idx"
    write_idx(p, arr)
    good = p.read_bytes()
    p.write_bytes(good[:-5])
    with pytest.raises(DataError, match=r"truncated data \(header says \(2, 3, 4\) = 24 bytes, found 19\)"):
        read_idx(p)
    p.write_bytes(good[:6])
    with pytest.raises(DataError, match="truncated header"):
        read_idx(p)
    p.write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(DataError, match="wrong magic number"):
        read_idx(p)
    p.write_bytes(good[:2] + b"\x0a" + good[3:])
    with pytest.raises(DataError, match="unknown data type code 0x0A"):
        read_idx(p)
    p.write_bytes(good + b"\x00")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(p)
    gz = tmp_path / "t.idx.gz"
    gz.write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        read_idx(gz)
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path / "missing")


def test_mnist_idx_folder(tmp_path):
    rng = np.random.default_rng(1)
    tr_x = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    te_x = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    tr_y = np.array([0, 1, 2, 3, 4, 5, 9], dtype=np.uint8)
    te_y = np.array([1, 1, 0], dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr_x, True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", tr_y, True)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", te_x)  # the dotted variant, uncompressed
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", te_y)
    ds = load_dataset("mnist_idx", data_dir=str(tmp_path))
    assert ds.n == 10 and ds.feature_shape == (784,) and ds.n_classes == 10
    assert ds.ids[6] == "mnist_idx:train:6" and ds.ids[7] == "mnist_idx:test:0"
    assert ds.official_test_mask.tolist() == [False] * 7 + [True] * 3
    assert np.allclose(ds.x[7], te_x[0].reshape(-1) / 255.0) and ds.y.tolist() == tr_y.tolist() + te_y.tolist()
    img = load_dataset("mnist_idx", data_dir=str(tmp_path), flatten=False)
    assert img.feature_shape == (1, 28, 28)
    # fashion_mnist from the same folder layout (data_dir) uses its own names and ids
    fm = load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert fm.ids[7] == "fashion_mnist:test:0" and fm.class_names[9] == "Ankle boot"
    (tmp_path / "t10k-labels.idx1-ubyte").unlink()
    with pytest.raises(DataError, match="test labels file missing"):
        load_dataset("mnist_idx", data_dir=str(tmp_path))


def test_idx_label_count_mismatch(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="3 images but .* 2 labels"):
        load_dataset("mnist_idx", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- npz


def test_npz_with_ids_and_string_labels(tmp_path):
    p = tmp_path / "people.npz"
    x = np.random.default_rng(0).normal(size=(5, 2, 3))
    np.savez(p, x=x, y=np.array(["dog", "cat", "dog", "emu", "cat"]), ids=np.array([f"p{i}" for i in range(5)]))
    ds = load_dataset("npz", path=str(p))
    assert ds.class_names == ["cat", "dog", "emu"] and ds.y.tolist() == [1, 0, 1, 2, 0]
    assert ds.ids.tolist() == ["p0", "p1", "p2", "p3", "p4"] and ds.feature_shape == (2, 3)
    assert load_dataset("npz", path=str(p), flatten=True).feature_shape == (6,)
    assert ds.name == "people" and np.allclose(ds.x, x)


def test_npz_integer_labels_derived_and_int_ids(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.ones((3, 4)), y=np.array([0, 3, 1]))
    ds = load_dataset("npz", path=str(p))
    assert ds.ids.tolist() == ["d:0", "d:1", "d:2"] and ds.n_classes == 4 and ds.y.tolist() == [0, 3, 1]
    np.savez(p, x=np.ones((3, 4)), y=np.array([0, 1, 1]), ids=np.array([10, 20, 30]))
    assert load_dataset("npz", path=str(p)).ids.tolist() == ["10", "20", "30"]


def test_npz_string_labels_with_class_names_keep_file_order(tmp_path):
    p = tmp_path / "c.npz"
    np.savez(p, x=np.ones((3, 2)), y=np.array(["lo", "hi", "lo"]), class_names=np.array(["lo", "hi"]))
    ds = load_dataset("npz", path=str(p))
    assert ds.class_names == ["lo", "hi"] and ds.y.tolist() == [0, 1, 0]
    np.savez(p, x=np.ones((3, 2)), y=np.array(["lo", "mid", "lo"]), class_names=np.array(["lo", "hi"]))
    with pytest.raises(DataError, match="record 'c:1' has label 'mid' not in class_names"):
        load_dataset("npz", path=str(p))


def test_npz_errors(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.ones((3, 4)))
    with pytest.raises(DataError, match="missing array"):
        load_dataset("npz", path=str(p))
    np.savez(p, x=np.ones((3, 4)), y=np.array([0, 1, 0]), ids=np.array(["a", 1, None], dtype=object))
    with pytest.raises(DataError, match="object array, which is never loaded") as err:
        load_dataset("npz", path=str(p))
    assert "allow_pickle" not in str(err.value)
    x = np.ones((3, 4))
    x[2, 1] = np.nan
    np.savez(p, x=x, y=np.array([0, 1, 0]), ids=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match="dataset 'bad': record 'c' has a non-finite"):
        load_dataset("npz", path=str(p))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("npz", path=str(tmp_path / "nope.npz"))


# ----------------------------------------------------------------------------- CSV


def test_csv_string_labels_and_ids(tmp_path):
    p = tmp_path / "patients.csv"
    p.write_text("id,age,weight,label\nA7,30,70.5,sick\nB2,41,80,healthy\nC9,25,60,sick\n")
    ds = load_dataset("csv", path=str(p))
    assert ds.ids.tolist() == ["A7", "B2", "C9"]
    assert ds.class_names == ["healthy", "sick"] and ds.y.tolist() == [1, 0, 1]
    assert ds.feature_names == ["age", "weight"] and ds.x.tolist() == [[30, 70.5], [41, 80], [25, 60]]


def test_csv_custom_label_column_and_derived_ids(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("f1,f2,target\n1,2,0\n3,4,2\n\n5,6,1\n")
    ds = load_dataset("csv", path=str(p), label_column="target")
    assert ds.ids.tolist() == ["t:0", "t:1", "t:2"] and ds.y.tolist() == [0, 2, 1] and ds.n_classes == 3
    with pytest.raises(DataError, match="no label column 'label'"):
        load_dataset("csv", path=str(p))


def test_csv_nan_names_the_record(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("id,a,b,label\nr1,1,2,x\nr2,nan,2,y\n")
    with pytest.raises(DataError, match="dataset 'n': record 'r2' has a non-finite feature value") as e:
        load_dataset("csv", path=str(p))
    assert "\n" not in str(e.value)
    p.write_text("a,b,label\n1,2,x\n3,,y\n")
    with pytest.raises(DataError, match="record 'n:1' has an empty value in column 'b'"):
        load_dataset("csv", path=str(p))
    p.write_text("a,b,label\n1,2,x\n3,abc,y\n")
    with pytest.raises(DataError, match="non-numeric .* in column 'b'"):
        load_dataset("csv", path=str(p))
    p.write_text("a,b,label\n1,2,x\n3,4\n")
    with pytest.raises(DataError, match="has 2 fields, header has 3"):
        load_dataset("csv", path=str(p))
    p.write_text("id,a,label\nr1,1,x\nr1,2,y\n")
    with pytest.raises(DataError, match="duplicate record id 'r1'"):
        load_dataset("csv", path=str(p))


# ----------------------------------------------------------------------------- CIFAR-10 (local)


def _write_batch(path, data, labels, protocol=2):
    d = {b"batch_label": b"generated", b"labels": list(labels), b"data": data,
         b"filenames": [b"img%d.png" % i for i in range(len(labels))]}
    with open(path, "wb") as fh:
        pickle.dump(d, fh, protocol=protocol)


def test_cifar10_local_generated_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    b1 = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
    b2 = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    te = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
    _write_batch(root / "data_batch_1", b1, [0, 1, 2, 3])
    _write_batch(root / "data_batch_2", b2, [9, 8, 7], protocol=5)
    _write_batch(root / "test_batch", te, [5, 5], protocol=4)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)], b"num_vis": 3072}, fh, protocol=2)
    ds = load_dataset("cifar10_local", data_dir=str(tmp_path))  # parent folder is accepted too
    assert ds.n == 9 and ds.feature_shape == (3072,) and ds.class_names[0] == "c0"
    assert ds.ids.tolist()[3:6] == ["cifar10_local:train:3", "cifar10_local:train:4", "cifar10_local:train:5"]
    assert ds.ids[7] == "cifar10_local:test:0" and ds.official_test_mask.sum() == 2
    assert ds.y.tolist() == [0, 1, 2, 3, 9, 8, 7, 5, 5]
    assert np.allclose(ds.x[4], b2[0] / 255.0)
    img = load_dataset("cifar10_local", data_dir=str(root), flatten=False)
    assert img.feature_shape == (3, 32, 32)
    assert np.allclose(img.x[0, 1], b1[0, 1024:2048].reshape(32, 32) / 255.0)  # channel-major rows


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.target}",))


def test_cifar10_local_refuses_code_in_pickles(tmp_path):
    target = tmp_path / "pwned"
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": _Evil(target), b"labels": [0]}, fh)
    with pytest.raises(DataError, match="not a safe CIFAR pickle .*posix.system|not a safe CIFAR pickle .*os"):
        load_dataset("cifar10_local", data_dir=str(tmp_path))
    assert not target.exists()


def test_cifar10_local_errors(tmp_path):
    with pytest.raises(DataError, match="no data_batch"):
        load_dataset("cifar10_local", data_dir=str(tmp_path))
    _write_batch(tmp_path / "data_batch_1", np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(DataError, match=r"shape \(n, 3072\)"):
        load_dataset("cifar10_local", data_dir=str(tmp_path))
    _write_batch(tmp_path / "data_batch_1", np.zeros((2, 3072), np.uint8), [0, 12])
    with pytest.raises(DataError, match="label 12"):
        load_dataset("cifar10_local", data_dir=str(tmp_path))
