"""The deletion ledger: a durable, idempotent record of erasure requests (DESIGN §8).

Storage: one SQLite file in WAL mode with ``synchronous=FULL`` (every committed transaction is fsynced before it
returns) and foreign keys on. Standalone: the ledger stores what it is told and knows nothing about the unlearner.

Life of a request:

1. ``begin(request_id, record_ids, method, model_hash_before)`` writes a 'pending' row and claims the record ids, in
   one transaction. Re-sending a request id with the same record ids is idempotent: an applied request comes back as
   ``AlreadyApplied(entry)`` (apply nothing), a pending one comes back as its pending entry. The same request id with
   different record ids, a record id already deleted by an applied request, or one claimed by another pending
   request raise ``LedgerError``.
2. The caller applies the deletion to its internal (noiseless) state and draws a release.
3. ``commit(request_id, model_hash_after, sigma, noise_seed, certificate, latency_ms)`` flips the row to 'applied'
   with everything needed to reproduce the release, in one transaction (one UPDATE): a crash mid-commit leaves either
   the pending row unchanged or the full commit, never a half-written one.

Recovery rule. For HF-OCU the internal state is exactly

    internal state = base model + Σ over APPLIED requests (in ``applied()`` order) of Σ_{u ∈ request} a_u,

so it is re-derived from the base model and this ledger (the approximators are additive and stay valid after each
deletion); a released model is that state plus N(0, σ² I) drawn with the request's recorded ``noise_seed``. A
'pending' request is one whose effect was never persisted as applied: after a crash, either re-apply it from scratch
to the state re-derived from the applied requests and then ``commit`` it, or ``rollback`` it (``rollback_pending()``
does all); it was never released, so nothing is lost and nothing is applied twice. A process killed between begin
and commit leaves exactly such a pending row.

Tamper evidence. Every applied row carries ``chain`` = SHA-256 over the previous applied row's chain and this row's
content (request id, record ids, method, order, time, σ, noise seed, state hashes, latency, certificate); the first
link starts from a genesis value derived from the base model hash. ``head()`` gives (number applied, last chain
value): the deletion service anchors it outside the ledger (in the trained run and in each release's metadata), so a
ledger truncated to 0 bytes, shortened by its last rows, replaced by an older copy or edited row by row no longer
matches its anchors. ``verify()`` recomputes the chain.

Errors are ``LedgerError`` (a ``ValueError``) with one-line messages naming the request or record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from numbers import Integral, Real
from os import PathLike
from typing import Literal, Sequence, overload

from unlearn_audit.common import check_record_ids

__all__ = ["AlreadyApplied", "Ledger", "LedgerEntry", "LedgerError", "SCHEMA_VERSION", "chain_link", "genesis"]

SCHEMA_VERSION = 2          # 2: the hash chain (column `chain`)
_CHUNK = 500  # SQL variables per IN (...) query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id        TEXT NOT NULL UNIQUE,
    record_ids        TEXT NOT NULL,
    method            TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'applied')),
    created_at        TEXT NOT NULL,
    applied_at        TEXT,
    applied_seq       INTEGER UNIQUE,
    sigma             REAL,
    noise_seed        INTEGER,
    model_hash_before TEXT,
    model_hash_after  TEXT,
    latency_ms        REAL,
    certificate       TEXT,
    chain             TEXT,
    CHECK ((status = 'pending' AND applied_at IS NULL AND applied_seq IS NULL)
        OR (status = 'applied' AND applied_at IS NOT NULL AND applied_seq IS NOT NULL))
);
CREATE TABLE IF NOT EXISTS request_records (
    record_id   TEXT PRIMARY KEY,
    request_seq INTEGER NOT NULL REFERENCES requests(seq) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS request_records_by_request ON request_records(request_seq);
"""

_COLUMNS = ("seq, request_id, record_ids, method, status, created_at, applied_at, applied_seq, sigma, noise_seed, "
            "model_hash_before, model_hash_after, latency_ms, certificate, chain")


class LedgerError(ValueError):
    """A deletion request the ledger refuses (conflict, unknown or already deleted id), or a damaged ledger."""


def _damaged(path: str, exc: Exception) -> str:
    return f"ledger {path} is damaged or unreadable ({exc}); restore it from a backup, it cannot be used as it is"


def _database_errors_as_ledger_errors(fn):
    """SQLite's own errors (a corrupted page, a file that is not a database) become one-line LedgerErrors."""
    import functools

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(_damaged(self.path, exc)) from None
    return wrapper


@dataclass(frozen=True)
class LedgerEntry:
    """One deletion request as stored.

    Attributes:
        seq: order in which requests were begun. applied_seq: order of application (None while pending).
        record_ids: the record ids, in the order given. status: 'pending' or 'applied'.
        created_at / applied_at: UTC ISO-8601 timestamps. certificate: the stored JSON, parsed (or None).
        chain: the hash-chain value of an applied request (None while pending).
    """

    seq: int
    request_id: str
    record_ids: tuple[str, ...]
    method: str
    status: str
    created_at: str
    applied_at: str | None
    applied_seq: int | None
    sigma: float | None
    noise_seed: int | None
    model_hash_before: str | None
    model_hash_after: str | None
    latency_ms: float | None
    certificate: dict | None
    chain: str | None = None

    @property
    def applied(self) -> bool:
        return self.status == "applied"

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["record_ids"] = list(self.record_ids)
        return d


@dataclass(frozen=True)
class AlreadyApplied:
    """Returned by ``Ledger.begin`` for a re-sent request that is already applied: apply nothing, reuse ``entry``."""

    entry: LedgerEntry

    @property
    def request_id(self) -> str:
        return self.entry.request_id


def genesis(base_model_hash: str | None) -> str:
    """The chain value before the first applied request: tied to the base model the ledger belongs to."""
    return hashlib.sha256(f"unlearn-audit/ledger-genesis:{base_model_hash or ''}".encode()).hexdigest()


def chain_link(previous: str, entry: "LedgerEntry") -> str:
    """The chain value of an applied request: SHA-256 of the previous value and the request's recorded content."""
    content = [previous, entry.request_id, list(entry.record_ids), entry.method, entry.applied_seq, entry.applied_at,
               entry.sigma, entry.noise_seed, entry.model_hash_before, entry.model_hash_after, entry.latency_ms,
               entry.certificate]
    return hashlib.sha256(json.dumps(content, sort_keys=True, allow_nan=False).encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@overload
def _check_text(value: object, name: str, allow_none: Literal[False] = False) -> str: ...
@overload
def _check_text(value: object, name: str, allow_none: bool) -> str | None: ...
def _check_text(value: object, name: str, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise LedgerError(f"{name} must be a non-empty string, got {value!r}")
    return str(value)


def _check_record_ids(record_ids) -> tuple[str, ...]:
    return check_record_ids(record_ids, LedgerError)


def _check_nonneg_float(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)) or value < 0:
        raise LedgerError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _certificate_json(certificate) -> str | None:
    if certificate is None:
        return None
    if hasattr(certificate, "to_dict"):
        certificate = certificate.to_dict()
    if isinstance(certificate, str):
        try:
            certificate = json.loads(certificate)
        except json.JSONDecodeError as exc:
            raise LedgerError(f"certificate is not valid JSON: {exc.msg}") from None
    if not isinstance(certificate, dict):
        raise LedgerError(f"certificate must be a dict, a JSON object or have to_dict(), got "
                          f"{type(certificate).__name__}")
    try:
        return json.dumps(certificate, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"certificate is not JSON-serialisable: {exc}") from None


class Ledger:
    """Deletion ledger backed by one SQLite file (WAL, synchronous=FULL). Use as a context manager or ``close()``.

    Args:
        path: file path of the ledger (created if missing). In-memory databases are refused (not durable).
        base_model_hash: if given, the hash of the base model the ledger belongs to; stored on first use and checked
            on every later open (a mismatch raises ``LedgerError``).
        timeout: seconds to wait for another process holding the write lock.
    """

    def __init__(self, path: str | PathLike, base_model_hash: str | None = None, timeout: float = 30.0):
        self.path = str(path)
        if self.path in ("", ":memory:") or self.path.startswith("file::memory:"):
            raise LedgerError("path must be a file: an in-memory ledger is not durable")
        base_model_hash = _check_text(base_model_hash, "base_model_hash", allow_none=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from None
        try:
            self._configure()
            self._init_schema(base_model_hash)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise LedgerError(_damaged(self.path, exc)) from None
        except BaseException:
            self._conn.close()
            raise

    # -- setup ---------------------------------------------------------------------------------------------------------
    def _configure(self) -> None:
        c = self._conn
        try:
            mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path} is not a readable ledger database: {exc}") from None
        if str(mode).lower() != "wal":
            raise LedgerError(f"could not put ledger {self.path} in WAL mode (journal_mode={mode})")
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA foreign_keys=ON")

    def _init_schema(self, base_model_hash: str | None) -> None:
        c = self._conn
        if self._current(base_model_hash):
            return                          # nothing to create: opening an existing ledger writes nothing
        with self._write():
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LedgerError(f"ledger {self.path} has schema version {version}, newer than supported "
                                  f"({SCHEMA_VERSION})")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            if "chain" not in {r[1] for r in c.execute("PRAGMA table_info(requests)")}:   # a version-1 ledger
                c.execute("ALTER TABLE requests ADD COLUMN chain TEXT")
                self._rechain(c)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            row = c.execute("SELECT value FROM meta WHERE key='base_model_hash'").fetchone()
            if base_model_hash is not None:
                if row is None:
                    c.execute("INSERT INTO meta(key, value) VALUES ('base_model_hash', ?)", (base_model_hash,))
                elif row[0] != base_model_hash:
                    raise LedgerError(f"ledger {self.path} belongs to base model {row[0]}, not {base_model_hash}")

    def _rechain(self, c) -> None:
        """Fill in the chain of a version-1 ledger's applied rows (once, when it is first opened by version 2)."""
        row = c.execute("SELECT value FROM meta WHERE key='base_model_hash'").fetchone()
        prev = genesis(None if row is None else row[0])
        for r in c.execute(f"SELECT {_COLUMNS} FROM requests WHERE status='applied' ORDER BY applied_seq").fetchall():
            prev = chain_link(prev, self._entry(r))
            c.execute("UPDATE requests SET chain=? WHERE seq=?", (prev, r[0]))

    def _current(self, base_model_hash: str | None) -> bool:
        """True when the ledger already has this schema version and base model (checked without writing)."""
        c = self._conn
        if c.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            return False
        if c.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
            return False
        row = c.execute("SELECT value FROM meta WHERE key='base_model_hash'").fetchone()
        if base_model_hash is None:
            return True
        if row is not None and row[0] != base_model_hash:
            raise LedgerError(f"ledger {self.path} belongs to base model {row[0]}, not {base_model_hash}")
        return row is not None

    class _Tx:
        def __init__(self, conn: sqlite3.Connection):
            self.conn = conn

        def __enter__(self):
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:
                try:
                    self.conn.execute("COMMIT")
                    return False
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            return False

    def _write(self) -> "Ledger._Tx":
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on any exception)."""
        return Ledger._Tx(self._conn)

    # -- lifecycle -----------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def pragmas(self) -> dict:
        """The connection's durability settings: journal_mode ('wal'), synchronous (2 = FULL), foreign_keys (1)."""
        c = self._conn
        return {
            "journal_mode": c.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": c.execute("PRAGMA synchronous").fetchone()[0],
            "foreign_keys": c.execute("PRAGMA foreign_keys").fetchone()[0],
        }

    @property
    def base_model_hash(self) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='base_model_hash'").fetchone()
        return None if row is None else row[0]

    # -- reading -------------------------------------------------------------------------------------------------------
    @staticmethod
    def _entry(row) -> LedgerEntry:
        (seq, request_id, record_ids, method, status, created_at, applied_at, applied_seq, sigma, noise_seed,
         hb, ha, latency_ms, certificate, chain) = row
        return LedgerEntry(
            seq=seq, request_id=request_id, record_ids=tuple(json.loads(record_ids)), method=method, status=status,
            created_at=created_at, applied_at=applied_at, applied_seq=applied_seq, sigma=sigma,
            noise_seed=noise_seed, model_hash_before=hb, model_hash_after=ha, latency_ms=latency_ms,
            certificate=None if certificate is None else json.loads(certificate), chain=chain,
        )

    def get(self, request_id: str) -> LedgerEntry | None:
        """The entry of ``request_id`` or None."""
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM requests WHERE request_id=?", (request_id,)).fetchone()
        return None if row is None else self._entry(row)

    def pending(self) -> list[LedgerEntry]:
        """Requests begun but not committed, in begin order: re-apply from scratch (then commit) or roll back."""
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM requests WHERE status='pending' ORDER BY seq")
        return [self._entry(r) for r in rows]

    def applied(self) -> list[LedgerEntry]:
        """Applied requests in the order they were applied (commit order)."""
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM requests WHERE status='applied' ORDER BY applied_seq")
        return [self._entry(r) for r in rows]

    def deleted_record_ids(self) -> set[str]:
        """Every record id deleted by an applied request."""
        rows = self._conn.execute(
            "SELECT rr.record_id FROM request_records rr JOIN requests r ON r.seq = rr.request_seq "
            "WHERE r.status='applied'"
        )
        return {r[0] for r in rows}

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    # -- writing -------------------------------------------------------------------------------------------------------
    def _claims(self, record_ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """(record_id, request_id, status) for the given ids already claimed by some request."""
        out = []
        for i in range(0, len(record_ids), _CHUNK):
            chunk = record_ids[i:i + _CHUNK]
            q = ("SELECT rr.record_id, r.request_id, r.status FROM request_records rr "
                 "JOIN requests r ON r.seq = rr.request_seq "
                 f"WHERE rr.record_id IN ({','.join('?' * len(chunk))})")
            out.extend(self._conn.execute(q, chunk).fetchall())
        order = {rid: k for k, rid in enumerate(record_ids)}
        out.sort(key=lambda r: order[r[0]])
        return out

    def begin(self, request_id: str, record_ids: Sequence[str], method: str,
              model_hash_before: str | None = None) -> LedgerEntry | AlreadyApplied:
        """Register a deletion request as 'pending' and claim its record ids (one transaction).

        Returns:
            the new pending ``LedgerEntry``; for a re-sent request id with the same record ids (in any order) and
            method, ``AlreadyApplied(entry)`` if it was applied, or the existing pending entry if it was not.

        Raises:
            LedgerError: malformed input; the request id exists with different record ids or method; a record id was
            already deleted by an applied request or is claimed by another pending request.
        """
        request_id = _check_text(request_id, "request_id")
        ids = _check_record_ids(record_ids)
        method = _check_text(method, "method")
        model_hash_before = _check_text(model_hash_before, "model_hash_before", allow_none=True)
        with self._write() as c:
            row = c.execute(f"SELECT {_COLUMNS} FROM requests WHERE request_id=?", (request_id,)).fetchone()
            if row is not None:
                existing = self._entry(row)
                if sorted(existing.record_ids) != sorted(ids):
                    raise LedgerError(f"request {request_id!r} was already submitted with different record ids")
                if existing.method != method:
                    raise LedgerError(f"request {request_id!r} was already submitted with method "
                                      f"{existing.method!r}, not {method!r}")
                return AlreadyApplied(existing) if existing.applied else existing
            for rid, other, status in self._claims(ids):
                if status == "applied":
                    raise LedgerError(f"record {rid!r} was already deleted by request {other!r}")
                raise LedgerError(f"record {rid!r} is part of pending request {other!r}; commit or roll it back first")
            cur = c.execute(
                "INSERT INTO requests (request_id, record_ids, method, status, created_at, model_hash_before) "
                "VALUES (?, ?, ?, 'pending', ?, ?)",
                (request_id, json.dumps(list(ids)), method, _now(), model_hash_before),
            )
            seq = cur.lastrowid
            c.executemany("INSERT INTO request_records (record_id, request_seq) VALUES (?, ?)",
                          [(rid, seq) for rid in ids])
            row = c.execute(f"SELECT {_COLUMNS} FROM requests WHERE seq=?", (seq,)).fetchone()
        return self._entry(row)

    def commit(self, request_id: str, model_hash_after: str | None = None, sigma: float | None = None,
               noise_seed: int | None = None, certificate=None, latency_ms: float | None = None) -> LedgerEntry:
        """Mark a pending request applied, with what reproduces its release (one atomic UPDATE).

        ``certificate`` is a dict, a JSON object string, or an object with ``to_dict()`` (e.g. a
        ``SensitivityCertificate``); it is stored as strict JSON.

        Raises:
            LedgerError: unknown request id, request already applied, or malformed values.
        """
        request_id = _check_text(request_id, "request_id")
        model_hash_after = _check_text(model_hash_after, "model_hash_after", allow_none=True)
        sigma = _check_nonneg_float(sigma, "sigma")
        latency_ms = _check_nonneg_float(latency_ms, "latency_ms")
        if noise_seed is not None:
            if isinstance(noise_seed, bool) or not isinstance(noise_seed, Integral) or not 0 <= noise_seed < 2 ** 63:
                raise LedgerError(f"noise_seed must be an integer in [0, 2^63), got {noise_seed!r}")
            noise_seed = int(noise_seed)
        cert_json = _certificate_json(certificate)
        with self._write() as c:
            pending = self._pending_entry(c, request_id, unknown=": begin it first", applied="is already applied")
            n, prev = self._head(c)
            applied = dataclasses.replace(
                pending, status="applied", applied_at=_now(), applied_seq=n + 1, model_hash_after=model_hash_after,
                sigma=sigma, noise_seed=noise_seed, latency_ms=latency_ms,
                certificate=None if cert_json is None else json.loads(cert_json))
            c.execute(
                "UPDATE requests SET status='applied', applied_at=?, applied_seq=?, model_hash_after=?, sigma=?, "
                "noise_seed=?, certificate=?, latency_ms=?, chain=? WHERE request_id=?",
                (applied.applied_at, applied.applied_seq, model_hash_after, sigma, noise_seed, cert_json, latency_ms,
                 chain_link(prev, applied), request_id),
            )
            row = c.execute(f"SELECT {_COLUMNS} FROM requests WHERE request_id=?", (request_id,)).fetchone()
        return self._entry(row)

    def _pending_entry(self, c, request_id: str, *, unknown: str, applied: str) -> LedgerEntry:
        """The pending request ``request_id`` (LedgerError, naming it, when it is unknown or already applied)."""
        row = c.execute(f"SELECT {_COLUMNS} FROM requests WHERE request_id=?", (request_id,)).fetchone()
        if row is None:
            raise LedgerError(f"unknown request {request_id!r}{unknown}")
        entry = self._entry(row)
        if entry.applied:
            raise LedgerError(f"request {request_id!r} {applied}")
        return entry

    def _head(self, c) -> tuple[int, str]:
        row = c.execute("SELECT applied_seq, chain FROM requests WHERE status='applied' "
                        "ORDER BY applied_seq DESC LIMIT 1").fetchone()
        if row is None:
            return 0, genesis(self.base_model_hash)
        return int(row[0]), str(row[1])

    def head(self) -> tuple[int, str]:
        """(number of applied requests, chain value of the last one; the genesis value when none): what the
        deletion service anchors outside the ledger."""
        return self._head(self._conn)

    def chain_at(self, n: int) -> str | None:
        """The chain value after the n-th applied request (the genesis value for n = 0; None if there is none)."""
        if n == 0:
            return genesis(self.base_model_hash)
        row = self._conn.execute("SELECT chain FROM requests WHERE status='applied' AND applied_seq=?",
                                 (int(n),)).fetchone()
        return None if row is None else row[0]

    def rollback(self, request_id: str) -> LedgerEntry:
        """Forget a pending request and release its record ids; returns the removed entry.

        Raises:
            LedgerError: unknown request id, or the request is applied (an applied deletion cannot be undone).
        """
        request_id = _check_text(request_id, "request_id")
        with self._write() as c:
            entry = self._pending_entry(c, request_id, unknown="", applied="is applied and cannot be rolled back")
            c.execute("DELETE FROM requests WHERE seq=?", (entry.seq,))
        return entry

    def rollback_pending(self) -> list[LedgerEntry]:
        """Recovery by rollback: remove every pending request; returns them (in begin order)."""
        return [self.rollback(e.request_id) for e in self.pending()]

    # -- integrity -----------------------------------------------------------------------------------------------------
    def verify(self) -> None:
        """Check the ledger: SQLite integrity and foreign keys, record claims matching each request's record ids,
        applied requests complete and numbered 1..N, the hash chain over them intact. Raises ``LedgerError`` naming
        the first problem."""
        c = self._conn
        res = c.execute("PRAGMA integrity_check").fetchall()
        if res != [("ok",)]:
            raise LedgerError(f"ledger {self.path} failed the SQLite integrity check: {res[0][0]}")
        if c.execute("PRAGMA foreign_key_check").fetchone() is not None:
            raise LedgerError(f"ledger {self.path} has record claims without a request")
        claims: dict[int, set[str]] = {}
        for rid, seq in c.execute("SELECT record_id, request_seq FROM request_records"):
            claims.setdefault(seq, set()).add(rid)
        applied_seqs = []
        for row in c.execute(f"SELECT {_COLUMNS} FROM requests ORDER BY seq"):
            e = self._entry(row)
            if claims.pop(e.seq, set()) != set(e.record_ids):
                raise LedgerError(f"request {e.request_id!r}: claimed record ids differ from its record_ids")
            if e.applied:
                applied_seqs.append(-1 if e.applied_seq is None else e.applied_seq)   # NULL fails the check below
        if claims:  # pragma: no cover - prevented by the foreign key
            raise LedgerError("record claims exist for unknown requests")
        if sorted(applied_seqs) != list(range(1, len(applied_seqs) + 1)):
            raise LedgerError("applied requests are not numbered 1..N")
        prev = genesis(self.base_model_hash)
        for e in self.applied():
            prev = chain_link(prev, e)
            if e.chain != prev:
                raise LedgerError(f"ledger {self.path}: request {e.request_id!r} (applied #{e.applied_seq}) does not "
                                  "match the hash chain: the row was modified, swapped or inserted")


for _name in ("pragmas", "get", "pending", "applied", "deleted_record_ids", "__len__", "begin", "commit", "rollback",
              "rollback_pending", "verify", "head", "chain_at"):
    setattr(Ledger, _name, _database_errors_as_ledger_errors(getattr(Ledger, _name)))
