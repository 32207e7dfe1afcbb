"""Parquet files and image folders (issue 18), on small generated files: stable ids, labels, the same validation as
CSV and npz, and one-line errors naming the file, column or record."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from unlearn_audit.config import ConfigError, config_from_dict
from unlearn_audit.data import DataError, load_dataset


# ----------------------------------------------------------------------------- Parquet
def _parquet(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_ids_string_labels_and_features(tmp_path):
    p = _parquet(tmp_path / "people.parquet", id=["p7", "p3", "p9"], a=[1.0, 2.0, 3.5], b=[0, 1, 2],
                 flag=[True, False, True], label=["no", "yes", "no"])
    ds = load_dataset("parquet", path=str(p))
    assert ds.ids.tolist() == ["p7", "p3", "p9"]
    assert ds.class_names == ["no", "yes"] and ds.y.tolist() == [0, 1, 0]
    assert ds.feature_names == ["a", "b", "flag"]
    np.testing.assert_array_equal(ds.x, [[1.0, 0, 1], [2.0, 1, 0], [3.5, 2, 1]])
    # a reordered file keeps every record's id and features: ids are stable, not positions
    q = _parquet(tmp_path / "people2.parquet", id=["p9", "p7", "p3"], a=[3.5, 1.0, 2.0], b=[2, 0, 1],
                 flag=[True, True, False], label=["no", "no", "yes"])
    ds2 = load_dataset("parquet", path=str(q))
    for rid in ds.ids:
        np.testing.assert_array_equal(ds.x[ds.index_of([rid])], ds2.x[ds2.index_of([rid])])


def test_parquet_named_columns_and_derived_ids(tmp_path):
    p = _parquet(tmp_path / "t.parquet", key=[10, 11], f=[0.5, 0.25], cls=[3, 1])
    ds = load_dataset("parquet", path=str(p), label_column="cls", id_column="key")
    assert ds.ids.tolist() == ["10", "11"] and ds.y.tolist() == [3, 1] and ds.n_classes == 4
    ds = load_dataset("parquet", path=str(_parquet(tmp_path / "u.parquet", f=[0.5, 0.25], label=[0, 1])))
    assert ds.ids.tolist() == ["u:0", "u:1"]


@pytest.mark.parametrize("columns,kwargs,match", [
    (dict(a=[1.0, 2.0], label=[0, 1]), dict(label_column="y"), "no label column 'y'"),
    (dict(a=[1.0, 2.0], label=[0, 1]), dict(id_column="rid"), "no id column 'rid'"),
    (dict(id=["r1", "r2"], a=["x", "y"], label=[0, 1]), {}, "feature column 'a' has type string"),
    (dict(id=["r1", "r2"], a=[1.0, None], label=[0, 1]), {}, "record 'r2' has an empty value in column 'a'"),
    (dict(id=["r1", "r2"], a=[1.0, np.nan], label=[0, 1]), {}, "record 'r2' has a non-finite"),
    (dict(id=["r1", "r1"], a=[1.0, 2.0], label=[0, 1]), {}, "duplicate record id 'r1'"),
    (dict(id=["r1", "r2"], a=[1.0, 2.0], label=["x", None]), {}, "record 'r2' has an empty label"),
    (dict(id=["r1", None], a=[1.0, 2.0], label=[0, 1]), {}, "id column 'id' is empty at row 1"),
    (dict(label=[0, 1]), {}, "no feature columns"),
    (dict(id=["r1", "r2"], a=[1.0, 2.0], label=[0.0, np.nan]), {}, r"record 'r2' has a missing label \(nan\)"),
    (dict(id=["r1", "r2"], a=[1.0, 2.0], label=[0, 10**9]), {}, "makes 1000000001 classes"),      # was OOM
    (dict(id=["r1", "r2"], a=[1.0, 2.0], label=[[0], [1]]), {}, "label column 'label' has type list"),
    (dict(id=[1.0, np.nan], a=[1.0, 2.0], label=[0, 1]), {}, "id column 'id' is empty at row 1"),
    (dict(id=[b"\xff", b"\xfe"], a=[1.0, 2.0], label=[0, 1]), {}, "the id at row 0 of column 'id' is not UTF-8"),
    (dict(id=["r1", "r2"], a=[1.0, 2.0], label=[1, 1]), {}, r"every record has the same label \('1'\)"),
])
def test_parquet_errors(tmp_path, columns, kwargs, match):
    p = _parquet(tmp_path / "bad.parquet", **columns)
    with pytest.raises(DataError, match=match) as e:
        load_dataset("parquet", path=str(p), **kwargs)
    assert "\n" not in str(e.value)


def test_parquet_garbage_file(tmp_path):
    p = tmp_path / "g.parquet"
    p.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_dataset("parquet", path=str(p))


def test_parquet_folder_and_duplicate_columns(tmp_path):
    (tmp_path / "d.parquet").mkdir()              # pyarrow would read every file under it as one table
    _parquet(tmp_path / "d.parquet" / "part-0.parquet", id=["r1", "r2"], a=[1.0, 2.0], label=[0, 1])
    with pytest.raises(DataError, match="d.parquet: a folder, not a Parquet file"):
        load_dataset("parquet", path=str(tmp_path / "d.parquet"))
    pq.write_table(pa.Table.from_arrays([pa.array([1.0, 2.0]), pa.array([3.0, 4.0]), pa.array([0, 1])],
                                        names=["a", "a", "label"]), tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="duplicate column name 'a'"):
        load_dataset("parquet", path=str(tmp_path / "dup.parquet"))


# ----------------------------------------------------------------------------- image folder
def _images(root, spec, size=(6, 5), mode="L", seed=0):
    """spec: class name -> number of images; pixel values random (kept, to compare with what is read)."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for cls, k in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(k):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(arr, mode).save(root / cls / f"{i:03d}.png")
            pixels[f"{cls}/{i:03d}.png"] = arr
    return pixels


def test_image_folder_grayscale_ids_labels_pixels(tmp_path):
    px = _images(tmp_path / "pets", {"dog": 3, "cat": 2})
    ds = load_dataset("image_folder", data_dir=str(tmp_path / "pets"))
    assert ds.class_names == ["cat", "dog"] and ds.n == 5 and ds.feature_shape == (30,)
    assert ds.ids.tolist() == ["cat/000.png", "cat/001.png", "dog/000.png", "dog/001.png", "dog/002.png"]
    assert ds.y.tolist() == [0, 0, 1, 1, 1]
    for i, rid in enumerate(ds.ids):
        np.testing.assert_allclose(ds.x[i], px[rid].reshape(-1) / 255.0, atol=1e-7)
    img = load_dataset("image_folder", data_dir=str(tmp_path / "pets"), flatten=False)
    assert img.feature_shape == (1, 5, 6)
    # adding an image keeps every other record's id (ids are paths, not positions)
    _images(tmp_path / "pets", {"bird": 1}, seed=1)
    ds2 = load_dataset("image_folder", data_dir=str(tmp_path / "pets"))
    assert set(ds.ids) < set(ds2.ids)
    np.testing.assert_array_equal(ds2.x[ds2.index_of(["dog/002.png"])], ds.x[ds.index_of(["dog/002.png"])])


def test_image_folder_colour_is_three_channels(tmp_path):
    px = _images(tmp_path / "c", {"a": 1, "b": 1}, mode="RGB")
    ds = load_dataset("image_folder", data_dir=str(tmp_path / "c"), flatten=False)
    assert ds.feature_shape == (3, 5, 6)
    np.testing.assert_allclose(ds.x[1], px["b/000.png"].transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_image_folder_16_bit_gray_and_mixed_colour(tmp_path):
    """16-bit grayscale is scaled by 65535 (it was clipped at 255 and read as 3 channels); with a colour image in
    the folder every image is RGB, a grayscale one repeated on the three channels."""
    rng = np.random.default_rng(3)
    (tmp_path / "f" / "a").mkdir(parents=True)
    (tmp_path / "f" / "b").mkdir()
    g16 = rng.integers(0, 65536, size=(5, 6), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "f" / "a" / "g16.png")
    assert Image.open(tmp_path / "f" / "a" / "g16.png").mode == "I;16"
    g8 = rng.integers(0, 256, size=(5, 6), dtype=np.uint8)
    Image.fromarray(g8, "L").save(tmp_path / "f" / "b" / "g8.png")
    ds = load_dataset("image_folder", data_dir=str(tmp_path / "f"), flatten=False)
    assert ds.feature_shape == (1, 5, 6)
    np.testing.assert_allclose(ds.x[ds.index_of(["a/g16.png"])[0], 0], g16 / 65535.0, atol=1e-7)
    np.testing.assert_allclose(ds.x[ds.index_of(["b/g8.png"])[0], 0], g8 / 255.0, atol=1e-7)
    rgba = rng.integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "f" / "b" / "rgba.png")
    ds = load_dataset("image_folder", data_dir=str(tmp_path / "f"), flatten=False)
    assert ds.feature_shape == (3, 5, 6)
    for c in range(3):
        np.testing.assert_allclose(ds.x[ds.index_of(["a/g16.png"])[0], c], g16 / 65535.0, atol=1e-7)
    np.testing.assert_allclose(ds.x[ds.index_of(["b/rgba.png"])[0]], rgba[:, :, :3].transpose(2, 0, 1) / 255.0,
                               atol=1e-7)


def test_image_folder_16_bit_pgm_opened_as_32_bit_integers(tmp_path):
    """Pillow opens a 16-bit PGM as mode I (32-bit integers): values within 0..65535 are 16-bit gray, scaled by
    65535 like a 16-bit PNG (it was refused as 'a 32-bit integer image')."""
    rng = np.random.default_rng(4)
    for c in ("a", "b"):
        (tmp_path / "f" / c).mkdir(parents=True)
    g16 = {c: rng.integers(0, 65536, size=(5, 6), dtype=np.uint16) for c in ("a", "b")}
    for c, g in g16.items():
        Image.fromarray(g).save(tmp_path / "f" / c / "g.pgm")
    assert Image.open(tmp_path / "f" / "a" / "g.pgm").mode == "I"
    ds = load_dataset("image_folder", data_dir=str(tmp_path / "f"), flatten=False)
    assert ds.feature_shape == (1, 5, 6)
    for c, g in g16.items():
        np.testing.assert_allclose(ds.x[ds.index_of([f"{c}/g.pgm"])[0], 0], g / 65535.0, atol=1e-7)


def test_image_folder_pipe_is_refused_not_read(tmp_path):
    """A named pipe called x.png blocked the read forever."""
    import os
    import threading

    _images(tmp_path / "f", {"a": 1, "b": 1})
    fifo = tmp_path / "f" / "b" / "x.png"
    os.mkfifo(fifo)
    box: list = []
    t = threading.Thread(target=lambda: box.append(_error_of("image_folder", data_dir=str(tmp_path / "f"))),
                         daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():                              # unblock the reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("reading the image folder blocked on a named pipe")
    assert "x.png: not a regular file" in box[0]


def _error_of(name: str, **kwargs) -> str:
    try:
        load_dataset(name, **kwargs)
    except DataError as err:
        return str(err)
    return ""


@pytest.mark.parametrize("setup,match", [
    (lambda r: (r / "a" / "notes.txt").write_text("x"), "notes.txt: not an image file"),
    (lambda r: (r / "c").mkdir(), "class folder 'c' holds no images"),          # an empty class before
    (lambda r: (r / "a" / "x.png").symlink_to(r / "nowhere.png"), "x.png: a broken link"),
    (lambda r: Image.new("F", (6, 5)).save(r / "a" / "f.tif"), r"a 32-bit float image \(mode F\)"),
    (lambda r: Image.new("I", (6, 5), 70000).save(r / "a" / "i.tif"), r"mode I\) with values outside 0..65535"),
    (lambda r: (r / "a" / "broken.png").write_bytes(b"\x89PNG garbage"), "broken.png: not a readable image"),
    (lambda r: Image.fromarray(np.zeros((9, 9), np.uint8)).save(r / "a" / "big.png"), "big.png: image is 9x9"),
    (lambda r: (r / "README").write_text("x"), "outside the class sub-folders"),
    (lambda r: (r / "a" / "sub").mkdir(), "a folder inside class folder 'a'"),
])
def test_image_folder_errors(tmp_path, setup, match):
    _images(tmp_path / "f", {"a": 2, "b": 1})
    setup(tmp_path / "f")
    with pytest.raises(DataError, match=match) as e:
        load_dataset("image_folder", data_dir=str(tmp_path / "f"))
    assert "\n" not in str(e.value)


def test_image_folder_hidden_files_skipped_and_empty_refused(tmp_path):
    _images(tmp_path / "f", {"a": 1, "b": 1})
    (tmp_path / "f" / ".DS_Store").write_text("x")
    (tmp_path / "f" / "a" / ".hidden").write_text("x")
    assert load_dataset("image_folder", data_dir=str(tmp_path / "f")).n == 2
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset("image_folder", data_dir=str(tmp_path / "e"))


def test_config_keys_for_the_new_formats(tmp_path):
    p = _parquet(tmp_path / "d.parquet", a=[1.0], label=[0])
    cfg = config_from_dict({"data": {"dataset": "parquet", "path": str(p), "id_column": "a"}})
    assert cfg.data.id_column == "a"
    with pytest.raises(ConfigError, match="data.path: dataset 'parquet' needs path"):
        config_from_dict({"data": {"dataset": "parquet"}})
    with pytest.raises(ConfigError, match="data.data_dir: dataset 'image_folder' needs data_dir"):
        config_from_dict({"data": {"dataset": "image_folder"}})
    with pytest.raises(ConfigError, match="data.id_column: dataset 'npz' does not take id_column"):
        config_from_dict({"data": {"dataset": "npz", "path": str(p), "id_column": "a"}})
