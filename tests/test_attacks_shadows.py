"""Shadow ensembles, the shadow cache, the fit check and LiRA on digits.

Keep masks: True = the model trained on the record (label 1 = member), False = non-member (label 0).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from attacks import LiRA, draw_keep_masks, load_keep_masks, signals
from attacks import shadows as sh
from attacks.errors import InvalidInputError, ShadowFitError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def _auc_delong_ci(members, nonmembers, z=1.96):
    """AUC with a DeLong (placement-value) normal interval; test helper only."""
    m, n = np.asarray(members)[:, None], np.asarray(nonmembers)[None, :]
    psi = (m > n) + 0.5 * (m == n)
    auc = psi.mean()
    se = np.sqrt(psi.mean(1).var(ddof=1) / psi.shape[0] + psi.mean(0).var(ddof=1) / psi.shape[1])
    return auc, auc - z * se, auc + z * se


@pytest.mark.parametrize("kind", ["softmax", "mlp"])
def test_ensemble_equals_sequential(digits, kind):
    x, y = digits
    x, y = x[:400], y[:400]
    rng = np.random.default_rng(3)
    masks = rng.random((5, 400)) < np.array([0.1, 0.3, 0.5, 0.7, 0.95])[:, None]  # unequal sizes: padded steps
    kw = dict(epochs=3, batch_size=16, lr=0.2, weight_decay=1e-3, seed=7, hidden=32)
    ens = sh.train_ensemble(kind, x, y, masks, 10, **kw)
    seq = sh.train_sequential(kind, x, y, masks, 10, **kw)
    assert ens.k == 5
    for name in ens.params:
        assert ens.params[name].shape == seq.params[name].shape
        torch.testing.assert_close(ens.params[name], seq.params[name], rtol=0, atol=1e-5)
    np.testing.assert_allclose(ens.train_acc, seq.train_acc)
    sub = ens.select([0, 3])
    assert sub.k == 2 and sub.train_acc[1] == ens.train_acc[3]
    torch.testing.assert_close(sub.params[next(iter(sub.params))][1], ens.params[next(iter(ens.params))][3])
    # the init is not the trained point, and the stacked prediction matches the per-model module
    logits = ens.predict_logits(x[:20])
    assert logits.shape == (5, 20, 10)
    with torch.no_grad():
        ref = ens.to_module(2)(torch.tensor(x[:20], dtype=torch.float32))
    torch.testing.assert_close(logits[2], ref, rtol=1e-5, atol=1e-5)


def test_shadow_cache_hits_and_keys(digits, tmp_path, monkeypatch):
    x, y = digits
    x, y = x[:300], y[:300]
    masks = draw_keep_masks(4, 300, seed=0)
    calls = []
    real = sh.train_ensemble

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(sh, "train_ensemble", counting)
    cache = sh.ShadowCache(tmp_path)
    kw = dict(epochs=2, batch_size=32, lr=0.1, weight_decay=0.0, seed=1, hidden=16)
    first = cache.train_ensemble("mlp", x, y, masks, 10, **kw)
    second = cache.train_ensemble("mlp", x, y, masks, 10, **kw)
    assert len(calls) == 1 and (cache.misses, cache.hits) == (1, 1)
    assert second.from_cache and not first.from_cache and second.key == first.key
    for name in first.params:
        torch.testing.assert_close(first.params[name], second.params[name], rtol=0, atol=0)
    np.testing.assert_array_equal(first.test_acc, second.test_acc)
    # stored without pickle
    with np.load(cache.path(first.key), allow_pickle=False) as z:
        assert all(z[f].dtype != object for f in z.files)
    # a fresh cache object on the same folder loads too
    assert sh.ShadowCache(tmp_path).train_ensemble("mlp", x, y, masks, 10, **kw).from_cache
    assert len(calls) == 1

    base = sh.cache_key("mlp", x, y, masks, 10, **kw)
    assert base == first.key
    x2 = x.copy()
    x2[0, 0] += 1e-9
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 10
    m2 = masks.copy()
    m2[0, 0] = ~m2[0, 0]
    variants = {
        "model_kind": sh.cache_key("softmax", x, y, masks, 10, **kw),
        "x": sh.cache_key("mlp", x2, y, masks, 10, **kw),
        "y": sh.cache_key("mlp", x, y2, masks, 10, **kw),
        "masks": sh.cache_key("mlp", x, y, m2, 10, **kw),
        "n_classes": sh.cache_key("mlp", x, y, masks, 11, **kw),
        "trainer": sh.cache_key("mlp", x, y, masks, 10, trainer="sequential", **kw),
        "x_test": sh.cache_key("mlp", x, y, masks, 10, x_test=x[:5], y_test=y[:5], **kw),
    }
    for name, new in [("epochs", 3), ("batch_size", 16), ("lr", 0.05), ("weight_decay", 1e-4), ("seed", 2),
                      ("hidden", 17), ("dtype", "float64")]:
        variants[name] = sh.cache_key("mlp", x, y, masks, 10, **{**kw, name: new})
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_underfit_shadows_refuse(digits):
    x, y = digits
    keep = draw_keep_masks(5, 600, seed=0)
    x, y = x[:600], y[:600]
    target = sh.train_ensemble("softmax", x, y, keep[:1], 10, epochs=30, lr=0.5, seed=0)
    lazy = sh.train_ensemble("softmax", x, y, keep[1:], 10, epochs=1, lr=1e-4, seed=0)
    good = sh.train_ensemble("softmax", x, y, keep[1:], 10, epochs=30, lr=0.5, seed=0)
    t_train, t_test = float(target.train_acc[0]), float(target.test_acc[0])
    assert t_train > 0.9 and lazy.train_acc.mean() < 0.5
    with pytest.raises(ShadowFitError, match="underfit"):
        sh.check_fit(lazy.train_acc, lazy.test_acc, t_train, t_test, max_gap=0.1)
    summary = sh.check_fit(good.train_acc, good.test_acc, t_train, t_test, max_gap=0.1)
    assert summary["n_shadows"] == 4
    # an attack whose shadows did not fit refuses to report
    conf_all = signals.logit_scaled_confidence(y, logits=lazy.predict_logits(x).double().numpy())
    conf_t = signals.logit_scaled_confidence(y, logits=target.predict_logits(x)[0].double().numpy())
    with pytest.raises(ShadowFitError):
        LiRA().run(conf_all, keep[1:], conf_t, keep[0].astype(int),
                   fit_check=sh.FitCheck.from_ensemble(lazy, t_train, t_test))


def test_keep_masks_balanced_and_saved(tmp_path):
    path = tmp_path / "keep.npy"
    keep = draw_keep_masks(16, 500, seed=4, path=path)
    assert keep.dtype == bool and keep.shape == (16, 500)
    assert (keep.sum(0) == 8).all()  # every record IN for exactly half the shadows
    np.testing.assert_array_equal(load_keep_masks(path), keep)
    np.testing.assert_array_equal(draw_keep_masks(16, 500, seed=4), keep)


def test_lira_on_digits(digits):
    """16 shadow MLPs on random halves of a 600-record pool, target = a 17th model on its own half.

    Online LiRA separates the target's members from its non-members well above chance; offline and
    fixed-variance variants run and give finite scores."""
    x, y = digits
    pool = np.random.default_rng(0).permutation(len(x))[:600]
    xp, yp = x[pool], y[pool]
    keep = draw_keep_masks(17, 600, seed=0)
    ens = sh.train_ensemble("mlp", xp, yp, keep, 10, epochs=100, batch_size=32, lr=0.1, hidden=128, seed=0)
    conf = signals.logit_scaled_confidence(yp, logits=ens.predict_logits(xp).double().numpy())  # (17, 600)
    labels = keep[0].astype(int)  # 1 = the target trained on the record
    fit = sh.FitCheck(ens.train_acc[1:], ens.test_acc[1:], ens.train_acc[0], ens.test_acc[0])
    online = LiRA("online").run(conf[1:], keep[1:], conf[0], labels, fit_check=fit)
    auc, lo, hi = _auc_delong_ci(online.member_scores, online.nonmember_scores)
    print(f"\nLiRA online AUC {online.auc:.3f} (DeLong 95% CI {lo:.3f}-{hi:.3f}); shadow train/test acc "
          f"{ens.train_acc[1:].mean():.3f}/{ens.test_acc[1:].mean():.3f}, target {ens.train_acc[0]:.3f}/"
          f"{ens.test_acc[0]:.3f}")
    assert auc == pytest.approx(online.auc)
    assert lo > 0.55
    assert online.extra["fallback_in"] == 0 and online.extra["fallback_out"] == 0
    assert isinstance(online.extra["shadow_fit"], dict)
    for lira in (LiRA("offline"), LiRA("online", fixed_variance=True), LiRA("offline", fixed_variance=True)):
        r = lira.run(conf[1:], keep[1:], conf[0], labels)
        assert np.isfinite(r.member_scores).all() and np.isfinite(r.nonmember_scores).all()
        print(f"{r.attack}: AUC {r.auc:.3f}")
        assert r.auc > 0.5
    flipped = LiRA("online").run(conf[1:], keep[1:], conf[0], 1 - labels)
    assert flipped.auc == pytest.approx(1 - online.auc)


def test_lira_fallback_for_records_without_shadows():
    rng = np.random.default_rng(0)
    conf = rng.normal(size=(6, 10))
    keep = np.zeros((6, 10), bool)
    keep[:3, :8] = True  # records 8 and 9 have no IN shadow
    scores, info = LiRA("online", min_shadows=2).score(conf, keep, rng.normal(size=10))
    assert np.isfinite(scores).all() and info["fallback_in"] == 2 and info["fallback_out"] == 0
    with pytest.raises(InvalidInputError, match="keep"):
        LiRA().score(conf, keep[:, :5], np.zeros(10))
    with pytest.raises(InvalidInputError, match="target_conf"):
        LiRA().score(conf, keep, np.r_[np.zeros(9), np.inf])


def test_functional_ensemble_equals_the_built_in_trainer_and_caches(digits, tmp_path):
    """Any architecture as forward(w, x): with softmax regression written that way, the vmapped functional trainer
    gives the built-in ensemble's models (same init, same batches, same update) to float round-off; it reloads from
    the cache with its forward re-attached, and refuses to predict without one."""
    x, y = digits
    x, y = x[:300], y[:300]
    k, d, C = 4, x.shape[1], 10
    masks = draw_keep_masks(k, len(x), seed=3)
    kw = dict(epochs=5, batch_size=32, lr=0.3, weight_decay=1e-3, seed=7)
    ref = sh.train_ensemble("softmax", x, y, masks, C, **kw)
    p0 = sh.init_params("softmax", k, d, C, seed=7)
    w0 = torch.cat([p0["W"].reshape(k, -1), p0["b"]], dim=1)

    def forward(w, xb):
        return xb @ w[:d * C].view(d, C) + w[d * C:]

    ens = sh.train_functional_ensemble(forward, w0, x, y, masks, C, **kw)
    assert ens.model_kind == "functional" and ens.k == k
    assert torch.allclose(ens.predict_logits(x), ref.predict_logits(x), atol=1e-4)
    np.testing.assert_allclose(ens.train_acc, ref.train_acc)
    np.testing.assert_allclose(ens.test_acc, ref.test_acc)
    assert 0.8 < ens.train_acc.mean() <= 1.0
    cache = sh.ShadowCache(tmp_path)
    cache.save("k1", ens)
    back = cache.load("k1", forward=forward)
    assert back.from_cache and torch.equal(back.predict_logits(x[:20]), ens.predict_logits(x[:20]))
    with pytest.raises(InvalidInputError, match="forward"):
        cache.load("k1").predict_logits(x[:5])
    with pytest.raises(InvalidInputError, match="init_weights"):
        sh.train_functional_ensemble(forward, w0[:3], x, y, masks, C, **kw)
