"""Splits (disjoint, covering, stratified, deterministic) and the train-only transforms."""

import numpy as np
import pytest

from unlearn_audit.data import (
    DataError,
    Dataset,
    Standardizer,
    find_fashion_mnist_dir,
    load_dataset,
    prepare,
    split_dataset,
    unit_norm_rows,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _split(ds, seed=0, **kw):
    args = dict(train_fraction=0.5, test_fraction=0.2, population_fraction=0.25, seed=seed)
    args.update(kw)
    return split_dataset(ds, **args)


def test_split_disjoint_covering_sizes(digits):
    s = _split(digits)
    pos = s.positions
    all_pos = np.concatenate([pos["train"], pos["test"], pos["population"], pos["unused"]])
    assert np.array_equal(np.sort(all_pos), np.arange(digits.n))  # disjoint and covering
    assert (s.train.n, s.test.n, s.population.n) == (898, 359, 449)
    assert np.array_equal(s.train.ids, digits.ids[pos["train"]])
    assert not (set(s.train.ids) & set(s.test.ids)) and not (set(s.train.ids) & set(s.population.ids))
    assert not (set(s.test.ids) & set(s.population.ids))
    assert np.array_equal(s.train.x, digits.x[pos["train"]]) and np.array_equal(s.test.y, digits.y[pos["test"]])


def test_split_stratified(digits):
    s = _split(digits)
    props = digits.class_counts() / digits.n
    for part in (s.train, s.test, s.population):
        assert np.all(np.abs(part.class_counts() - props * part.n) <= 2)


def test_split_deterministic_and_seed_dependent(digits):
    a, b, c = _split(digits, seed=3), _split(digits, seed=3), _split(digits, seed=4)
    for k in ("train", "test", "population", "unused"):
        assert np.array_equal(a.positions[k], b.positions[k])
    assert a.train.digest() == b.train.digest()
    assert not np.array_equal(a.positions["train"], c.positions["train"])
    unstrat = _split(digits, seed=3, stratify=False)
    assert unstrat.train.n == a.train.n and not np.array_equal(unstrat.positions["train"], a.positions["train"])


def test_max_train(digits):
    full, capped = _split(digits), _split(digits, max_train=100)
    assert capped.train.n == 100 and set(capped.train.ids) <= set(full.train.ids)
    assert np.array_equal(capped.positions["test"], full.positions["test"])
    assert np.array_equal(capped.positions["population"], full.positions["population"])
    assert capped.positions["unused"].size == full.positions["unused"].size + full.train.n - 100
    assert capped.train.class_counts().min() >= 9


@pytest.mark.parametrize("kw,match", [
    (dict(train_fraction=0.7, test_fraction=0.2, population_fraction=0.2), "exceeds 1"),
    (dict(train_fraction=0.0), r"train_fraction must be in \(0, 1\)"),
    (dict(test_fraction=1.0), r"test_fraction must be in \(0, 1\)"),
    (dict(population_fraction=-0.1), "population_fraction"),
    (dict(train_fraction=float("nan")), "train_fraction"),
    (dict(population_fraction=1e-5), "gives an empty split"),
    (dict(seed=-1), "seed"),
    (dict(max_train=0), "max_train"),
    (dict(official_test=True), "has no official train/test split"),
])
def test_split_validation(digits, kw, match):
    with pytest.raises(DataError, match=match):
        _split(digits, **kw)


def _toy_with_official_test(n_train=400, n_test=100):
    rng = np.random.default_rng(0)
    n = n_train + n_test
    ids = [f"t:train:{i}" for i in range(n_train)] + [f"t:test:{i}" for i in range(n_test)]
    return Dataset(x=rng.normal(size=(n, 3)), y=rng.integers(0, 4, n), ids=np.array(ids), name="t",
                   class_names=list("abcd"), official_test_mask=np.arange(n) >= n_train)


def test_official_test_split():
    ds = _toy_with_official_test()
    s = split_dataset(ds, train_fraction=0.5, test_fraction=1.0, population_fraction=0.5, seed=1, official_test=True)
    assert s.test.n == 100 and s.test.official_test_mask.all()
    assert s.train.n == 200 and s.population.n == 200
    assert not s.train.official_test_mask.any() and not s.population.official_test_mask.any()
    assert s.positions["unused"].size == 0
    half = split_dataset(ds, train_fraction=0.5, test_fraction=0.5, population_fraction=0.25, seed=1,
                         official_test=True)
    assert half.test.n == 50 and half.positions["unused"].size == 50 + 100


def test_fashion_mnist_official_split():
    if find_fashion_mnist_dir() is None:
        pytest.skip("Fashion-MNIST IDX files not installed (Debian package dataset-fashion-mnist absent)")
    ds = load_dataset("fashion_mnist")
    s = split_dataset(ds, train_fraction=0.5, test_fraction=1.0, population_fraction=0.5, seed=0,
                      official_test=True, max_train=1000)
    assert s.test.n == 10000 and all(i.startswith("fashion_mnist:test:") for i in s.test.ids[[0, -1]])
    assert s.train.n == 1000 and s.population.n == 30000
    assert np.array_equal(s.train.class_counts(), np.full(10, 100))
    assert not s.population.official_test_mask.any()


def test_prepare_fits_on_train_only(digits):
    s = _split(digits)
    p = prepare(s, standardize=True, unit_norm=False)
    std = Standardizer().fit(s.train.x)
    assert np.allclose(p.test.x, std.transform(s.test.x))
    flat = p.train.x.reshape(p.train.n, -1).astype(np.float64)
    varying = s.train.x.std(axis=0) > 1e-3
    assert np.allclose(flat.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(flat[:, varying].std(axis=0), 1, atol=1e-4)
    assert not np.allclose(p.test.x.mean(axis=0)[varying], 0, atol=1e-3)  # test stats were not used
    assert np.array_equal(p.train.ids, s.train.ids) and np.array_equal(p.test.y, s.test.y)
    assert p.standardizer is not None and s.standardizer is None
    assert not np.shares_memory(p.train.x, s.train.x)
    assert s.train.x.max() == 1.0  # the original splits are untouched
    with pytest.raises(DataError, match="already prepared"):
        prepare(p)


def test_prepare_unit_norm_bounds_every_split(digits):
    s = _split(digits)
    p = prepare(s, standardize=True, unit_norm=True)
    for part in (p.train, p.test, p.population):
        assert part.max_norm() <= 1.0
    only = prepare(s, standardize=False, unit_norm=True)
    norms = np.linalg.norm(s.train.x, axis=1)
    assert np.allclose(np.linalg.norm(only.train.x, axis=1), np.minimum(norms, 1.0), atol=1e-5)
    summary = p.summary()
    assert summary["unit_norm"] and summary["train"]["max_norm"] <= 1.0 and summary["standardizer"]["std_floor"]


def test_unit_norm_keeps_short_rows_and_image_shapes():
    x = np.array([[0.3, 0.4], [3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = unit_norm_rows(x)
    assert np.array_equal(out[0], x[0]) and np.array_equal(out[2], x[2])
    assert np.linalg.norm(out[1]) <= 1.0 and np.allclose(out[1], [0.6, 0.8], atol=1e-5)
    img = np.random.default_rng(0).normal(size=(4, 1, 5, 5)).astype(np.float32)
    assert unit_norm_rows(img).shape == img.shape


def test_standardizer_constant_features_and_round_trip():
    x = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 1e-5], [5.0, 5.0, 0.0]])
    st = Standardizer(std_floor=1e-3).fit(x)
    out = st.transform(np.array([[3.0, 6.0, 1e-3]]))
    assert out[0, 0] == 0.0 and out[0, 1] == pytest.approx(1.0)  # constant feature: centred only
    assert st.scale_[2] == 1e-3 and abs(out[0, 2]) <= 1.0  # rare feature: scale floored at std_floor
    again = Standardizer.from_dict(st.to_dict())
    assert np.array_equal(again.transform(x), st.transform(x))
    with pytest.raises(DataError, match="not fitted"):
        Standardizer().transform(x)
