"""The deletion ledger: idempotency, conflicts, durability settings, and real SIGKILL crash tests."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from unlearn_audit.certify import recursion_certificate
from unlearn_audit.deletion.ledger import SCHEMA_VERSION, AlreadyApplied, Ledger, LedgerEntry, LedgerError
from unlearn_audit.training.schedule import Schedule


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger.db") as led:
        yield led


def _apply(led, rid, records, **kw):
    e = led.begin(rid, records, "hfocu", model_hash_before="h0")
    assert isinstance(e, LedgerEntry) and e.status == "pending"
    return led.commit(rid, model_hash_after="h1", sigma=0.25, noise_seed=7, certificate={"eps": 1.0},
                      latency_ms=0.3, **kw)


def test_begin_commit_roundtrip(ledger):
    e = ledger.begin("req-1", ["a", "b"], "hfocu", model_hash_before="h0")
    assert e.record_ids == ("a", "b") and e.applied_at is None and e.applied_seq is None
    assert ledger.pending() == [e] and ledger.applied() == [] and ledger.deleted_record_ids() == set()
    done = ledger.commit("req-1", model_hash_after="h1", sigma=0.5, noise_seed=123, certificate={"delta": 1e-5},
                         latency_ms=1.5)
    assert done.status == "applied" and done.applied_seq == 1 and done.sigma == 0.5 and done.noise_seed == 123
    assert done.certificate == {"delta": 1e-5} and done.latency_ms == 1.5
    assert done.model_hash_before == "h0" and done.model_hash_after == "h1"
    assert done.created_at.endswith("+00:00") and done.applied_at >= done.created_at
    assert ledger.pending() == [] and ledger.applied() == [done]
    assert ledger.deleted_record_ids() == {"a", "b"}
    ledger.verify()


def test_idempotent_resend(ledger):
    first = _apply(ledger, "req-1", ["a", "b"])
    again = ledger.begin("req-1", ["b", "a"], "hfocu")  # same ids, any order
    assert isinstance(again, AlreadyApplied) and again.entry == first and again.request_id == "req-1"
    assert len(ledger) == 1 and len(ledger.applied()) == 1
    # a pending request re-sent comes back as the same pending entry (not a second row)
    p = ledger.begin("req-2", ["c"], "hfocu")
    assert ledger.begin("req-2", ["c"], "hfocu") == p
    assert len(ledger) == 2


def test_conflicting_resend(ledger):
    _apply(ledger, "req-1", ["a", "b"])
    with pytest.raises(LedgerError, match="'req-1' was already submitted with different record ids"):
        ledger.begin("req-1", ["a", "c"], "hfocu")
    with pytest.raises(LedgerError, match="method"):
        ledger.begin("req-1", ["a", "b"], "retrain")


def test_already_deleted_and_pending_claims(ledger):
    _apply(ledger, "req-1", ["a", "b"])
    with pytest.raises(LedgerError, match=r"record 'b' was already deleted by request 'req-1'") as info:
        ledger.begin("req-2", ["z", "b"], "hfocu")
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)
    assert ledger.get("req-2") is None  # nothing half-written
    ledger.begin("req-3", ["c"], "hfocu")
    with pytest.raises(LedgerError, match="record 'c' is part of pending request 'req-3'"):
        ledger.begin("req-4", ["c", "d"], "hfocu")
    ledger.rollback("req-3")
    assert ledger.begin("req-4", ["c", "d"], "hfocu").status == "pending"


def test_commit_and_rollback_errors(ledger):
    with pytest.raises(LedgerError, match="unknown request 'nope'"):
        ledger.commit("nope")
    _apply(ledger, "req-1", ["a"])
    with pytest.raises(LedgerError, match="already applied"):
        ledger.commit("req-1")
    with pytest.raises(LedgerError, match="cannot be rolled back"):
        ledger.rollback("req-1")
    with pytest.raises(LedgerError, match="unknown request"):
        ledger.rollback("nope")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda L: L.begin("", ["a"], "m"), "request_id"),
        (lambda L: L.begin("r", [], "m"), "record_ids must not be empty"),
        (lambda L: L.begin("r", "abc", "m"), "record_ids"),
        (lambda L: L.begin("r", ["a", "a"], "m"), "'a' appears twice"),
        (lambda L: L.begin("r", ["a", 3], "m"), "record id 3"),
        (lambda L: L.begin("r", ["a"], ""), "method"),
    ],
)
def test_begin_validation(ledger, call, match):
    with pytest.raises(LedgerError, match=match):
        call(ledger)
    assert len(ledger) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma=-1.0), "sigma"),
        (dict(sigma=float("nan")), "sigma"),
        (dict(noise_seed=-3), "noise_seed"),
        (dict(noise_seed=2 ** 64), "noise_seed"),
        (dict(latency_ms=float("inf")), "latency_ms"),
        (dict(certificate={"x": float("nan")}), "certificate"),
        (dict(certificate=[1, 2]), "certificate"),
        (dict(certificate="{not json"), "certificate"),
    ],
)
def test_commit_validation_leaves_request_pending(ledger, kwargs, match):
    ledger.begin("r", ["a"], "hfocu")
    with pytest.raises(LedgerError, match=match):
        ledger.commit("r", **kwargs)
    assert [e.request_id for e in ledger.pending()] == ["r"]


def test_certificate_object_stored_as_json(ledger):
    s = Schedule.make(n_train=20, epochs=2, batch_size=5, lr=0.1, decay=1.0, seed=0)
    cert = recursion_certificate(s, [1], 0.9, 1.0, rho_source="analytic", rho_how="x", G_source="enforced",
                                 G_how="clip")
    ledger.begin("r", ["a"], "hfocu")
    e = ledger.commit("r", certificate=cert)
    assert e.certificate == json.loads(cert.to_json())


def test_applied_order_is_commit_order(ledger):
    ledger.begin("first", ["a"], "hfocu")
    ledger.begin("second", ["b"], "hfocu")
    ledger.commit("second")
    ledger.commit("first")
    assert [(e.request_id, e.applied_seq) for e in ledger.applied()] == [("second", 1), ("first", 2)]
    ledger.verify()


def test_rollback_pending_releases_ids(ledger):
    _apply(ledger, "done", ["a"])
    ledger.begin("p1", ["b"], "hfocu")
    ledger.begin("p2", ["c", "d"], "hfocu")
    rolled = ledger.rollback_pending()
    assert [e.request_id for e in rolled] == ["p1", "p2"]
    assert ledger.pending() == [] and ledger.deleted_record_ids() == {"a"}
    assert ledger.begin("p1", ["b", "c"], "hfocu").status == "pending"  # ids and request id are free again
    ledger.verify()


def test_wal_and_synchronous_full(tmp_path):
    path = tmp_path / "l.db"
    with Ledger(path) as led:
        p = led.pragmas()
        assert p["journal_mode"] == "wal"
        assert p["synchronous"] == 2  # FULL
        assert p["foreign_keys"] == 1
        led.begin("r", ["a"], "m")
    raw = sqlite3.connect(path)
    try:  # WAL is persistent in the file itself
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        raw.close()


def test_reopen_and_base_model_hash(tmp_path):
    path = tmp_path / "l.db"
    with Ledger(path, base_model_hash="base-1") as led:
        _apply(led, "r", ["a"])
    with Ledger(path) as led:
        assert led.base_model_hash == "base-1" and led.deleted_record_ids() == {"a"}
    with Ledger(path, base_model_hash="base-1") as led:
        assert len(led.applied()) == 1
    with pytest.raises(LedgerError, match="belongs to base model base-1"):
        Ledger(path, base_model_hash="other")


def test_refuses_memory_and_garbage(tmp_path):
    with pytest.raises(LedgerError, match="in-memory"):
        Ledger(":memory:")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(LedgerError, match="not a readable ledger"):
        Ledger(junk)


def test_two_connections_see_each_other(tmp_path):
    path = tmp_path / "l.db"
    with Ledger(path) as a, Ledger(path) as b:
        _apply(a, "r1", ["x"])
        with pytest.raises(LedgerError, match="already deleted by request 'r1'"):
            b.begin("r2", ["x"], "hfocu")
        assert isinstance(b.begin("r1", ["x"], "hfocu"), AlreadyApplied)


# ---------------------------------------------------------------------------------------------------------------------
# real crash tests: a child process is SIGKILLed
_PRELUDE = textwrap.dedent(
    """
    import sys, time
    from unlearn_audit.deletion.ledger import Ledger
    led = Ledger(sys.argv[1])
    """
)


def _spawn(code: str, path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _PRELUDE + textwrap.dedent(code), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)


def _check_consistent(led: Ledger) -> None:
    led.verify()
    seen: dict[str, str] = {}
    for e in led.applied() + led.pending():
        for rid in e.record_ids:
            assert rid not in seen, f"record {rid} in both {seen[rid]} and {e.request_id}"
            seen[rid] = e.request_id
    for e in led.applied():  # complete commits only
        assert e.applied_at is not None and e.model_hash_after is not None and e.sigma is not None
        assert e.noise_seed is not None and e.certificate is not None and e.latency_ms is not None


def test_kill_between_begin_and_commit(tmp_path):
    path = tmp_path / "l.db"
    child = _spawn(
        """
        for i in range(2):
            led.begin(f"req-{i}", [f"rec-{i}"], "hfocu", model_hash_before=f"h{i}")
            led.commit(f"req-{i}", model_hash_after=f"h{i + 1}", sigma=0.1, noise_seed=i, certificate={"i": i},
                       latency_ms=1.0)
        led.begin("req-2", ["rec-2", "rec-3"], "hfocu", model_hash_before="h2")
        print("ready", flush=True)
        time.sleep(60)
        """,
        path,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "ready", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    with Ledger(path) as led:
        _check_consistent(led)
        assert [e.request_id for e in led.applied()] == ["req-0", "req-1"]
        assert [(e.request_id, e.record_ids) for e in led.pending()] == [("req-2", ("rec-2", "rec-3"))]
        assert led.deleted_record_ids() == {"rec-0", "rec-1"}
        # recovery: re-apply the pending request from scratch, then commit it; re-sending it is idempotent
        assert led.begin("req-2", ["rec-3", "rec-2"], "hfocu").status == "pending"
        led.commit("req-2", model_hash_after="h3", sigma=0.1, noise_seed=2, certificate={"i": 2}, latency_ms=1.0)
        assert isinstance(led.begin("req-2", ["rec-2", "rec-3"], "hfocu"), AlreadyApplied)
        _check_consistent(led)


_LOOP = """
start = int(sys.argv[2])
for p in led.pending():  # recovery on start-up: re-apply (here: just commit) what the last run left pending
    led.commit(p.request_id, model_hash_after="re", sigma=0.1, noise_seed=0, certificate={"recovered": True},
               latency_ms=0.0)
    print("recovered", p.request_id, flush=True)
print("start", flush=True)
for i in range(start, start + 100000):
    led.begin(f"req-{i}", [f"rec-{i}-a", f"rec-{i}-b"], "hfocu", model_hash_before=f"h{i}")
    print("begun", i, flush=True)
    led.commit(f"req-{i}", model_hash_after=f"h{i + 1}", sigma=0.1, noise_seed=i, certificate={"i": i},
               latency_ms=0.5)
    print("committed", i, flush=True)
"""


def test_kill_during_commit_loop(tmp_path):
    path = tmp_path / "l.db"
    rng = random.Random(1234)
    next_start = 0
    committed_seen: set[str] = set()
    for round_ in range(4):
        child = subprocess.Popen([sys.executable, "-c", _PRELUDE + _LOOP, str(path), str(next_start)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        try:
            while child.stdout.readline().strip() != "start":
                assert child.poll() is None, child.stderr.read()
            time.sleep(rng.uniform(0.02, 0.25))  # let it run, then kill at a random moment
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            out = child.stdout.read().split("\n")[:-1]    # complete lines only: the kill can cut the last one
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
            child.stderr.close()
        committed_seen |= {f"req-{ln.split()[1]}" for ln in out if ln.startswith("committed")}
        with Ledger(path) as led:
            _check_consistent(led)
            applied = [e.request_id for e in led.applied()]
            pending = [e.request_id for e in led.pending()]
            assert len(applied) == len(set(applied))
            assert committed_seen <= set(applied)  # a commit that returned is durable
            assert len(pending) <= 1  # only the request in flight at the kill
            n = len(applied) + len(pending)
            assert sorted(applied + pending, key=lambda r: int(r.split("-")[1])) == [f"req-{i}" for i in range(n)]
            assert led.deleted_record_ids() == {f"rec-{r.split('-')[1]}-{s}" for r in applied for s in "ab"}
            assert len(applied) >= 1
            next_start = n
    assert next_start > 4  # the loop really ran between kills


def test_a_version_1_ledger_gets_its_hash_chain_on_first_open(tmp_path):
    """Ledgers written before the hash chain (schema 1) are chained once, in applied order, when first opened."""
    path = tmp_path / "v1.db"
    with Ledger(path, base_model_hash="base") as led:
        for k in range(2):
            led.begin(f"r{k}", [f"id{k}"], "hfocu")
            led.commit(f"r{k}", sigma=1.0, noise_seed=k)
        chained = [e.chain for e in led.applied()]
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("ALTER TABLE requests DROP COLUMN chain")
        raw.execute("PRAGMA user_version=1")
    raw.close()
    with Ledger(path, base_model_hash="base") as led:
        assert [e.chain for e in led.applied()] == chained
        led.verify()
        assert led.head() == (2, chained[-1])
