"""Durable HF-OCU deletions: trained-run format, idempotency, release semantics, refusals that leave the ledger
unchanged, and a real SIGKILL between begin and commit."""

import shutil
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from unlearn_audit.certify import CertificationError, analytic_gaussian_sigma, certificate_from_constants, release
from unlearn_audit.data import load_dataset, prepare, split_dataset
from unlearn_audit.deletion import (
    DurableError,
    DurableUnlearner,
    TrainedRun,
    TrainedRunError,
    load_trained_run,
    save_trained_run,
    state_hash,
)
from unlearn_audit.deletion.ledger import Ledger, LedgerError
from unlearn_audit.hfocu import HFOCUUnlearner, UnlearningError
from unlearn_audit.models import build_model
from unlearn_audit.training import SGDConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fitted():
    ds = load_dataset("digits")
    sp = prepare(split_dataset(ds, train_fraction=0.6, test_fraction=0.2, population_fraction=0.2, seed=3,
                               max_train=200), standardize=True, unit_norm=True)
    tr = sp.train
    x, y = torch.as_tensor(tr.x), torch.as_tensor(tr.y, dtype=torch.int64)
    model = build_model("softmax", tr.feature_shape, ds.n_classes, seed=3)
    return HFOCUUnlearner(model, SGDConfig(epochs=2, batch_size=32, lr=0.5, lam=0.01, seed=3)).fit(x, y, tr.ids)


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "trained_run"
    save_trained_run(path, fitted)
    return path


@pytest.fixture
def run_dir(saved, tmp_path):
    shutil.copytree(saved, tmp_path / "trained_run")
    return tmp_path


def dump(ledger_path):
    """Every row of the ledger (requests and record claims), for 'unchanged' checks."""
    if not ledger_path.exists():
        return None
    con = sqlite3.connect(ledger_path)
    try:
        return (con.execute("SELECT * FROM requests ORDER BY seq").fetchall(),
                con.execute("SELECT * FROM request_records ORDER BY record_id").fetchall())
    finally:
        con.close()


def expected_state(run, record_ids):
    a = torch.as_tensor(run.approximator_rows(np.arange(run.n_approximators)), dtype=torch.float64)
    rows = torch.as_tensor(run.row_of[[run.position_of[r] for r in record_ids]])
    return torch.as_tensor(run.weights, dtype=torch.float64) + a[rows.flip(0)].sum(0)


# -- trained run on disk --------------------------------------------------------------------------------------------
def test_trained_run_roundtrip_and_certificate_matches_unlearner(fitted, saved):
    run = load_trained_run(saved)
    assert run.digest and run.dim == fitted.model.dim and run.n_train == len(fitted.ids_)
    assert TrainedRun.from_unlearner(fitted).digest == run.digest == run.content_digest()  # content, not file bytes
    assert np.array_equal(run.weights, fitted.weights_.numpy())
    assert np.array_equal(run.approximator_rows(np.arange(run.n_approximators)), fitted.approximators_.numpy())
    assert list(run.record_ids) == list(fitted.ids_) and run.schedule.digest() == fitted.schedule_.digest()
    ids = [str(r) for r in fitted.ids_[[4, 9, 77]]]
    # one certificate path: the same constants give the same bound (this run was saved without the config that
    # rebuilds its training data, so its a-posteriori bound is the plug-in form; the unlearner's replayed one is
    # tighter and both cover the same U; tests/test_trained_run_certificate.py: with the config, they are equal)
    pos = run.positions(ids)
    assert run.bound == fitted.bound == "a_posteriori"
    assert run.certificate(pos).to_dict() == certificate_from_constants(
        fitted.schedule_, pos, fitted.certificate_constants(), bound="a_posteriori").to_dict()
    assert "plug-in" in run.certificate(pos).bound
    assert fitted.certificate(ids).sensitivity < run.certificate(pos).sensitivity
    worst = certificate_from_constants(run.schedule, pos, run.constants, order=run.order, bound="worst_case")
    assert worst.to_dict() == fitted.certificate(ids, bound="worst_case").to_dict()
    assert np.allclose(run.approximator_sum(run.positions(ids)), fitted.approximator_sum(ids).double().numpy())
    files = sorted(p.name for p in saved.iterdir())
    assert files == sorted(["manifest.json", "spec.json", "weights.npy", "record_ids.npy", "schedule.npz", "store",
                            "trajectory.npy"])
    assert run.replay_unavailable == "the trained run records no config to rebuild its training data"
    for npy in list(saved.glob("*.npy")) + list(saved.glob("store/**/*.npy")):  # plain arrays, no pickle
        np.load(npy, allow_pickle=False)


def test_save_refuses_non_empty_folder(fitted, saved):
    with pytest.raises(TrainedRunError, match="not empty"):
        save_trained_run(saved, fitted)


@pytest.mark.parametrize("victim, how", [("store/shard-00000/chunk-000000.npy", "flip"),
                                         ("store/manifest.json", "flip"), ("weights.npy", "flip"),
                                         ("record_ids.npy", "flip"), ("spec.json", "flip"),
                                         ("schedule.npz", "delete"), ("manifest.json", "garbage")])
def test_tampered_run_is_refused(run_dir, victim, how):
    f = run_dir / "trained_run" / victim
    if how == "delete":
        f.unlink()
    elif how == "garbage":
        f.write_text("{not json")
    else:
        data = bytearray(f.read_bytes())
        data[-3] ^= 0x01
        f.write_bytes(bytes(data))
    with pytest.raises(TrainedRunError) as err:
        DurableUnlearner.open(run_dir)
    assert "\n" not in str(err.value)
    assert not (run_dir / "ledger.sqlite").exists()  # refused before the ledger was touched


def test_consistent_tampering_of_run_and_manifest_is_caught_by_the_ledger(run_dir, tmp_path):
    with DurableUnlearner.open(run_dir) as du:
        du.forget([str(du.run.record_ids[0])], epsilon=1.0, delta=1e-5, request_id="r1")
    before = dump(run_dir / "ledger.sqlite")
    # rewrite the whole run with different approximators, manifest hashes recomputed: a different run
    run = load_trained_run(run_dir / "trained_run")
    forged = TrainedRun(run.weights, run.approximator_rows(np.arange(run.n_approximators)) * 1.01,
                        run.tracked_positions, run.record_ids,
                        run.schedule, run.spec)
    save_trained_run(run_dir / "trained_run", forged, overwrite=True)
    with pytest.raises(LedgerError, match="belongs to base model"):
        DurableUnlearner.open(run_dir)
    assert dump(run_dir / "ledger.sqlite") == before


# -- deletion, idempotency, release ---------------------------------------------------------------------------------
def test_forget_idempotent_and_state(run_dir):
    with DurableUnlearner.open(run_dir) as du:
        run, ids = du.run, [str(r) for r in du.run.record_ids[:6]]
        r1 = du.forget(ids[:2], epsilon=1.0, delta=1e-5, request_id="req-1", noise_seed=11)
        assert r1.applied_now and r1.applied_seq == 1 and r1.noise_seed == 11 and r1.released is not None
        state1 = du.noiseless_state()
        again = du.forget(list(reversed(ids[:2])), epsilon=5.0, delta=1e-3, request_id="req-1")
        assert not again.applied_now and again.released is None
        assert again.sigma == r1.sigma and again.model_hash_after == r1.model_hash_after
        assert np.array_equal(du.noiseless_state(), state1) and du.n_applied == 1
        r2 = du.forget(ids[2:5], epsilon=1.0, delta=1e-5, request_id="req-2")
        assert r2.model_hash_before == r1.model_hash_after
        assert du.forget(ids[2:5], epsilon=1.0, delta=1e-5, request_id="req-2").applied_now is False
        assert np.allclose(du.noiseless_state(), expected_state(run, ids[:5]).numpy(), atol=1e-6, rtol=0)
        # the release is calibrated to ALL deletions so far, with fresh noise from the noiseless state
        cert_all = du.certificate()
        assert cert_all.n_forget == 5 and r2.certificate["deleted_total"] == 5
        assert r2.sensitivity == pytest.approx(cert_all.sensitivity)
        assert r2.sigma == pytest.approx(analytic_gaussian_sigma(1.0, 1e-5, cert_all.sensitivity))
        assert np.array_equal(r2.released, release(du.noiseless_state(), r2.sigma, r2.noise_seed).astype(np.float32))
        assert np.array_equal(du.release_of("req-2"), r2.released)
        assert np.array_equal(du.release_of("req-1"), r1.released)
        # default request id: derived from the ids, order-independent
        r3 = du.forget([ids[5]], epsilon=1.0, delta=1e-5)
        assert du.forget([ids[5]], epsilon=1.0, delta=1e-5).request_id == r3.request_id
        with pytest.raises(DurableError, match="different record ids"):
            du.forget(ids[:1], epsilon=1.0, delta=1e-5, request_id="req-1")
        hashes = [r1.model_hash_after, r2.model_hash_after]
    with DurableUnlearner.open(run_dir) as du:  # reopen: re-derived, same hashes, nothing pending
        assert du.recovered == [] and du.n_applied == 3 and sorted(du.deleted_ids) == sorted(ids)
        assert [e.model_hash_after for e in du.ledger.applied()][:2] == hashes
        assert du.state_hash == state_hash(du.noiseless_state())
        assert np.allclose(du.noiseless_state(), expected_state(run, ids).numpy(), atol=1e-6, rtol=0)


def test_second_process_is_locked_out(run_dir):
    with DurableUnlearner.open(run_dir):
        with pytest.raises(DurableError, match="in use"):
            DurableUnlearner.open(run_dir, lock_timeout=0.1)


BAD = [
    ("unknown id", dict(ids=["digits:no-such-record"]), UnlearningError, "unknown record id"),
    ("already deleted", dict(ids="deleted"), UnlearningError, "already deleted"),
    ("deleted + new", dict(ids="mixed"), UnlearningError, "already deleted"),
    ("duplicate in request", dict(ids="dup"), UnlearningError, "twice"),
    ("empty", dict(ids=[]), UnlearningError, "empty"),
    ("epsilon 0", dict(epsilon=0.0), CertificationError, "epsilon"),
    ("epsilon < 0", dict(epsilon=-1.0), CertificationError, "epsilon"),
    ("epsilon nan", dict(epsilon=float("nan")), CertificationError, "epsilon"),
    ("delta 0", dict(delta=0.0), CertificationError, "delta"),
    ("delta 1", dict(delta=1.0), CertificationError, "delta"),
    ("classic eps 2", dict(epsilon=2.0, mechanism="classic"), CertificationError, "classic"),
    ("bad request id", dict(request_id="../x"), UnlearningError, "request id"),
    ("bad seed", dict(noise_seed=-1), UnlearningError, "noise_seed"),
]


@pytest.mark.parametrize("name, change, exc, words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_leaves_ledger_unchanged(run_dir, name, change, exc, words):
    with DurableUnlearner.open(run_dir) as du:
        all_ids = [str(r) for r in du.run.record_ids]
        du.forget(all_ids[:3], epsilon=1.0, delta=1e-5, request_id="first")
        before, state = dump(run_dir / "ledger.sqlite"), du.noiseless_state()
        named = {"deleted": all_ids[1:2], "mixed": [all_ids[10], all_ids[2]], "dup": [all_ids[10], all_ids[10]]}
        spec = change.get("ids")
        ids = named[spec] if isinstance(spec, str) else ([all_ids[10]] if spec is None else spec)
        kw = dict(epsilon=1.0, delta=1e-5, request_id="second")
        kw.update({k: v for k, v in change.items() if k != "ids"})
        with pytest.raises(exc, match=words) as err:
            du.forget(ids, **kw)
        assert "\n" not in str(err.value)
        assert dump(run_dir / "ledger.sqlite") == before
        assert np.array_equal(du.noiseless_state(), state) and du.n_applied == 1
        assert du.forget([all_ids[10]], epsilon=1.0, delta=1e-5, request_id="third").applied_now  # still usable


def test_failure_between_begin_and_commit_rolls_back(run_dir):
    with DurableUnlearner.open(run_dir) as du:
        ids = [str(r) for r in du.run.record_ids[:4]]
        du.forget(ids[:1], epsilon=1.0, delta=1e-5, request_id="a")
        before, state = dump(run_dir / "ledger.sqlite"), du.noiseless_state()

        def boom():
            raise RuntimeError("disk on fire")

        du._after_begin = boom
        with pytest.raises(RuntimeError):
            du.forget(ids[1:3], epsilon=1.0, delta=1e-5, request_id="b")
        assert dump(run_dir / "ledger.sqlite") == before and np.array_equal(du.noiseless_state(), state)
        du._after_begin = None
        assert du.forget(ids[1:3], epsilon=1.0, delta=1e-5, request_id="b").applied_now


KILL_BETWEEN_BEGIN_AND_COMMIT = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from unlearn_audit.deletion import DurableUnlearner
    du = DurableUnlearner.open(sys.argv[1])
    ids = [str(r) for r in du.run.record_ids]
    du.forget(ids[0:2], epsilon=1.0, delta=1e-5, request_id="ok-1")
    du._after_begin = lambda: os.kill(os.getpid(), signal.SIGKILL)
    du.forget(ids[2:5], epsilon=1.0, delta=1e-5, request_id="killed")
    print("not reached", flush=True)
""")


def test_real_sigkill_between_begin_and_commit(run_dir):
    proc = subprocess.run([sys.executable, "-c", KILL_BETWEEN_BEGIN_AND_COMMIT, str(run_dir)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert "not reached" not in proc.stdout
    with Ledger(run_dir / "ledger.sqlite") as led:
        assert [e.request_id for e in led.pending()] == ["killed"]
        assert [e.request_id for e in led.applied()] == ["ok-1"]
    with DurableUnlearner.open(run_dir) as du:
        ids = [str(r) for r in du.run.record_ids]
        assert [e.request_id for e in du.recovered] == ["killed"]
        assert du.ledger.pending() == [] and du.deleted_ids == ids[0:2]
        assert np.allclose(du.noiseless_state(), expected_state(du.run, ids[0:2]).numpy(), atol=1e-6, rtol=0)
        r = du.forget(ids[2:5], epsilon=1.0, delta=1e-5, request_id="killed")   # re-sent: applies once
        assert r.applied_now and r.applied_seq == 2
        assert not du.forget(ids[2:5], epsilon=1.0, delta=1e-5, request_id="killed").applied_now
        assert np.allclose(du.noiseless_state(), expected_state(du.run, ids[0:5]).numpy(), atol=1e-6, rtol=0)
    with Ledger(run_dir / "ledger.sqlite") as led:
        cert = led.applied()[-1].certificate
    assert cert["deleted_total"] == 5 and cert["epsilon"] == 1.0


def test_in_memory_run_and_saved_copy_share_one_ledger(fitted, run_dir):
    ids = [str(r) for r in fitted.ids_[:3]]
    with DurableUnlearner(TrainedRun.from_unlearner(fitted), run_dir / "ledger.sqlite") as du:
        r = du.forget(ids, epsilon=1.0, delta=1e-5, request_id="mem")
    with DurableUnlearner.open(run_dir) as du:  # the saved copy: same content digest, same ledger
        assert du.deleted_ids == ids and du.state_hash == r.model_hash_after


def test_mlp_candidates_measured_constants(tmp_path):
    ds = load_dataset("digits")
    sp = prepare(split_dataset(ds, train_fraction=0.6, test_fraction=0.2, population_fraction=0.2, seed=2,
                               max_train=60), standardize=True, unit_norm=True)
    tr = sp.train
    x, y = torch.as_tensor(tr.x), torch.as_tensor(tr.y, dtype=torch.int64)
    model = build_model("mlp", tr.feature_shape, ds.n_classes, seed=2, hidden=8)
    cands = [str(r) for r in tr.ids[:10]]
    u = HFOCUUnlearner(model, SGDConfig(epochs=1, batch_size=16, lr=0.1, lam=0.01, clip="per_sample", clip_norm=2.0,
                                        seed=2), mode="candidates", candidates=cands).fit(x, y, tr.ids)
    save_trained_run(tmp_path / "trained_run", u)
    with DurableUnlearner.open(tmp_path) as du:
        assert du.run.spec["model"]["hidden"] == 8 and du.run.n_approximators == 10
        r = du.forget(cands[:3], epsilon=1.0, delta=1e-5, request_id="m1")
        assert r.certificate["constants_kind"] == "measured constants"
        assert r.sensitivity == pytest.approx(u.certificate(cands[:3]).sensitivity)
        assert np.allclose(du.noiseless_state(), (u.weights_.double() + u.approximator_sum(cands[:3]).double()).numpy(),
                           atol=1e-6, rtol=0)
        with pytest.raises(DurableError, match="no approximator"):
            du.forget([str(tr.ids[20])], epsilon=1.0, delta=1e-5)


def test_store_backed_unlearner_saves_the_same_run(fitted, saved, tmp_path):
    """An unlearner whose approximators live in a file-backed store (nothing n x d in memory) saves a trained run
    with the same content digest as the in-memory one, so either can serve the same ledger."""
    x, y = fitted.x_, fitted.y_
    model = build_model("softmax", fitted.model.input_shape, fitted.model.n_classes, seed=3)
    on_disk = HFOCUUnlearner(model, fitted.sgd, store_path=str(tmp_path / "store")).fit(x, y, fitted.ids_)
    assert on_disk.approximators_ is None
    save_trained_run(tmp_path / "run" / "trained_run", on_disk)
    run = load_trained_run(tmp_path / "run" / "trained_run")
    assert run.digest == load_trained_run(saved).digest
    ids = [str(r) for r in fitted.ids_[[1, 50, 150]]]
    with DurableUnlearner.open(tmp_path / "run") as du:
        du.forget(ids, epsilon=1.0, delta=1e-5, request_id="disk")
        assert np.allclose(du.noiseless_state(), (fitted.weights_.double() + fitted.approximator_sum(ids).double())
                           .numpy(), atol=1e-6, rtol=0)
