"""MIA-U (Chen et al. 2021): features, DegCount/DegRate, the shadow protocol, the in-sample refusal and an
end-to-end run on digits. Labels: 1 = deleted record (member of the original model), 0 = never trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from attacks import (
    InSampleScoringError,
    OriginalOnlyAttack,
    ShadowProtocol,
    UnlearningAttack,
    degradation_metrics,
    features,
    signals,
)
from attacks.errors import InvalidInputError, NotFittedError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _auc_delong_ci(members, nonmembers, z=1.96):
    """AUC with a DeLong (placement-value) normal interval; test helper only."""
    m, n = np.asarray(members)[:, None], np.asarray(nonmembers)[None, :]
    psi = (m > n) + 0.5 * (m == n)
    auc = psi.mean()
    se = np.sqrt(psi.mean(1).var(ddof=1) / psi.shape[0] + psi.mean(0).var(ddof=1) / psi.shape[1])
    return auc, auc - z * se, auc + z * se


def _synthetic_factory(calls=None, C=5):
    """Posteriors where deleted records lose confidence after unlearning (a learnable signal)."""
    def factory(train, deleted, query):
        if calls is not None:
            calls.append((train, deleted, query))
        rng = np.random.default_rng(int(query.sum()))
        po = rng.dirichlet(np.ones(C) * 0.5, size=query.size)
        shift = np.where(np.isin(query, deleted), 0.3, 0.02)[:, None] * rng.random((query.size, 1))
        pu = np.clip(po - shift * (po == po.max(1, keepdims=True)), 0, None) + shift / C
        return po, pu / pu.sum(1, keepdims=True)
    return factory


def test_features_shapes_and_values():
    po = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    pu = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(features.direct_diff(po, pu), po - pu)
    np.testing.assert_allclose(features.sorted_diff(po, pu), [[0.2, -0.1, -0.1], [0.0, 0.1, -0.1]], atol=1e-12)
    assert features.direct_concat(po, pu).shape == (2, 6)
    np.testing.assert_allclose(features.sorted_concat(po, pu)[1], [0.6, 0.3, 0.1, 0.6, 0.2, 0.2])
    np.testing.assert_allclose(features.l2(po, pu)[:, 0], np.linalg.norm(po - pu, axis=1))
    np.testing.assert_allclose(features.original_features(po)[1], [0.6, 0.3, 0.1])
    with pytest.raises(InvalidInputError, match="p_unlearned"):
        features.direct_diff(po, pu[:1])
    with pytest.raises(InvalidInputError, match="feature"):
        features.build_features("nope", po, pu)


def test_degradation_metrics_definition():
    labels = np.array([1, 1, 0, 0])
    mia_u = np.array([0.9, 0.4, 0.2, 0.6])
    orig = np.array([0.6, 0.5, 0.5, 0.5])
    degcount, degrate = degradation_metrics(mia_u, orig, labels)
    # positives: 0.9 > 0.6 yes, 0.4 > 0.5 no; negatives: 0.2 < 0.5 yes, 0.6 < 0.5 no
    assert degcount == pytest.approx(2 / 4)
    assert degrate == pytest.approx(((0.9 - 0.6) + (0.4 - 0.5) + (0.5 - 0.2) + (0.5 - 0.6)) / 4)


def test_shadow_protocol_is_disjoint_and_labelled():
    calls = []
    proto = ShadowProtocol(_synthetic_factory(calls), pool_size=400, n_shadows=3, deletions_per_shadow=10, seed=5)
    pairs, target_positions = proto.run()
    assert len(pairs) == 3 and len(calls) == 3
    assert np.intersect1d(proto.shadow_positions, target_positions).size == 0
    assert np.union1d(proto.shadow_positions, target_positions).size == 400
    for (train, deleted, query), pair in zip(calls, pairs):
        assert np.isin(train, proto.shadow_positions).all() and np.isin(query, proto.shadow_positions).all()
        assert np.isin(deleted, train).all()
        unseen = query[pair.labels == 0]
        assert not np.isin(unseen, train).any()                    # negatives: never seen by this shadow
        np.testing.assert_array_equal(np.sort(query[pair.labels == 1]), np.sort(deleted))
        assert pair.labels.sum() == 10 and pair.labels.size == 20
        np.testing.assert_array_equal(pair.ids, query)
    tgt = proto.target_pair()
    assert np.isin(tgt.ids, target_positions).all()
    with pytest.raises(InvalidInputError, match="deletions_per_shadow"):
        ShadowProtocol(_synthetic_factory(), pool_size=40, n_shadows=1, deletions_per_shadow=30)


def test_attacks_refuse_to_score_their_training_records():
    proto = ShadowProtocol(_synthetic_factory(), pool_size=600, n_shadows=4, deletions_per_shadow=20, seed=0)
    pairs = proto.shadow_pairs()
    with pytest.raises(NotFittedError):
        UnlearningAttack().score(pairs[0].p_original, pairs[0].p_unlearned)
    atk = UnlearningAttack().fit(pairs)
    p = pairs[1]
    with pytest.raises(InSampleScoringError):                       # by posterior-row fingerprints
        atk.score(p.p_original, p.p_unlearned)
    with pytest.raises(InSampleScoringError):                       # by record ids
        atk.run(p.p_original, p.p_unlearned, p.labels, ids=p.ids)
    with pytest.raises(InSampleScoringError):                       # one training row hidden among new ones
        tgt = proto.target_pair()
        po = np.vstack([tgt.p_original, p.p_original[:1]])
        pu = np.vstack([tgt.p_unlearned, p.p_unlearned[:1]])
        atk.score(po, pu)
    with pytest.raises(InSampleScoringError):
        atk.original_only_.score(p.p_original)
    with pytest.raises(InSampleScoringError):
        OriginalOnlyAttack().fit(pairs).run(p.p_original, p.labels)
    # plain 3-tuples without ids work too, and disjoint target records are scored
    triples = [(q.p_original, q.p_unlearned, q.labels) for q in pairs]
    atk3 = UnlearningAttack("random_forest", "sorted_diff").fit(triples)
    tgt = proto.target_pair()
    res = atk3.run(tgt.p_original, tgt.p_unlearned, tgt.labels, ids=tgt.ids)
    assert res.n_members == res.n_nonmembers == 20


def test_unlearning_attack_label_flip():
    proto = ShadowProtocol(_synthetic_factory(), pool_size=2000, n_shadows=6, deletions_per_shadow=40, seed=1)
    atk = UnlearningAttack("logistic", "sorted_diff").fit(proto.shadow_pairs())
    tgt = proto.target_pair(index=0)
    res = atk.run(tgt.p_original, tgt.p_unlearned, tgt.labels, ids=tgt.ids)
    flipped = atk.run(tgt.p_original, tgt.p_unlearned, 1 - tgt.labels, ids=tgt.ids)
    assert res.auc > 0.6
    assert flipped.auc == pytest.approx(1 - res.auc, abs=1e-12)
    assert set(res.extra) >= {"degcount", "degrate", "original_only_auc"}


# ------------------------------------------------------------------------------------- end to end on digits
_EPOCHS, _HIDDEN, _LR = 60, 128, 0.1


def _train_original_and_retrained(xt, yt, train, deleted, seed):
    """An MLP trained with SGD on ``train`` and its exact retraining without ``deleted``: same
    initialisation, same batch schedule with the deleted records removed from each batch (mean over
    the remaining ones). No weight decay, many epochs: the original overfits (train accuracy 1)."""
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(64, _HIDDEN, generator=g) / 8, torch.zeros(_HIDDEN),
            torch.randn(_HIDDEN, 10, generator=g) / _HIDDEN ** 0.5, torch.zeros(10)]
    rng = np.random.default_rng(seed)
    schedule = [np.array_split(rng.permutation(train), max(1, train.size // 32)) for _ in range(_EPOCHS)]
    models = []
    for drop in (None, deleted):
        params = [p.clone().requires_grad_(True) for p in init]
        for epoch in schedule:
            for batch in epoch:
                if drop is not None:
                    batch = batch[~np.isin(batch, drop)]
                if batch.size == 0:
                    continue
                b = torch.from_numpy(batch)
                W1, b1, W2, b2 = params
                loss = F.cross_entropy(torch.relu(xt[b] @ W1 + b1) @ W2 + b2, yt[b])
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    for p, gr in zip(params, grads):
                        p -= _LR * gr
        models.append([p.detach() for p in params])
    return models


def test_mia_u_end_to_end_digits(capsys):
    """What this shows (and what Chen et al. claim): MIA-U needs a *difference* between the two models.

    * Exact retraining without the deleted records changes their posteriors more than those of records
      the model never saw, so MIA-U on (p_o, p_u) separates deleted records from non-members: AUC > 0.5
      with a DeLong interval excluding 0.5. On this well-generalising MLP the classical attack on p_o
      alone is near chance, and MIA-U beats it (DegCount > 0.5) -- Chen et al.'s point that unlearning
      can leak more than the original model, especially for well-generalised models.
    * A do-nothing unlearner (p_u = p_o) makes the difference features identically zero: MIA-U with
      DirectDiff then has constant scores, AUC exactly 0.5 -- it carries no information beyond the
      original model; with a concatenation feature it reduces to the original-only attack (same AUC up to
      the classifier's fit). So "MIA-U AUC = 0.5" does NOT certify that a method unlearned: the audit must
      also compare the unlearned model with the retrained one (LiRA / MIA-L on both).
    Default classifier for the difference features here is a random forest: with DirectDiff the sign of
    the change is on the record's own class, which a linear model on the raw vector cannot use (the
    logistic AUC is printed for comparison).
    """
    x, y = load_digits(return_X_y=True)
    xt, yt = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    trained = {}

    def factory_for(unlearner):
        def factory(train, deleted, query):
            key = (train.tobytes(), deleted.tobytes())
            if key not in trained:
                trained[key] = _train_original_and_retrained(xt, yt, train, deleted, seed=int(train[:3].sum()))
            original, retrained = trained[key]
            q = torch.from_numpy(query)
            with torch.no_grad():
                po = signals.softmax(torch.relu(xt[q] @ original[0] + original[1]) @ original[2] + original[3])
                pu = signals.softmax(torch.relu(xt[q] @ retrained[0] + retrained[1]) @ retrained[2] + retrained[3])
            return po, (po.copy() if unlearner == "nothing" else pu)
        return factory

    results = {}
    for unlearner in ("retrain", "nothing"):
        proto = ShadowProtocol(factory_for(unlearner), pool_size=len(x), n_shadows=8, deletions_per_shadow=25,
                               seed=0, train_fraction=0.5)
        pairs = proto.shadow_pairs()
        targets = [proto.target_pair(index=i) for i in range(6)]  # 6 target models x (25 deleted + 25 unseen)
        po = np.concatenate([t.p_original for t in targets])
        pu = np.concatenate([t.p_unlearned for t in targets])
        labels = np.concatenate([t.labels for t in targets])
        for name, atk in {"rf_direct_diff": UnlearningAttack("random_forest", "direct_diff"),
                          "logistic_direct_diff": UnlearningAttack("logistic", "direct_diff"),
                          "logistic_sorted_concat": UnlearningAttack("logistic", "sorted_concat")}.items():
            res = atk.fit(pairs).run(po, pu, labels, target=unlearner)  # no ids: row fingerprints guard
            results[unlearner, name] = res
            auc, lo, hi = _auc_delong_ci(res.member_scores, res.nonmember_scores)
            with capsys.disabled():
                print(f"\n[{unlearner:7s}] MIA-U {name:22s} AUC {auc:.3f} (95% CI {lo:.3f}-{hi:.3f})  "
                      f"original-only AUC {res.extra['original_only_auc']:.3f}  "
                      f"DegCount {res.extra['degcount']:.3f}  DegRate {res.extra['degrate']:+.3f}", end="")
    with capsys.disabled():
        print()

    rt = results["retrain", "rf_direct_diff"]
    _, lo, _ = _auc_delong_ci(rt.member_scores, rt.nonmember_scores)
    assert lo > 0.5, "exact retraining must make deleted records distinguishable through p_o - p_u"
    assert rt.auc > rt.extra["original_only_auc"] and rt.extra["degcount"] > 0.5

    for name in ("rf_direct_diff", "logistic_direct_diff"):
        nothing = results["nothing", name]
        assert nothing.auc == 0.5  # identically zero features -> constant scores
        assert np.ptp(np.r_[nothing.member_scores, nothing.nonmember_scores]) == 0.0
    concat = results["nothing", "logistic_sorted_concat"]
    assert concat.auc == pytest.approx(concat.extra["original_only_auc"], abs=0.03)
    # the original-only attack does not depend on the unlearner
    assert concat.extra["original_only_auc"] == pytest.approx(
        results["retrain", "logistic_sorted_concat"].extra["original_only_auc"])
