"""Durable HF-OCU deletions: every erasure request goes through the deletion ledger (DESIGN §2.4, §8).

Two parts:

* A **trained run** on disk: what online deletion needs from a finished training, and nothing else: the base
  weights w_T, the approximators a_u (float32), the tracked training positions, the record ids, the batch schedule,
  a JSON spec (model, SGD settings, the constants the certificate needs) and a manifest with the SHA-256 of every
  file. No pickle anywhere (``np.load(allow_pickle=False)``). ``save_trained_run`` / ``load_trained_run`` are the only
  two functions that know the format, so it can move to the memory-mapped checksummed store later.

      run_dir/trained_run/  manifest.json  spec.json  weights.npy  approximators.npy  tracked_positions.npy
                            record_ids.npy  schedule.npz

* :class:`DurableUnlearner`: deletions applied through :class:`~unlearn_audit.ledger.Ledger`. For one request:
  validate (ids known, not deleted, ε/δ possible, certificate computable) → ``begin`` (a pending row) →
  w̄ ← w̄ + Σ_u a_u on a copy of the internal state, certificate for ALL records deleted so far, σ, a fresh noise seed and the release
  w̄ + N(0, σ²I) → ``commit`` (hashes before/after, σ, seed, certificate JSON, latency) → the copy becomes the state.

  The noiseless internal state is never persisted on its own. On open it is re-derived as

      w̄ = w_T + Σ over applied requests, in ledger order, of Σ_{u ∈ request} a_u       (float64)

  checking every request's recorded state hash before and after; pending requests found on open were never
  committed, hence never released: they are rolled back and reported (``recovered``). A process killed at any
  moment therefore loses nothing and applies nothing twice. Re-sending a request id returns the earlier receipt.
  One process at a time: a lock file beside the ledger is held while a ``DurableUnlearner`` is open.

  Keep the ledger as secret as the internal state: with the recorded noise seeds and the trained run, anyone can
  subtract the noise from a release.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np

from unlearn_audit.certify import (SensitivityCertificate, calibrate, recursion_certificate, release,
                                   softmax_regression_constants)
from unlearn_audit.hfocu.unlearner import UnlearningError
from unlearn_audit.ledger import AlreadyApplied, Ledger, LedgerEntry
from unlearn_audit.training.schedule import Schedule

__all__ = ["DurableError", "DurableUnlearner", "ForgetReceipt", "TrainedRun", "TrainedRunError", "forget_from_file",
           "load_trained_run", "save_trained_run", "state_hash"]

FORMAT = "unlearn-audit/trained-run"
FORMAT_VERSION = 1
METHOD = "hfocu"
TRAINED_RUN_DIR = "trained_run"
LEDGER_FILE = "ledger.sqlite"
RELEASES_DIR = "releases"
_FILES = ("weights.npy", "approximators.npy", "tracked_positions.npy", "record_ids.npy", "schedule.npz", "spec.json")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class TrainedRunError(UnlearningError):
    """A trained run that is missing, malformed, or does not match its manifest (hash)."""


class DurableError(UnlearningError):
    """A deletion request the durable unlearner refuses, or a ledger that disagrees with the trained run."""


# ---------------------------------------------------------------------------------------------------------------------
# hashing
def state_hash(state: np.ndarray) -> str:
    """SHA-256 of a state vector as little-endian float64 bytes (the hashes recorded in the ledger)."""
    return hashlib.sha256(np.ascontiguousarray(state, dtype="<f8").tobytes()).hexdigest()


def _array_hash(a: np.ndarray) -> str:
    """SHA-256 of an array's raw bytes (equals ``models.functional.weights_hash`` of the same float tensor)."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files_digest(file_hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(file_hashes, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# the trained run
class TrainedRun:
    """What online deletion needs from a finished training: base weights, approximators, ids, schedule, spec.

    Args:
        weights: w_T, shape (d,), float32 or float64.
        approximators: (m, d) float32; row r is a_u for the training position ``tracked_positions[r]``.
        tracked_positions: (m,) int64, unique, in [0, n).
        record_ids: (n,) record ids (str), unique, one per training position.
        schedule: the recorded batch schedule (n_train = n).
        spec: JSON-ready dict: ``model``, ``sgd``, ``hfocu`` and ``certificate`` (the constants for Δ).
        digest: the run digest (from the manifest); computed by ``save_trained_run``.
    """

    def __init__(self, weights, approximators, tracked_positions, record_ids, schedule: Schedule, spec: dict,
                 digest: str | None = None):
        w = np.asarray(weights)
        a = approximators if isinstance(approximators, np.ndarray) else np.asarray(approximators)
        tracked = np.asarray(tracked_positions)
        ids = np.asarray(record_ids)
        if w.ndim != 1 or w.dtype not in (np.float32, np.float64) or not np.all(np.isfinite(w)):
            raise TrainedRunError(f"weights must be a finite float32/float64 vector, got shape {w.shape} {w.dtype}")
        if a.ndim != 2 or a.shape[1] != w.shape[0] or a.dtype != np.float32:
            raise TrainedRunError(f"approximators must be float32 of shape (m, {w.shape[0]}), got {a.shape} {a.dtype}")
        if ids.ndim != 1 or ids.dtype.kind != "U":
            raise TrainedRunError("record ids must be a 1-D array of str")
        n = len(ids)
        if len(np.unique(ids)) != n:
            raise TrainedRunError("record ids are not unique")
        if schedule.n_train != n:
            raise TrainedRunError(f"schedule is for {schedule.n_train} records, the run has {n} record ids")
        if tracked.ndim != 1 or not np.issubdtype(tracked.dtype, np.integer) or len(tracked) != a.shape[0]:
            raise TrainedRunError("tracked positions must be integers, one per approximator row")
        if len(tracked) and (tracked.min() < 0 or tracked.max() >= n or len(np.unique(tracked)) != len(tracked)):
            raise TrainedRunError("tracked positions must be unique training positions")
        for key in ("model", "sgd", "certificate"):
            if not isinstance(spec.get(key), dict):
                raise TrainedRunError(f"spec.{key} is missing")
        if int(spec["model"].get("dim", -1)) != w.shape[0]:
            raise TrainedRunError(f"spec.model.dim={spec['model'].get('dim')} but the weights have {w.shape[0]} "
                                  "entries")
        self.weights, self.approximators, self.record_ids, self.schedule = w, a, ids, schedule
        self.tracked_positions = tracked.astype(np.int64)
        self.spec = spec
        self._digest = digest
        self.position_of = {str(r): i for i, r in enumerate(ids)}
        self.row_of = np.full(n, -1, dtype=np.int64)
        self.row_of[self.tracked_positions] = np.arange(len(tracked), dtype=np.int64)

    @property
    def digest(self) -> str:
        """Content digest of the run (weights, approximators, tracked positions, ids, schedule, spec): the same for a
        run in memory and its saved copy; the ledger is tied to it."""
        if self._digest is None:
            self._digest = self.content_digest()
        return self._digest

    def content_digest(self) -> str:
        h = hashlib.sha256(FORMAT.encode())
        for name, arr in (("weights", self.weights), ("tracked", self.tracked_positions)):
            h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        a = self.approximators
        h.update(f"approximators:{a.dtype.str}:{a.shape}".encode())
        for start in range(0, a.shape[0], 4096):
            h.update(np.ascontiguousarray(a[start:start + 4096]).tobytes())
        h.update(json.dumps([str(r) for r in self.record_ids]).encode())
        h.update(self.schedule.digest().encode())
        h.update(json.dumps(self.spec, sort_keys=True).encode())
        return h.hexdigest()

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_train(self) -> int:
        return len(self.record_ids)

    # -- from a fitted unlearner -----------------------------------------------------------------------------------
    @classmethod
    def from_unlearner(cls, unlearner, *, hidden: int | None = None) -> "TrainedRun":
        """Capture a fitted :class:`~unlearn_audit.hfocu.HFOCUUnlearner` (any time after ``fit``: its base weights
        w_T and approximators are not changed by ``delete``)."""
        u = unlearner
        if not hasattr(u, "recursion_"):
            raise TrainedRunError("the unlearner is not fitted: call fit() first")
        if u.mode == "replay" or getattr(u, "layout_", None) == "replay":
            raise TrainedRunError("mode 'replay' keeps no approximators: a trained run for online deletion needs "
                                  "mode 'all' or 'candidates'")
        model, sgd, rec = u.model, u.sgd, u.recursion_
        weights = u.weights_.detach().cpu().numpy().copy()
        approx = rec.approximators.detach().cpu().numpy().astype(np.float32, copy=True)
        if hidden is None and hasattr(model.module, "fc1"):
            hidden = int(model.module.fc1.out_features)
        if model.kind == "softmax":
            xf = u.x_.reshape(len(u.x_), -1).double()
            cert = {"kind": "softmax_regression", "lam": float(sgd.lam),
                    "max_feature_norm": float(xf.norm(dim=1).max()), "n_classes": int(model.n_classes),
                    "clip": sgd.clip, "clip_norm": sgd.clip_norm, "weight_norm_bound": sgd.weight_norm_bound,
                    "measured_max_weight_norm": float(u.train_result_.max_weight_norm)}
        else:
            # measured constants (ρ by power iteration, G measured or enforced) do not depend on the forget set:
            # take them from one certificate of the unlearner and keep them with their provenance.
            first = str(u.ids_[rec.tracked_positions[0]])
            c = u.certificate([first]).constants
            cert = {"kind": "recursion", "model": model.kind, "rho": c["rho_max"], "G": c["G"]}
        spec = {
            "model": {"kind": model.kind, "input_shape": list(model.input_shape), "n_classes": int(model.n_classes),
                      "dim": int(model.dim), "hidden": hidden},
            "sgd": dataclasses.asdict(sgd),
            "hfocu": {"mode": u.mode, "curvature": u.curvature, "order": u.order, "train_dtype": str(u.dtype)},
            "certificate": cert,
            "weights_hash": _array_hash(weights),
            "schedule_digest": u.schedule_.digest(),
        }
        return cls(weights, approx, rec.tracked_positions, np.asarray(u.ids_).astype(str), u.schedule_, spec)

    # -- lookups -----------------------------------------------------------------------------------------------------
    def positions(self, record_ids) -> np.ndarray:
        """Training positions of the given ids. Raises DurableError naming the first unknown id or one without an
        approximator."""
        out = np.empty(len(record_ids), dtype=np.int64)
        for k, rid in enumerate(record_ids):
            p = self.position_of.get(rid)
            if p is None:
                raise DurableError(f"unknown record id '{rid}' (not in the training set of this run)")
            if self.row_of[p] < 0:
                raise DurableError(f"record id '{rid}' has no approximator (not among the declared candidates)")
            out[k] = p
        return out

    def approximator_sum(self, positions) -> np.ndarray:
        """Σ a_u over the given positions, in the given order, in float64 (deterministic: rows added in order)."""
        rows = self.row_of[np.asarray(positions, dtype=np.int64)]
        block = np.asarray(self.approximators[rows])
        return block.astype(np.float64).sum(axis=0)

    @property
    def _order(self) -> str:
        return self.spec.get("hfocu", {}).get("order", "propagate_first")

    def certificate(self, positions) -> SensitivityCertificate:
        """Δ(U) for U = the given training positions, with the constants recorded in the spec (mirrors
        ``HFOCUUnlearner.certificate``; batch clipping is refused, not certified as unclipped)."""
        c = self.spec["certificate"]
        if c["kind"] == "softmax_regression":
            clip = c.get("clip", "none")
            return softmax_regression_constants(
                self.schedule, positions, c["lam"], c["max_feature_norm"], int(c["n_classes"]),
                clip_norm=c.get("clip_norm") if clip in ("per_sample", "batch") else None,
                weight_norm_bound=c.get("weight_norm_bound"),
                measured_max_weight_norm=c.get("measured_max_weight_norm"),
                clip_mode="batch" if clip == "batch" else "per_sample", order=self._order)
        if c["kind"] == "recursion":
            rho, g = c["rho"], c["G"]
            return recursion_certificate(self.schedule, positions, rho["value"], g["value"],
                                         rho_source=rho["source"], rho_how=rho["how"], G_source=g["source"],
                                         G_how=g["how"], model=c.get("model", "generic"), order=self._order)
        raise TrainedRunError(f"spec.certificate.kind '{c['kind']}' is not known")


# ---------------------------------------------------------------------------------------------------------------------
# on disk
def _write_bytes_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_trained_run(path, unlearner, *, overwrite: bool = False, hidden: int | None = None) -> Path:
    """Write a trained run (from a fitted ``HFOCUUnlearner`` or a ``TrainedRun``) to the folder ``path``.

    The folder is written beside ``path`` first and moved into place at the end, so it is complete or absent.
    Returns ``path``. Raises TrainedRunError if ``path`` exists and is not empty (unless ``overwrite``).

    Example (in the audit, after ``unlearner.fit``)::

        save_trained_run(run_dir / "trained_run", unlearner)
    """
    run = unlearner if isinstance(unlearner, TrainedRun) else TrainedRun.from_unlearner(unlearner, hidden=hidden)
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise TrainedRunError(f"{path}: exists and is not empty (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        np.save(tmp / "weights.npy", run.weights, allow_pickle=False)
        np.save(tmp / "approximators.npy", np.asarray(run.approximators, dtype=np.float32), allow_pickle=False)
        np.save(tmp / "tracked_positions.npy", run.tracked_positions.astype(np.int64), allow_pickle=False)
        np.save(tmp / "record_ids.npy", run.record_ids.astype(str), allow_pickle=False)
        np.savez(tmp / "schedule.npz", **run.schedule.to_npz_dict())
        _write_bytes_synced(tmp / "spec.json", json.dumps(run.spec, indent=2, sort_keys=True,
                                                          allow_nan=False).encode())
        for name in _FILES[:-1]:
            _fsync(tmp / name)
        hashes = {name: _file_hash(tmp / name) for name in _FILES}
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "files": hashes, "run_digest": run.digest,
                    "files_digest": _files_digest(hashes),
                    "weights_hash": run.spec["weights_hash"], "n_train": run.n_train, "dim": run.dim,
                    "n_approximators": int(run.approximators.shape[0])}
        _write_bytes_synced(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
        tmp.chmod(0o755)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        tmp.replace(path)
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_trained_run(path, *, mmap: bool = True) -> TrainedRun:
    """Read a trained run written by ``save_trained_run``, checking every file against the manifest's SHA-256.

    ``mmap``: memory-map the approximators (read-only) instead of reading them into memory.

    Raises:
        TrainedRunError: missing folder or file, malformed manifest/spec/arrays, or a file whose hash does not match
        (the store was modified or belongs to another model).
    """
    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise TrainedRunError(f"{path}: not a trained run (manifest.json not found)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainedRunError(f"{mpath}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TrainedRunError(f"{mpath}: not a trained-run manifest (format {FORMAT!r} expected)")
    if manifest.get("version") != FORMAT_VERSION:
        raise TrainedRunError(f"{mpath}: format version {manifest.get('version')!r} is not supported "
                              f"({FORMAT_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(_FILES):
        raise TrainedRunError(f"{mpath}: the manifest must list exactly {', '.join(_FILES)}")
    for name in _FILES:
        f = path / name
        if not f.is_file():
            raise TrainedRunError(f"{path}: {name} is missing")
        if _file_hash(f) != files[name]:
            raise TrainedRunError(f"{f}: sha256 does not match the manifest: the file was modified or belongs to "
                                  "another model")
    if manifest.get("files_digest") != _files_digest(files) or not isinstance(manifest.get("run_digest"), str):
        raise TrainedRunError(f"{mpath}: the manifest is inconsistent (files_digest does not match the file hashes)")
    try:
        spec = json.loads((path / "spec.json").read_text(encoding="utf-8"))
        weights = np.load(path / "weights.npy", allow_pickle=False)
        approx = np.load(path / "approximators.npy", allow_pickle=False, mmap_mode="r" if mmap else None)
        tracked = np.load(path / "tracked_positions.npy", allow_pickle=False)
        ids = np.load(path / "record_ids.npy", allow_pickle=False)
        with np.load(path / "schedule.npz", allow_pickle=False) as z:
            schedule = Schedule.from_npz_dict({k: z[k] for k in z.files})
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise TrainedRunError(f"{path}: unreadable trained run ({str(exc).splitlines()[0] if str(exc) else exc!r})") \
            from None
    if not isinstance(spec, dict):
        raise TrainedRunError(f"{path}/spec.json: not a JSON object")
    run = TrainedRun(weights, approx, tracked, ids, schedule, spec, digest=manifest["run_digest"])
    if spec.get("weights_hash") != _array_hash(run.weights) or manifest.get("weights_hash") != spec["weights_hash"]:
        raise TrainedRunError(f"{path}: weights do not match the recorded weights hash")
    if spec.get("schedule_digest") != schedule.digest():
        raise TrainedRunError(f"{path}: schedule does not match the recorded schedule digest")
    return run


def find_trained_run(run_dir) -> Path:
    """``run_dir/trained_run`` if present, else ``run_dir`` itself (a trained-run folder)."""
    run_dir = Path(run_dir)
    sub = run_dir / TRAINED_RUN_DIR
    return sub if sub.is_dir() else run_dir


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

    @property
    def sensitivity(self) -> float:
        return float(self.certificate["sensitivity"])

    @classmethod
    def from_entry(cls, entry: LedgerEntry, applied_now: bool = False, released=None) -> "ForgetReceipt":
        c = entry.certificate or {}
        return cls(entry.request_id, tuple(entry.record_ids), applied_now, entry.applied_at, entry.applied_seq,
                   float(c.get("epsilon", math.nan)), float(c.get("delta", math.nan)), str(c.get("mechanism", "?")),
                   float(entry.sigma), int(entry.noise_seed), c, float(entry.latency_ms), entry.model_hash_before,
                   entry.model_hash_after, released)

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
        consts = c.get("constants", {})
        if consts:
            lines.append("  constants: " + ", ".join(f"{k}={v['value']:.4g} ({v['source']})"
                                                    for k, v in sorted(consts.items())))
        lines.append(f"  latency: {self.latency_ms:.2f} ms (recorded at commit)")
        lines.append(f"  state hash: {self.model_hash_before[:16]}… -> {self.model_hash_after[:16]}…")
        return lines


# ---------------------------------------------------------------------------------------------------------------------
# the durable unlearner
class _FileLock:
    """An exclusive advisory lock (flock) on ``path``, waited for up to ``timeout`` seconds; freed by the OS when
    the holding process dies."""

    def __init__(self, path: Path, timeout: float):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no cross-process lock
            self.fd = None
            return
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise DurableError(f"{path}: the ledger is in use by another process") from None
                time.sleep(0.02)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def _check_request_id(request_id) -> str:
    if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
        raise DurableError(f"request id {request_id!r} must be 1-128 characters of letters, digits, '.', '_', '-' "
                           "(starting with a letter or digit)")
    return request_id


def _check_record_ids(record_ids) -> tuple[str, ...]:
    if isinstance(record_ids, (str, bytes)):
        raise DurableError("record ids must be a list of strings, not one string")
    ids = tuple(str(r) for r in record_ids)
    if not ids:
        raise DurableError("empty deletion request: no record ids")
    seen = set()
    for rid in ids:
        if not rid or rid != rid.strip():
            raise DurableError(f"record id {rid!r} is empty or has surrounding whitespace")
        if rid in seen:
            raise DurableError(f"record id '{rid}' appears twice in the request")
        seen.add(rid)
    return ids


def default_request_id(record_ids) -> str:
    """A request id derived from the record ids (order-independent): the SHA-256 of the sorted ids, one a line."""
    return hashlib.sha256(("\n".join(sorted(map(str, record_ids))) + "\n").encode()).hexdigest()


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
        self._lock = _FileLock(Path(str(self.ledger_path) + ".lock"), lock_timeout)
        try:
            self.ledger = Ledger(self.ledger_path, base_model_hash=run.digest)
        except BaseException:
            self._lock.release()
            raise
        try:
            self.ledger.verify()
            self.recovered: list[LedgerEntry] = self.ledger.rollback_pending()
            self._rederive()
        except BaseException:
            self.close()
            raise

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
        ids = list(self._deleted) if record_ids is None else list(_check_record_ids(record_ids))
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
        ids = _check_record_ids(record_ids)
        request_id = _check_request_id(default_request_id(ids) if request_id is None else request_id)
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
        sigma = calibrate(epsilon, delta, cert.sensitivity, mechanism)
        cert_json = {**cert.to_dict(), "epsilon": float(epsilon), "delta": float(delta), "mechanism": mechanism,
                     "sigma": sigma, "request_records": len(ids), "deleted_total": len(union),
                     "requests_total": self._n_applied + 1}

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
        return ForgetReceipt.from_entry(done, applied_now=True, released=released)

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
        upto = [a for a in self.ledger.applied() if a.applied_seq <= e.applied_seq]
        state, h = self._replay(upto)
        if h != e.model_hash_after:
            raise DurableError(f"request '{request_id}': re-derived state does not match the ledger")
        return release(state, float(e.sigma), int(e.noise_seed)).astype(self.run.weights.dtype)

    # -- lifecycle -----------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "ledger", None) is not None:
            self.ledger.close()
            self.ledger = None
        self._lock.release()

    def __enter__(self) -> "DurableUnlearner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------------------
# the `forget` command's library side
def read_request_file(path) -> tuple[list[str], str]:
    """Record ids from a file with one id per line (blank lines ignored) and the file's SHA-256."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DurableError(f"--requests {path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DurableError(f"--requests {path}: not UTF-8 text") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise DurableError(f"--requests {path}: names no record ids")
    return ids, hashlib.sha256(data).hexdigest()


def _write_npy_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def forget_from_file(run_dir, requests_file, *, epsilon: float, delta: float, mechanism: str = "analytic",
                     request_id: str | None = None) -> tuple[ForgetReceipt, Path, list[LedgerEntry]]:
    """One deletion request from a file of record ids, applied to ``run_dir`` through ``run_dir/ledger.sqlite``.

    Validates everything that does not need the ledger (file, ε/δ, the trained run and its hashes, unknown ids)
    before opening it. Writes the released weights to ``run_dir/releases/<request_id>.npy`` (reproduced from the
    ledger for a re-sent request whose file is missing). Returns (receipt, release path, pending requests that were
    rolled back on open).
    """
    ids, file_sha = read_request_file(requests_file)
    ids = list(_check_record_ids(ids))
    request_id = _check_request_id(file_sha if request_id is None else request_id)
    calibrate(epsilon, delta, 1.0, mechanism)
    run_dir = Path(run_dir)
    run = load_trained_run(find_trained_run(run_dir))
    run.positions(ids)
    with DurableUnlearner(run, run_dir / LEDGER_FILE) as du:
        receipt = du.forget(ids, epsilon=epsilon, delta=delta, request_id=request_id, mechanism=mechanism)
        out = run_dir / RELEASES_DIR / f"{request_id}.npy"
        if receipt.released is not None:
            _write_npy_atomic(out, receipt.released)
        elif not out.is_file():
            _write_npy_atomic(out, du.release_of(request_id))
        return receipt, out, du.recovered
