"""The deletion service: HF-OCU deletions applied through the deletion ledger (DESIGN §2.4, §8).

:class:`DurableUnlearner` serves a :class:`~unlearn_audit.deletion.trained_run.TrainedRun` through a
:class:`~unlearn_audit.deletion.ledger.Ledger`. For one request: validate (ids known, not deleted, ε/δ possible,
certificate computable) → ``begin`` (a pending row) → w̄ ← w̄ + Σ_u a_u on a copy of the internal state, certificate
for ALL records deleted so far, σ, a fresh noise seed and the release w̄ + N(0, σ²I) → ``commit`` (hashes
before/after, σ, seed, certificate JSON, latency) → the copy becomes the state.

The noiseless internal state is never persisted on its own. On open it is re-derived as

    w̄ = w_T + Σ over applied requests, in ledger order, of Σ_{u ∈ request} a_u       (float64)

checking every request's recorded state hash before and after; pending requests found on open were never committed,
hence never released: they are rolled back and reported (``recovered``). A process killed at any moment therefore
loses nothing and applies nothing twice. Re-sending a request id returns the earlier receipt. One process at a time:
a lock on the ledger's folder is held while a ``DurableUnlearner`` is open.

History cannot be undone silently. The ledger's rows are hash-chained (:mod:`~unlearn_audit.deletion.ledger`); after
every commit the chain head (number applied, last chain value) is written to the trained run's folder
(``ledger_head.json``) and, by :func:`forget_from_file`, into the release's metadata (``releases/<id>.json``). On
open: a missing or 0-byte ledger where the anchor records deletions, fewer applied requests than the anchor, a chain
that differs at the anchor, an edited or reordered row, or a release the ledger does not hold at the place its
metadata names is refused (``DurableError``, one line naming what does not match) before anything is written:
otherwise deleted records would come back. An anchor one request behind the ledger is a crash between commit and
anchoring, and is brought up to date.

Keep the ledger as secret as the internal state: with the recorded noise seeds and the trained run, anyone can
subtract the noise from a release.

:func:`forget_from_file` is the library side of ``unlearn-audit forget``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np

from unlearn_audit.certify import CertificationError, SensitivityCertificate, calibrate, release
from unlearn_audit.certify.capacity import CapacityPoint, deletion_capacity
from unlearn_audit.common import array_sha256, atomic_save_npy, atomic_write_text, file_sha256
from unlearn_audit.deletion.errors import DurableError
from unlearn_audit.deletion.ledger import AlreadyApplied, Ledger, LedgerEntry
from unlearn_audit.deletion.requests import check_record_ids, check_request_id, default_request_id, read_request_file
from unlearn_audit.deletion.trained_run import TrainedRun, find_trained_run, load_trained_run
from unlearn_audit.pseudonyms import KEY_FILE, new_key, read_or_create_key, request_pseudonym

__all__ = ["ANCHOR_FILE", "DurableUnlearner", "ForgetReceipt", "LEDGER_FILE", "RELEASES_DIR", "forget_from_file",
           "state_hash"]

METHOD = "hfocu"
LEDGER_FILE = "ledger.sqlite"
RELEASES_DIR = "releases"
ANCHOR_FILE = "ledger_head.json"      # in the trained run's folder: the ledger's chain head after every request
RELEASE_FORMAT = "unlearn-audit/release"


def state_hash(state: np.ndarray) -> str:
    """SHA-256 of a state vector as little-endian float64 bytes (the hashes recorded in the ledger)."""
    return array_sha256(state, dtype="<f8")


# ---------------------------------------------------------------------------------------------------------------------
# receipts
@dataclass(frozen=True)
class ForgetReceipt:
    """What a deletion request produced (or, for a re-sent request, what it produced the first time).

    ``applied_now`` is False for a re-sent request id (nothing applied again). ``released`` holds the released
    weights for a request applied now (None for a re-sent one: see ``DurableUnlearner.release_of``).
    ``certificate`` is the stored JSON: ε, δ, mechanism, σ and the sensitivity certificate of ALL records deleted so
    far (the release is calibrated to that union).
    """

    request_id: str
    record_ids: tuple[str, ...]
    applied_now: bool
    applied_at: str
    applied_seq: int
    epsilon: float
    delta: float
    mechanism: str
    sigma: float
    noise_seed: int
    certificate: dict
    latency_ms: float
    model_hash_before: str
    model_hash_after: str
    released: np.ndarray | None = None
    chain: str | None = None

    @property
    def sensitivity(self) -> float:
        return float(self.certificate["sensitivity"])

    @property
    def retrain_due(self) -> bool:
        """True when this release's σ exceeds the run's utility budget: the deletion capacity is spent."""
        return bool((self.certificate.get("capacity") or {}).get("retrain_due"))

    @classmethod
    def from_entry(cls, entry: LedgerEntry, applied_now: bool = False, released=None) -> "ForgetReceipt":
        """The receipt of an applied ledger entry (DurableError for a pending one: it has no receipt yet)."""
        c = entry.certificate or {}
        if (entry.applied_at is None or entry.applied_seq is None or entry.sigma is None or entry.noise_seed is None
                or entry.latency_ms is None or entry.model_hash_before is None or entry.model_hash_after is None):
            raise DurableError(f"request '{entry.request_id}' is not applied: it has no receipt")
        return cls(entry.request_id, tuple(entry.record_ids), applied_now, entry.applied_at, entry.applied_seq,
                   float(c.get("epsilon", math.nan)), float(c.get("delta", math.nan)), str(c.get("mechanism", "?")),
                   float(entry.sigma), int(entry.noise_seed), c, float(entry.latency_ms), entry.model_hash_before,
                   entry.model_hash_after, released, entry.chain)

    def describe(self) -> list[str]:
        """Human-readable lines: the certificate (ε, δ, Δ, σ, bound, constants) and the latency."""
        c = self.certificate
        head = (f"request {self.request_id}: {len(self.record_ids)} record(s) "
                + ("deleted" if self.applied_now else f"already applied at {self.applied_at}; nothing applied again"))
        lines = [head,
                 f"  records deleted so far: {c.get('deleted_total', '?')} in {c.get('requests_total', '?')} "
                 "request(s); the release is certified for all of them",
                 f"  epsilon={self.epsilon:g}  delta={self.delta:g}  mechanism={self.mechanism}",
                 f"  sensitivity Delta={self.sensitivity:.6g}  sigma={self.sigma:.6g}",
                 f"  bound: {c.get('bound', '?')} [{c.get('constants_kind', '?')}, {c.get('model', '?')}, "
                 f"reference retrain: {c.get('reference', '?')}]"]
        if c.get("plug_in_because"):
            lines.append(f"  (plug-in form, looser than the audit's replay: {c['plug_in_because']})")
        consts = c.get("constants", {})
        if consts:
            lines.append("  constants: " + ", ".join(f"{k}={v['value']:.4g} ({v['source']})"
                                                    for k, v in sorted(consts.items())))
        cap = c.get("capacity")
        if cap:
            budget = f"accuracy loss <= {100 * cap['max_accuracy_loss']:.3g} points, sigma <= {cap['sigma_budget']:.4g}"
            if cap.get("retrain_due"):
                lines.append(f"  deletion capacity SPENT: this release's sigma exceeds the utility budget ({budget}); "
                             "a retrain is due")
            else:
                more = ("at least " if cap.get("remaining_is_lower_bound") else "about ") + str(
                    cap.get("remaining_estimate"))
                lines.append(f"  deletion capacity: {more} more random deletions within the utility budget ({budget})")
        lines.append(f"  latency: {self.latency_ms:.2f} ms (recorded at commit)")
        lines.append(f"  state hash: {self.model_hash_before[:16]}… -> {self.model_hash_after[:16]}…")
        return lines


# ---------------------------------------------------------------------------------------------------------------------
# the durable unlearner
class _FileLock:
    """An exclusive advisory lock (flock) on the folder ``path`` (the ledger's: nothing is created to hold it), waited
    for up to ``timeout`` seconds; freed by the OS when the holding process dies."""

    def __init__(self, path: Path, timeout: float, what: str = "the ledger"):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no cross-process lock
            self.fd = None
            return
        try:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise DurableError(f"{path}: cannot open the run folder ({exc.strerror or exc})") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise DurableError(f"{path}: {what} is in use by another process") from None
                time.sleep(0.02)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


class DurableUnlearner:
    """HF-OCU deletions applied through the deletion ledger (see the module docstring).

    Args:
        run: the trained run (``load_trained_run`` or ``TrainedRun.from_unlearner``).
        ledger_path: the ledger's SQLite file (created if missing; tied to ``run.digest``).
        verify_hashes: check every applied request's recorded state hashes while re-deriving the state.
        lock_timeout: seconds to wait for another process that has this ledger open.

    Attributes:
        recovered: the pending requests found on open and rolled back (never released).
    """

    def __init__(self, run: TrainedRun, ledger_path, *, verify_hashes: bool = True, lock_timeout: float = 10.0):
        self.run = run
        self.ledger_path = Path(ledger_path)
        self.verify_hashes = verify_hashes
        self._after_begin = None  # test hook: called between begin and commit
        self._lock = _FileLock(self.ledger_path.parent, lock_timeout, f"the ledger {self.ledger_path.name}")
        folder = getattr(run, "folder", None)
        self.anchor_path = Path(folder) / ANCHOR_FILE if folder is not None else None
        try:
            anchor = self._read_anchor()
            self._check_ledger_file(anchor)
            self.ledger = Ledger(self.ledger_path, base_model_hash=run.digest)
        except BaseException:
            self._lock.release()
            raise
        try:
            self.ledger.verify()
            self._check_anchor(anchor)
            self.recovered: list[LedgerEntry] = self.ledger.rollback_pending()
            self._rederive()
        except BaseException:
            self.close()
            raise

    # -- the chain head's anchor in the trained run ---------------------------------------------------------------
    def _read_anchor(self) -> dict | None:
        if self.anchor_path is None or not self.anchor_path.exists():
            return None
        try:
            a = json.loads(self.anchor_path.read_text(encoding="utf-8"))
            ok = (isinstance(a, dict) and isinstance(a.get("n_applied"), int) and a["n_applied"] >= 0
                  and isinstance(a.get("head"), str) and isinstance(a.get("run_digest"), str))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            ok = False
        if not ok:
            raise DurableError(f"{self.anchor_path}: unreadable ledger anchor; restore it (or the trained run)")
        if a["run_digest"] != self.run.digest:
            raise DurableError(f"{self.anchor_path}: the ledger anchor belongs to another trained run")
        return a

    def _check_ledger_file(self, anchor: dict | None) -> None:
        """Before SQLite touches the file: a missing or empty ledger where the anchor records deletions."""
        if anchor is None or anchor["n_applied"] == 0:
            return
        size = self.ledger_path.stat().st_size if self.ledger_path.exists() else None
        if size is None or size == 0:
            what = "missing" if size is None else "empty (0 bytes)"
            raise DurableError(f"ledger {self.ledger_path} is {what} but the trained run's anchor ({ANCHOR_FILE}) "
                               f"records {anchor['n_applied']} applied request(s): the ledger was deleted or "
                               "truncated; restore it from a backup (deleted records would otherwise come back)")

    def _check_anchor(self, anchor: dict | None) -> None:
        n, head = self.ledger.head()
        if anchor is not None:
            m = anchor["n_applied"]
            if n < m:
                raise DurableError(f"ledger {self.ledger_path} holds {n} applied request(s) but the trained run's "
                                   f"anchor ({ANCHOR_FILE}) records {m}: requests were removed or an older copy was "
                                   "restored; restore the ledger that matches")
            if self.ledger.chain_at(m) != anchor["head"]:
                raise DurableError(f"ledger {self.ledger_path} does not match the trained run's anchor "
                                   f"({ANCHOR_FILE}) at request #{m}: its hash chain differs (the ledger was replaced "
                                   "or rewritten)")
        behind = anchor is None and n > 0 or anchor is not None and n > anchor["n_applied"]
        if self.anchor_path is not None and behind:
            self._write_anchor(n, head)         # a commit whose anchoring was interrupted, or a first anchor

    def _write_anchor(self, n: int, head: str) -> None:
        if self.anchor_path is not None:
            atomic_write_text(self.anchor_path, json.dumps({"format": "unlearn-audit/ledger-anchor", "n_applied": n,
                                                            "head": head, "run_digest": self.run.digest,
                                                            "ledger": self.ledger_path.name}, indent=2) + "\n")

    @classmethod
    def open(cls, run_dir, *, ledger_path=None, **kwargs) -> "DurableUnlearner":
        """Open ``run_dir/trained_run`` (or ``run_dir`` if it is the trained run) with ``run_dir/ledger.sqlite``."""
        run_dir = Path(run_dir)
        run = load_trained_run(find_trained_run(run_dir))
        return cls(run, ledger_path or run_dir / LEDGER_FILE, **kwargs)

    # -- state -------------------------------------------------------------------------------------------------------
    def _replay(self, entries) -> tuple[np.ndarray, str]:
        state = self.run.weights.astype(np.float64)
        h = state_hash(state)
        for e in entries:
            if self.verify_hashes and e.model_hash_before != h:
                raise DurableError(f"ledger request '{e.request_id}': state hash before it does not match the "
                                   "re-derived state; the ledger does not belong to this trained run")
            state = state + self.run.approximator_sum(self.run.positions(e.record_ids))
            h = state_hash(state)
            if self.verify_hashes and e.model_hash_after != h:
                raise DurableError(f"ledger request '{e.request_id}': re-derived state hash differs from the recorded "
                                   "one; the ledger does not belong to this trained run")
        return state, h

    def _rederive(self) -> None:
        applied = self.ledger.applied()
        self._state, self._hash = self._replay(applied)
        self._deleted: dict[str, str] = {rid: e.request_id for e in applied for rid in e.record_ids}
        self._n_applied = len(applied)

    @property
    def deleted_ids(self) -> list[str]:
        return list(self._deleted)

    @property
    def n_applied(self) -> int:
        return self._n_applied

    @property
    def state_hash(self) -> str:
        return self._hash

    def noiseless_state(self) -> np.ndarray:
        """A copy of the noiseless internal state (float64). For audits and tests only: never publish it."""
        return self._state.copy()

    def certificate(self, record_ids=None) -> SensitivityCertificate:
        """Δ for the given ids (default: every record deleted so far)."""
        ids = list(self._deleted) if record_ids is None else list(check_record_ids(record_ids))
        if not ids:
            raise DurableError("nothing deleted yet: no certificate to compute")
        return self.run.certificate(self.run.positions(ids))

    # -- deletion ----------------------------------------------------------------------------------------------------
    def forget(self, record_ids, *, epsilon: float, delta: float, request_id: str | None = None,
               mechanism: str = "analytic", noise_seed: int | None = None) -> ForgetReceipt:
        """Delete ``record_ids`` (one request) and release the model with fresh noise for all deletions so far.

        A re-sent ``request_id`` (default: derived from the ids) returns its earlier receipt and applies nothing.
        Any refusal (unknown or already deleted id, impossible ε/δ, a certificate that cannot be computed) raises
        before the ledger is written.
        """
        t0 = time.perf_counter()
        ids = check_record_ids(record_ids)
        request_id = check_request_id(default_request_id(ids) if request_id is None else request_id)
        existing = self.ledger.get(request_id)
        if existing is not None:
            if sorted(existing.record_ids) != sorted(ids):
                raise DurableError(f"request '{request_id}' was already submitted with different record ids")
            if existing.applied:
                return ForgetReceipt.from_entry(existing)
            # pragma: no cover - pending rows are rolled back on open and we hold the lock
            self.ledger.rollback(request_id)
        calibrate(epsilon, delta, 1.0, mechanism)  # validates ε, δ and the mechanism before anything else
        positions = self.run.positions(ids)
        again = [r for r in ids if r in self._deleted]
        if again:
            raise DurableError(f"record id '{again[0]}' was already deleted (request '{self._deleted[again[0]]}')")
        if noise_seed is None:
            noise_seed = secrets.randbits(63)
        elif isinstance(noise_seed, bool) or not isinstance(noise_seed, Integral) or not 0 <= noise_seed < 2 ** 63:
            raise DurableError(f"noise_seed must be an integer in [0, 2^63), got {noise_seed!r}")
        union = np.concatenate([self.run.positions(list(self._deleted)), positions])
        cert = self.run.certificate(union)
        sigma = calibrate(epsilon, delta, cert.sensitivity, mechanism, finite=True)
        cert_json = {**cert.to_dict(), "epsilon": float(epsilon), "delta": float(delta), "mechanism": mechanism,
                     "sigma": sigma, "request_records": len(ids), "deleted_total": len(union),
                     "requests_total": self._n_applied + 1}
        if self.run.replay_unavailable and "plug-in" in cert.bound:
            cert_json["plug_in_because"] = self.run.replay_unavailable
        capacity = self.capacity(union, sigma, epsilon=epsilon, delta=delta, mechanism=mechanism)
        if capacity is not None:
            cert_json["capacity"] = capacity

        hash_before = self._hash
        entry = self.ledger.begin(request_id, list(ids), METHOD, model_hash_before=hash_before)
        if isinstance(entry, AlreadyApplied):  # pragma: no cover - checked above, we hold the lock
            return ForgetReceipt.from_entry(entry.entry)
        try:
            if self._after_begin is not None:
                self._after_begin()
            new_state = self._state + self.run.approximator_sum(positions)
            hash_after = state_hash(new_state)
            released = release(new_state, sigma, int(noise_seed)).astype(self.run.weights.dtype)
            latency_ms = (time.perf_counter() - t0) * 1e3
            done = self.ledger.commit(request_id, model_hash_after=hash_after, sigma=sigma,
                                      noise_seed=int(noise_seed), certificate=cert_json, latency_ms=latency_ms)
        except BaseException:
            self._recover_after_failure(request_id)
            raise
        self._state, self._hash = new_state, hash_after
        self._deleted.update({rid: request_id for rid in ids})
        self._n_applied += 1
        assert done.applied_seq is not None and done.chain is not None      # Ledger.commit sets both
        self._write_anchor(done.applied_seq, done.chain)
        return ForgetReceipt.from_entry(done, applied_now=True, released=released)

    def capacity(self, union: np.ndarray, sigma: float, *, epsilon: float, delta: float,
                 mechanism: str = "analytic") -> dict | None:
        """Remaining deletion capacity after deleting the positions ``union`` (None when the trained run keeps no
        utility budget). The run keeps the largest σ its model tolerates within the accuracy budget (measured on
        held-out data by the audit that saved it); a release whose σ exceeds it loses more than the budget, and a
        retrain is due. The remaining capacity is estimated for random further deletions (a seeded order of the
        records not yet deleted), each certified through the run's own certificate path."""
        budget = self.run.spec.get("capacity")
        if not budget:
            return None
        sb = float(budget["sigma_budget"])
        out = {"sigma_budget": sb, "max_accuracy_loss": float(budget["max_accuracy_loss"]),
               "noiseless_accuracy": budget.get("noiseless_accuracy"), "retrain_due": bool(sigma > sb),
               "remaining_estimate": 0, "remaining_is_lower_bound": False,
               "how": "random further deletions among the records not yet deleted; a release is within budget while "
                      "its sigma <= sigma_budget (the largest noise the model tolerates within the accuracy budget, "
                      "measured on held-out data when the run was saved)"}
        if out["retrain_due"]:
            return out
        rest = np.setdiff1d(np.asarray(self.run.tracked_positions, dtype=np.int64), union)
        if len(rest) == 0:
            return out
        order = np.random.default_rng(0).permutation(rest)

        def evaluate(k: int) -> CapacityPoint:
            try:
                cert = self.run.certificate(np.concatenate([union, order[:k]]))
            except CertificationError as err:
                return CapacityPoint(k, None, None, math.nan, None, False, str(err)[:200])
            s = calibrate(epsilon, delta, cert.sensitivity, mechanism)
            return CapacityPoint(k, cert.sensitivity, s, math.nan, None, s <= sb)

        cap = deletion_capacity(evaluate, len(order), epsilon=epsilon, delta=delta,
                                max_accuracy_loss=out["max_accuracy_loss"], mechanism=mechanism, bound=self.run.bound)
        out.update(remaining_estimate=cap.capacity, remaining_is_lower_bound=cap.exhausted_stream)
        return out

    def _recover_after_failure(self, request_id: str) -> None:
        """After an exception between begin and the state update: roll the pending row back, or, if the commit
        went through, re-derive the state from the ledger."""
        try:
            e = self.ledger.get(request_id)
            if e is not None and not e.applied:
                self.ledger.rollback(request_id)
            elif e is not None and e.applied:
                self._rederive()
        except Exception:  # pragma: no cover - the ledger itself failed; the next open recovers
            pass

    # -- reading back --------------------------------------------------------------------------------------------------
    def receipt_of(self, request_id: str) -> ForgetReceipt:
        e = self.ledger.get(request_id)
        if e is None or not e.applied:
            raise DurableError(f"request '{request_id}' is not applied in this ledger")
        return ForgetReceipt.from_entry(e)

    def release_of(self, request_id: str) -> np.ndarray:
        """Reproduce the released weights of an applied request from the trained run and the ledger (its state
        re-derived up to it, plus the noise drawn with its recorded seed)."""
        e = self.ledger.get(request_id)
        if e is None or not e.applied:
            raise DurableError(f"request '{request_id}' is not applied in this ledger")
        receipt = ForgetReceipt.from_entry(e)
        upto = [a for a in self.ledger.applied() if a.applied_seq is not None and a.applied_seq <= receipt.applied_seq]
        state, h = self._replay(upto)
        if h != receipt.model_hash_after:
            raise DurableError(f"request '{request_id}': re-derived state does not match the ledger")
        return release(state, receipt.sigma, receipt.noise_seed).astype(self.run.weights.dtype)

    # -- lifecycle -----------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "ledger", None) is not None:
            self.ledger.close()
            del self.ledger
        self._lock.release()

    def __enter__(self) -> "DurableUnlearner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------------------
# the `forget` command's library side
def _check_releases(du: DurableUnlearner, folder: Path) -> None:
    """Every release in ``folder`` must be a request the ledger holds as applied, at the place in the hash chain its
    metadata (``<request>.json``) records: a release the ledger does not know means the ledger lost history."""
    if not folder.is_dir():
        return
    where = f"ledger {du.ledger_path}"
    for meta_path in sorted(folder.glob("*.json")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            rid, seq, chain = meta["request_id"], meta["applied_seq"], meta["ledger_chain"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError):
            raise DurableError(f"{meta_path}: unreadable release metadata") from None
        e = du.ledger.get(rid) if isinstance(rid, str) else None
        if e is None or not e.applied or e.applied_seq != seq or e.chain != chain:
            raise DurableError(f"{meta_path.name}: request {rid!r} was released as #{seq} but {where} does not hold "
                               "it there (hash chain): the ledger was truncated, shortened or replaced")
    for npy in sorted(folder.glob("*.npy")):
        e = du.ledger.get(npy.stem)
        if e is None or not e.applied:
            raise DurableError(f"{npy.name}: a release of request {npy.stem!r}, which {where} does not hold as "
                               "applied: the ledger was truncated, shortened or replaced")


def _remove_release_temporaries(folder: Path) -> None:
    """Remove the temporary files of releases a killed process was writing (``.<name>.npy.<random>.tmp``). Called
    while the ledger's lock is held, so no other process is writing one."""
    if folder.is_dir():
        for tmp in folder.glob(".*.npy.*"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)


def forget_from_file(run_dir, requests_file, *, epsilon: float, delta: float, mechanism: str = "analytic",
                     request_id: str | None = None) -> tuple[ForgetReceipt, Path, list[LedgerEntry]]:
    """One deletion request from a file of record ids, applied to ``run_dir`` through ``run_dir/ledger.sqlite``.

    Validates everything that does not need the ledger (file, ε/δ, the trained run and its hashes, unknown ids)
    before opening it. The default request id is keyed (:func:`unlearn_audit.pseudonyms.request_pseudonym` under the
    run folder's ``record_id.key``): the same ids give the same request (re-sending is idempotent), and neither the
    id nor the release's file name can be recognised without the key. Writes the released weights to
    ``run_dir/releases/<request_id>.npy`` (reproduced from the
    ledger for a re-sent request whose file is missing). Returns (receipt, release path, pending requests that were
    rolled back on open).
    """
    ids = list(check_record_ids(read_request_file(requests_file)))
    if request_id is not None:
        check_request_id(request_id)
    calibrate(epsilon, delta, 1.0, mechanism)
    run_dir = Path(run_dir)
    run = load_trained_run(find_trained_run(run_dir))
    run.positions(ids)
    releases = run_dir / RELEASES_DIR
    ledger = run_dir / LEDGER_FILE
    if (not ledger.exists() or ledger.stat().st_size == 0) and releases.is_dir() and any(releases.glob("*.npy")):
        raise DurableError(f"ledger {ledger} is {'missing' if not ledger.exists() else 'empty (0 bytes)'} but "
                           f"{releases} holds releases: the ledger was deleted or truncated; restore it from a backup")
    with DurableUnlearner(run, ledger) as du:
        _check_releases(du, releases)
        _remove_release_temporaries(releases)
        if request_id is None:      # keyed: the release's file name does not tell which records were deleted
            # (the key is created only for a request that is going to be applied: a refused one writes nothing)
            fresh = not (run_dir / KEY_FILE).exists() and set(ids) & set(du.deleted_ids)
            request_id = request_pseudonym(ids, new_key() if fresh else read_or_create_key(run_dir))
        receipt = du.forget(ids, epsilon=epsilon, delta=delta, request_id=request_id, mechanism=mechanism)
        out = releases / f"{request_id}.npy"
        if receipt.released is not None:
            atomic_save_npy(out, receipt.released)
        elif not out.is_file():
            atomic_save_npy(out, du.release_of(request_id))
        meta = {"format": RELEASE_FORMAT, "version": 1, "request_id": request_id, "applied_seq": receipt.applied_seq,
                "ledger_chain": receipt.chain, "run_digest": run.digest, "sha256": file_sha256(out),
                "epsilon": receipt.epsilon, "delta": receipt.delta, "mechanism": receipt.mechanism,
                "sigma": receipt.sigma}
        atomic_write_text(releases / f"{request_id}.json", json.dumps(meta, indent=2) + "\n")
        return receipt, out, du.recovered
