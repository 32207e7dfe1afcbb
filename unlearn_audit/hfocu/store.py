"""File-backed approximator store (DESIGN §2.3 "Storage"): n × d approximators on disk, memory-mapped, so n·d larger
than RAM works.

Layout of a store folder::

    manifest.json                     n, d, dtype, chunk_rows, digests, hashes, shards and per-chunk SHA-256
    ids.json                          the record id of every row (JSON list, row order)
    positions.npy                     training-set position of every row (int64)
    shard-00000/chunk-000000.npy      rows [0, chunk_rows) of shard 0, a plain .npy file (memory-mapped on read)
    shard-00000.json                  the shard's own record (written when the shard is finalised)
    ...

Rows are split into contiguous *shards* (one per writer process, see :mod:`unlearn_audit.deletion.precompute`; a
single-process store has one), and every shard into fixed-size *chunks* of ``chunk_rows`` rows. A chunk's SHA-256
(over the whole ``.npy`` file) is computed when the chunk is finalised (all its rows written) and verified the first
time the chunk is read after :meth:`ApproximatorStore.open`; a mismatch raises :class:`StoreError` naming the chunk
and its file. Reading a subset of rows touches only the chunks (hence the shards) that hold them.

dtypes: ``float32`` (default) or ``bfloat16``, stored as its uint16 bit pattern (round to nearest even). When
writing bfloat16 the writer measures the error against the float32 input, per row ‖a_bf16 − a‖/‖a‖ and per element
(over elements with |a| ≥ float32's smallest normal), and keeps the maxima in the manifest (``quantisation``).

    w = ApproximatorStore.create("store", n, d, dtype="float32", chunk_rows=1024, model_hash=h,
                                 schedule_digest=s, ids=ids)
    w.write_rows(0, block); w.write_at(rows, block); ...; w.finalise()
    store = ApproximatorStore.open("store", expected_model_hash=h, expected_schedule_digest=s)
    a = store.rows([3, 17]); delta = store.sum_rows(store.rows_of(["digits:17"]))
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from unlearn_audit.common import atomic_save_npy, atomic_write_text, file_sha256

FORMAT = "unlearn-audit/approximator-store"
VERSION = 1
DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "bfloat16": np.dtype("<u2")}
DEFAULT_CHUNK_BYTES = 16 * 2 ** 20
_TINY = float(np.finfo(np.float32).tiny)


class StoreError(ValueError):
    """A store that cannot be written or read as asked: corrupted chunk, hash mismatch, malformed manifest, rows
    missing (one-line message naming the chunk, file or field)."""


# -- helpers ------------------------------------------------------------------------------------------------------
def ids_digest(ids: Sequence[str]) -> str:
    """SHA-256 of the record ids in row order (length-prefixed UTF-8, so no separator can collide)."""
    h = hashlib.sha256(b"unlearn_audit.ids/v1\0")
    for rid in ids:
        b = str(rid).encode("utf-8")
        h.update(len(b).to_bytes(4, "little") + b)
    return h.hexdigest()


def default_chunk_rows(d: int, dtype: str = "float32", chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so that a chunk is about ``chunk_bytes`` (16 MiB): small enough to verify in milliseconds."""
    return max(1, int(chunk_bytes // (int(d) * DTYPES[dtype].itemsize)))


def _to_float32_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float32).numpy()
    return np.asarray(array, dtype=np.float32)


def _float32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16)


def _bf16_bits_to_float32(bits: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(bits, dtype=np.uint16).view(np.int16))
    return t.view(torch.bfloat16).to(torch.float32)


def shard_dir_name(index: int) -> str:
    return f"shard-{index:05d}"


def split_rows(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, balanced row ranges covering 0..n-1 (sizes differ by at most one)."""
    if parts < 1:
        raise StoreError(f"number of shards must be >= 1, got {parts}")
    edges = [(n * k) // parts for k in range(parts + 1)]
    return [(edges[k], edges[k + 1]) for k in range(parts)]


def _store_entries(path: Path) -> list[Path]:
    names = ["manifest.json", "ids.json", "positions.npy"]
    out = [path / nm for nm in names if (path / nm).exists()]
    shard = "shard-" + "[0-9]" * 5
    out += sorted(path.glob(shard)) + sorted(path.glob(shard + ".json"))
    out += sorted(path.glob("*.tmp"))
    return out


def remove_store(path) -> None:
    """Delete the files a store owns in ``path`` (and nothing else)."""
    for p in _store_entries(Path(path)):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


# -- writing ------------------------------------------------------------------------------------------------------
@dataclass
class _Chunk:
    shard: int
    index: int            # index within its shard
    start: int            # global rows [start, stop)
    stop: int
    file: str             # relative to the store folder
    sha256: str | None = None


class StoreWriter:
    """Writes a store (all shards, or one shard when ``shard_index`` is given). Obtain it from
    :meth:`ApproximatorStore.create`."""

    def __init__(self, path: Path, meta: dict, ids: list[str], positions: np.ndarray, shards: list[tuple[int, int]],
                 shard_index: int | None):
        self.path, self.meta, self.ids, self.positions = path, meta, ids, positions
        self.shards = shards
        self.owned = list(range(len(shards))) if shard_index is None else [int(shard_index)]
        self.n, self.d, self.dtype = meta["n"], meta["d"], meta["dtype"]
        self.np_dtype = DTYPES[self.dtype]
        self.chunk_rows = meta["chunk_rows"]
        self.chunks: list[_Chunk] = []
        for s in self.owned:
            lo, hi = shards[s]
            for j, start in enumerate(range(lo, hi, self.chunk_rows)):
                self.chunks.append(_Chunk(s, j, start, min(start + self.chunk_rows, hi),
                                          f"{shard_dir_name(s)}/chunk-{j:06d}.npy"))
        self._starts = np.array([c.start for c in self.chunks], dtype=np.int64)
        self._written = [np.zeros(c.stop - c.start, dtype=bool) for c in self.chunks]
        self._cols_written: dict[int, np.ndarray] = {}       # chunk -> columns written (column-slab writes)
        self._row_sq: dict[int, np.ndarray] = {}             # chunk -> per-row (‖a‖², ‖err‖²) of bfloat16 slabs
        self._open: dict[int, np.memmap] = {}
        self.max_row_rel_error = 0.0
        self.max_elementwise_rel_error = 0.0
        self.finalised = False
        for s in self.owned:
            (path / shard_dir_name(s)).mkdir(parents=True, exist_ok=True)

    @property
    def owned_rows(self) -> list[tuple[int, int]]:
        return [self.shards[s] for s in self.owned]

    def _chunk_memmap(self, k: int) -> np.memmap:
        if k not in self._open:
            c = self.chunks[k]
            self._open[k] = np.lib.format.open_memmap(self.path / c.file, mode="w+", dtype=self.np_dtype,
                                                      shape=(c.stop - c.start, self.d))
        return self._open[k]

    def write_rows(self, start: int, array) -> None:
        """Write rows ``start .. start+len(array)-1`` (global row numbers, inside this writer's shards).
        ``array``: (k, d) float tensor or array. A chunk is checksummed as soon as all its rows are written."""
        if self.finalised:
            raise StoreError("store already finalised: no more writes")
        a = _to_float32_numpy(array)
        if a.ndim != 2 or a.shape[1] != self.d:
            raise StoreError(f"write_rows: expected an array of shape (k, {self.d}), got {tuple(a.shape)}")
        if not np.isfinite(a).all():
            bad = int(np.argwhere(~np.isfinite(a))[0, 0]) + int(start)
            raise StoreError(f"write_rows: row {bad} holds NaN or inf")
        start, stop = int(start), int(start) + len(a)
        if len(a) == 0:
            return
        if self.dtype == "bfloat16":
            data = _float32_to_bf16_bits(a)
            self._record_error(a, _bf16_bits_to_float32(data).numpy())
        else:
            data = a
        k = int(np.searchsorted(self._starts, start, side="right")) - 1
        pos = start
        while pos < stop:
            if not 0 <= k < len(self.chunks) or not self.chunks[k].start <= pos < self.chunks[k].stop:
                raise StoreError(f"write_rows: row {pos} is not inside this writer's shard(s) {self.owned_rows}")
            c = self.chunks[k]
            hi = min(stop, c.stop)
            mm = self._chunk_memmap(k)
            mm[pos - c.start:hi - c.start] = data[pos - start:hi - start]
            self._written[k][pos - c.start:hi - c.start] = True
            if self._written[k].all():
                self._finalise_chunk(k)
            pos, k = hi, k + 1

    def write_at(self, rows, array) -> None:
        """Write ``array[k]`` to global row ``rows[k]`` for every k (any order; contiguous runs are written
        together). The signature of a layout's sink (:mod:`unlearn_audit.hfocu.layouts`)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) != len(array):
            raise StoreError(f"write_at: {len(rows)} row numbers for {len(array)} rows")
        order = np.argsort(rows, kind="stable")
        r = rows[order]
        breaks = np.flatnonzero(np.diff(r) != 1) + 1
        idx = torch.as_tensor(order) if isinstance(array, torch.Tensor) else order
        block = array[idx]
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(r)]):
            self.write_rows(int(r[lo]), block[lo:hi])

    def share_columns(self) -> None:
        """Column-split writing by several processes (the reverse layout in a sharded precompute): create this
        writer's chunk files now (zeros) so that every process can write its columns of EVERY row into them; after
        that :meth:`write_columns` takes slabs of all n rows. Once every process has written its columns (a barrier:
        :meth:`release_columns` on every process first), :meth:`finalise` checksums this writer's own chunks."""
        if self.dtype != "float32":
            raise StoreError("column-split writing (reverse layout on several processes) needs a float32 store: the "
                             "bfloat16 quantisation error is measured on whole rows")
        for k in range(len(self.chunks)):
            self._chunk_memmap(k).flush()
        self._shared: dict[str, np.memmap] = {}

    def release_columns(self) -> None:
        """Flush and close the chunk files opened by column writes (before the other processes finalise them)."""
        for mm in getattr(self, "_shared", {}).values():
            mm.flush()
        self._shared = {}
        for k in list(self._open):
            self._open[k].flush()

    def write_columns(self, col_start: int, slab) -> None:
        """Write coordinates ``col_start .. col_start+k-1`` of every row this writer owns (its shards' rows, in
        order; after :meth:`share_columns`: of all n rows of the store): ``slab`` is (rows, k). The reverse layout's
        column sink (:mod:`unlearn_audit.hfocu.reverse`); an owned chunk is checksummed once all its columns are
        written (shared mode: at :meth:`finalise`)."""
        if self.finalised:
            raise StoreError("store already finalised: no more writes")
        a = _to_float32_numpy(slab)
        shared = hasattr(self, "_shared")
        rows = self.n if shared else sum(hi - lo for lo, hi in self.owned_rows)
        col_start = int(col_start)
        if a.ndim != 2 or a.shape[0] != rows or not 0 <= col_start <= col_start + a.shape[1] <= self.d:
            raise StoreError(f"write_columns: expected an array of shape ({rows}, k) for columns inside "
                             f"0..{self.d - 1} from {col_start}, got {tuple(a.shape)}")
        if not np.isfinite(a).all():
            bad = int(np.argwhere(~np.isfinite(a))[0, 0])
            raise StoreError(f"write_columns: row {bad + (0 if shared else self.chunks[0].start)} holds NaN or inf")
        k = a.shape[1]
        if k == 0:
            return
        if shared:
            self._write_shared_columns(col_start, a)
            return
        offset = 0
        for ci, c in enumerate(self.chunks):
            part = a[offset:offset + c.stop - c.start]
            offset += c.stop - c.start
            if self._written[ci].all() and ci not in self._open:
                raise StoreError(f"write_columns: chunk {c.file} is already complete")
            data = self._encode_columns(ci, part)
            mm = self._chunk_memmap(ci)
            mm[:, col_start:col_start + k] = data
            cols = self._cols_written.setdefault(ci, np.zeros(self.d, dtype=bool))
            cols[col_start:col_start + k] = True
            if cols.all():
                self._written[ci][:] = True
                self._close_row_errors(ci)
                self._finalise_chunk(ci)

    def _encode_columns(self, ci: int, part: np.ndarray) -> np.ndarray:
        if self.dtype != "bfloat16":
            return part
        data = _float32_to_bf16_bits(part)
        back = _bf16_bits_to_float32(data).numpy()
        self._record_error(part, back, rows=False)
        sq = self._row_sq.setdefault(ci, np.zeros((len(part), 2)))
        sq[:, 0] += np.square(part.astype(np.float64)).sum(1)
        sq[:, 1] += np.square(back.astype(np.float64) - part.astype(np.float64)).sum(1)
        return data

    def _close_row_errors(self, ci: int) -> None:
        sq = self._row_sq.pop(ci, None)
        if sq is not None and (sq[:, 0] > 0).any():
            nz = sq[:, 0] > 0
            self.max_row_rel_error = max(self.max_row_rel_error, float(np.sqrt(sq[nz, 1] / sq[nz, 0]).max()))

    def _write_shared_columns(self, col_start: int, a: np.ndarray) -> None:
        k = a.shape[1]
        for s, (lo, hi) in enumerate(self.shards):
            for j, start in enumerate(range(lo, hi, self.chunk_rows)):
                stop = min(start + self.chunk_rows, hi)
                file = f"{shard_dir_name(s)}/chunk-{j:06d}.npy"
                if file not in self._shared:
                    try:
                        self._shared[file] = np.lib.format.open_memmap(self.path / file, mode="r+")
                    except (OSError, ValueError) as err:
                        raise StoreError(f"write_columns: chunk {file} is not ready ({err})") from None
                self._shared[file][:, col_start:col_start + k] = a[start:stop]

    def _record_error(self, a: np.ndarray, back: np.ndarray, rows: bool = True) -> None:
        a64, err = a.astype(np.float64), np.abs(back.astype(np.float64) - a.astype(np.float64))
        norms = np.linalg.norm(a64, axis=1)
        row = np.linalg.norm(err, axis=1)[norms > 0] / norms[norms > 0]
        if rows and row.size:
            self.max_row_rel_error = max(self.max_row_rel_error, float(row.max()))
        big = np.abs(a64) >= _TINY
        if big.any():
            self.max_elementwise_rel_error = max(self.max_elementwise_rel_error,
                                                 float((err[big] / np.abs(a64[big])).max()))

    def _finalise_chunk(self, k: int) -> None:
        c = self.chunks[k]
        mm = self._open.pop(k)
        mm.flush()
        del mm
        with open(self.path / c.file, "rb+") as f:
            os.fsync(f.fileno())
        c.sha256 = file_sha256(self.path / c.file)

    def _shard_record(self, s: int) -> dict:
        lo, hi = self.shards[s]
        chunks = [c for c in self.chunks if c.shard == s]
        return {"index": s, "start": lo, "stop": hi, "dir": shard_dir_name(s),
                "chunks": [{"index": c.index, "start": c.start, "stop": c.stop, "file": c.file, "sha256": c.sha256}
                           for c in chunks],
                "quantisation": self._quantisation(),
                "finalised": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def _quantisation(self) -> dict | None:
        if self.dtype != "bfloat16":
            return None
        return {"reference": "float32", "max_row_relative_error": self.max_row_rel_error,
                "max_elementwise_relative_error": self.max_elementwise_rel_error}

    def finalise(self) -> dict:
        """Check every row was written, write the shard records and (when this writer owns every shard) the
        manifest. Returns the manifest (or, for one shard of several, that shard's record)."""
        if hasattr(self, "_shared"):                  # column-split: every process has written its columns
            self.release_columns()
            for k in range(len(self.chunks)):
                if k in self._open:
                    self._written[k][:] = True
                    self._finalise_chunk(k)
        for k, c in enumerate(self.chunks):
            if not self._written[k].all():
                missing = c.start + int(np.flatnonzero(~self._written[k])[0])
                raise StoreError(f"row {missing} was never written (chunk {c.file})")
        for s in self.owned:
            rec = {**self.meta, "shard": self._shard_record(s)}
            atomic_write_text(self.path / f"{shard_dir_name(s)}.json", json.dumps(rec, indent=1))
        self.finalised = True
        if len(self.owned) == len(self.shards):
            return ApproximatorStore.assemble(self.path, ids=self.ids, positions=self.positions)
        return rec["shard"]


# -- reading ------------------------------------------------------------------------------------------------------
class ApproximatorStore:
    """A finished store opened for reading. Rows are numbered 0..n-1 in the order of :attr:`ids`."""

    # ---- creation -------------------------------------------------------------------------------------------
    @staticmethod
    def create(path, n: int, d: int, dtype: str = "float32", chunk_rows: int | None = None, model_hash: str = "",
               schedule_digest: str = "", ids: Sequence[str] | None = None, *, positions=None,
               shards: list[tuple[int, int]] | None = None, shard_index: int | None = None,
               overwrite: bool = False, extra: dict | None = None) -> StoreWriter:
        """Start writing a store of ``n`` rows of dimension ``d`` in folder ``path``.

        Args:
            dtype: ``float32`` or ``bfloat16``.
            chunk_rows: rows per chunk (default: about 16 MiB per chunk).
            model_hash: hash of the base weights the approximators belong to (:func:`~unlearn_audit.models.
                functional.weights_hash` of w_T); schedule_digest: :meth:`Schedule.digest` of the training schedule.
            ids: record id of each row (unique); positions: training-set position of each row (default 0..n-1).
            shards: contiguous row ranges covering 0..n-1 (default one shard); shard_index: write only that shard
                (one process of several); the manifest is then made by :meth:`assemble` once all shards are done.
            overwrite: replace an existing store in ``path`` (only the store's own files are removed).
        """
        n, d = int(n), int(d)
        if n < 1 or d < 1:
            raise StoreError(f"n and d must be positive, got n={n}, d={d}")
        if dtype not in DTYPES:
            raise StoreError(f"dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
        chunk_rows = default_chunk_rows(d, dtype) if chunk_rows is None else int(chunk_rows)
        if chunk_rows < 1:
            raise StoreError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if ids is None:
            raise StoreError("ids: one record id per row is required")
        ids = [str(r) for r in ids]
        if len(ids) != n:
            raise StoreError(f"ids: expected {n} record ids, got {len(ids)}")
        if len(set(ids)) != n:
            raise StoreError("ids: record ids must be unique")
        positions = np.arange(n, dtype=np.int64) if positions is None else np.asarray(positions, dtype=np.int64)
        if positions.shape != (n,):
            raise StoreError(f"positions: expected {n} training positions, got shape {positions.shape}")
        shards = [(0, n)] if shards is None else [(int(a), int(b)) for a, b in shards]
        if shards[0][0] != 0 or shards[-1][1] != n or any(shards[i][1] != shards[i + 1][0]
                                                           for i in range(len(shards) - 1)) \
                or any(b < a for a, b in shards):
            raise StoreError(f"shards must be contiguous row ranges covering 0..{n - 1}, got {shards}")
        if shard_index is not None and not 0 <= int(shard_index) < len(shards):
            raise StoreError(f"shard_index {shard_index} out of range (0..{len(shards) - 1})")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if shard_index is None or int(shard_index) == 0:
            if (path / "manifest.json").exists() and not overwrite:
                raise StoreError(f"{path} already holds a store (pass overwrite=True to replace it)")
            if overwrite:
                (path / "manifest.json").unlink(missing_ok=True)
        if shard_index is None:
            remove_store(path)          # no finished store here (checked above): clear a half-written one
        elif overwrite:
            old = path / shard_dir_name(int(shard_index))
            if old.is_dir():
                shutil.rmtree(old)
            (path / f"{shard_dir_name(int(shard_index))}.json").unlink(missing_ok=True)
        meta = {"format": FORMAT, "version": VERSION, "n": n, "d": d, "dtype": dtype, "chunk_rows": chunk_rows,
                "ids_digest": ids_digest(ids), "positions_digest": hashlib.sha256(positions.tobytes()).hexdigest(),
                "model_hash": str(model_hash), "schedule_digest": str(schedule_digest),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "shard_bounds": [list(s) for s in shards], "extra": dict(extra or {})}
        return StoreWriter(path, meta, ids, positions, shards, shard_index)

    @staticmethod
    def assemble(path, ids: Sequence[str] | None = None, positions=None) -> dict:
        """Tie finished shards together: read every ``shard-*.json``, check they describe one store, and write
        ``manifest.json`` (plus ``ids.json``/``positions.npy`` when given and not there yet). Returns the manifest."""
        path = Path(path)
        if ids is not None:
            _write_ids(path, [str(r) for r in ids],
                       np.arange(len(ids), dtype=np.int64) if positions is None else np.asarray(positions, np.int64))
        files = sorted(path.glob("shard-[0-9][0-9][0-9][0-9][0-9].json"))
        if not files:
            raise StoreError(f"{path}: no finished shard records (shard-*.json)")
        recs = [_read_json(f) for f in files]
        base = {k: v for k, v in recs[0].items() if k not in ("shard", "created")}
        bounds = base.get("shard_bounds")
        if not isinstance(bounds, list):
            raise StoreError(f"{files[0].name}: no shard_bounds list")
        for f, r in zip(files, recs):
            other = {k: v for k, v in r.items() if k not in ("shard", "created")}
            if other != base:
                diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
                raise StoreError(f"{f.name} disagrees with {files[0].name} on {', '.join(diff)}")
        have = {r["shard"]["index"] for r in recs}
        missing = [i for i in range(len(bounds)) if i not in have]
        if missing:
            raise StoreError(f"{path}: shard {missing[0]} of {len(bounds)} has not been finalised "
                             f"({shard_dir_name(missing[0])}.json missing)")
        shards = sorted((r["shard"] for r in recs), key=lambda s: s["index"])
        quant = [s["quantisation"] for s in shards if s.get("quantisation")]
        manifest = {**base, "created": min(r["created"] for r in recs),
                    "quantisation": None if not quant else {
                        "reference": "float32",
                        "max_row_relative_error": max(q["max_row_relative_error"] for q in quant),
                        "max_elementwise_relative_error": max(q["max_elementwise_relative_error"] for q in quant)},
                    "shards": [{k: s[k] for k in ("index", "start", "stop", "dir", "chunks")} for s in shards],
                    "complete": True}
        stored_ids = _read_json(path / "ids.json") if (path / "ids.json").exists() else None
        if stored_ids is None or ids_digest(stored_ids) != manifest["ids_digest"]:
            raise StoreError(f"{path / 'ids.json'}: missing or does not match the shards' ids digest")
        atomic_write_text(path / "manifest.json", json.dumps(manifest, indent=1))
        return manifest

    # ---- opening ---------------------------------------------------------------------------------------------
    def __init__(self, path: Path, manifest: dict, ids: list[str], positions: np.ndarray, verify: bool):
        self.path, self.manifest, self.ids, self.positions, self.verify = path, manifest, ids, positions, verify
        self.n, self.d, self.dtype = manifest["n"], manifest["d"], manifest["dtype"]
        self.chunks = [(sh["index"], c) for sh in manifest["shards"] for c in sh["chunks"]]
        self._starts = np.array([c["start"] for _, c in self.chunks], dtype=np.int64)
        self._maps: dict[int, np.ndarray] = {}
        self.chunks_read: set[int] = set()       # chunk numbers (0-based over the whole store) opened so far
        self.bytes_verified = 0
        self._row_of_id: dict[str, int] | None = None

    @classmethod
    def open(cls, path, expected_model_hash: str | None = None, expected_schedule_digest: str | None = None, *,
             verify: bool = True) -> "ApproximatorStore":
        """Open a finished store. A model hash or schedule digest that differs from the expected one is refused
        (the approximators belong to another model). ``verify``: check each chunk's SHA-256 on first read."""
        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise StoreError(f"{path}: not a finished approximator store (no manifest.json)")
        m = _read_json(mpath)
        for key in ("format", "n", "d", "dtype", "chunk_rows", "ids_digest", "model_hash", "schedule_digest",
                    "shards", "complete"):
            if key not in m:
                raise StoreError(f"{mpath}: manifest lacks '{key}'")
        if m["format"] != FORMAT or m.get("version") != VERSION:
            raise StoreError(f"{mpath}: not a version-{VERSION} approximator store manifest")
        if m["dtype"] not in DTYPES:
            raise StoreError(f"{mpath}: unknown dtype '{m['dtype']}'")
        if not m["complete"]:
            raise StoreError(f"{mpath}: the store was never finalised")
        if expected_model_hash is not None and m["model_hash"] != expected_model_hash:
            raise StoreError(f"store {path} belongs to model {m['model_hash'][:12]}…, not to the given model "
                             f"{expected_model_hash[:12]}… (model hash mismatch)")
        if expected_schedule_digest is not None and m["schedule_digest"] != expected_schedule_digest:
            raise StoreError(f"store {path} was computed on schedule {m['schedule_digest'][:12]}…, not on the given "
                             f"schedule {expected_schedule_digest[:12]}… (schedule digest mismatch)")
        ids = _read_json(path / "ids.json") if (path / "ids.json").is_file() else None
        if not isinstance(ids, list) or ids_digest(ids) != m["ids_digest"]:
            raise StoreError(f"{path / 'ids.json'}: missing or does not match the manifest's ids digest")
        try:
            positions = np.load(path / "positions.npy", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise StoreError(f"{path / 'positions.npy'}: unreadable ({err})") from None
        if hashlib.sha256(np.ascontiguousarray(positions, np.int64).tobytes()).hexdigest() != m.get("positions_digest"):
            raise StoreError(f"{path / 'positions.npy'}: does not match the manifest's positions digest")
        covered = sorted((c["start"], c["stop"]) for sh in m["shards"] for c in sh["chunks"])
        edge = 0
        for a, b in covered:
            if a != edge:
                raise StoreError(f"{mpath}: chunks do not cover rows {edge}..{a - 1}")
            edge = b
        if edge != m["n"]:
            raise StoreError(f"{mpath}: chunks cover {edge} rows, manifest says n={m['n']}")
        return cls(path, m, ids, positions, verify)

    # ---- properties --------------------------------------------------------------------------------------------
    @property
    def model_hash(self) -> str:
        return self.manifest["model_hash"]

    @property
    def schedule_digest(self) -> str:
        return self.manifest["schedule_digest"]

    @property
    def bytes_per_record(self) -> int:
        return self.d * DTYPES[self.dtype].itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of approximator data (n · d · itemsize; .npy headers and the manifest not counted)."""
        return self.n * self.bytes_per_record

    @property
    def n_chunks(self) -> int:
        return len(self.chunks)

    @property
    def shards_read(self) -> set[int]:
        return {self.chunks[k][0] for k in self.chunks_read}

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"ApproximatorStore({str(self.path)!r}, n={self.n}, d={self.d}, dtype={self.dtype}, "
                f"chunks={self.n_chunks}, shards={len(self.manifest['shards'])})")

    # ---- reading ---------------------------------------------------------------------------------------------
    def rows_of(self, record_ids: Iterable[str]) -> np.ndarray:
        """Row numbers of the given record ids (StoreError naming an unknown id)."""
        if self._row_of_id is None:
            self._row_of_id = {rid: i for i, rid in enumerate(self.ids)}
        out = []
        for rid in record_ids:
            r = self._row_of_id.get(str(rid))
            if r is None:
                raise StoreError(f"record id '{rid}' has no approximator in store {self.path}")
            out.append(r)
        return np.array(out, dtype=np.int64)

    def _chunk(self, k: int) -> np.ndarray:
        if k in self._maps:
            return self._maps[k]
        _, c = self.chunks[k]
        f = self.path / c["file"]
        label = f"chunk {k} (shard {self.chunks[k][0]}, rows {c['start']}..{c['stop'] - 1}, file {f})"
        if not f.is_file():
            raise StoreError(f"store {label} is missing")
        if self.verify:
            if file_sha256(f) != c["sha256"]:
                raise StoreError(f"store {label} is corrupted: SHA-256 does not match the manifest")
            self.bytes_verified += f.stat().st_size
        try:
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise StoreError(f"store {label} is unreadable: {err}") from None
        if arr.shape != (c["stop"] - c["start"], self.d) or arr.dtype != DTYPES[self.dtype]:
            raise StoreError(f"store {label} has shape {arr.shape} {arr.dtype}, expected "
                             f"{(c['stop'] - c['start'], self.d)} {DTYPES[self.dtype]}")
        self._maps[k] = arr
        self.chunks_read.add(k)
        return arr

    def _positions(self, positions) -> np.ndarray:
        p = np.asarray(positions, dtype=np.int64).reshape(-1)
        if p.size and (p.min() < 0 or p.max() >= self.n):
            bad = int(p[(p < 0) | (p >= self.n)][0])
            raise StoreError(f"row {bad} out of range (store has {self.n} rows)")
        return p

    def _decode(self, block: np.ndarray) -> torch.Tensor:
        if self.dtype == "bfloat16":
            return _bf16_bits_to_float32(block)
        return torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))

    def _groups(self, p: np.ndarray):
        chunk_of = np.searchsorted(self._starts, p, side="right") - 1
        for k in np.unique(chunk_of):
            sel = np.flatnonzero(chunk_of == k)
            yield int(k), sel, p[sel] - self.chunks[int(k)][1]["start"]

    def rows(self, positions) -> torch.Tensor:
        """Approximators of the given rows, (k, d) float32, in the order given. Reads only the chunks holding
        them (each verified once per open)."""
        p = self._positions(positions)
        out = torch.empty(len(p), self.d, dtype=torch.float32)
        for k, sel, local in self._groups(p):
            out[torch.from_numpy(sel)] = self._decode(self._chunk(k)[local])
        return out

    def sum_rows(self, positions, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Σ of the given rows' approximators, (d,), accumulated in float64 chunk by chunk (memory: one block)."""
        p = self._positions(positions)
        total = torch.zeros(self.d, dtype=torch.float64)
        for k, _, local in self._groups(p):
            total += self._decode(self._chunk(k)[local]).to(torch.float64).sum(0)
        return total.to(dtype)

    def verify_all(self) -> None:
        """Check every chunk's checksum now (StoreError on the first bad one)."""
        for k in range(self.n_chunks):
            self._chunk(k)

    def close(self) -> None:
        self._maps.clear()


# -- small file helpers and export --------------------------------------------------------------------------------
def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{path}: unreadable or malformed JSON ({type(err).__name__})") from None


def _write_ids(path: Path, ids: list[str], positions: np.ndarray) -> None:
    atomic_write_text(path / "ids.json", json.dumps(ids))
    atomic_save_npy(path / "positions.npy", np.ascontiguousarray(positions, dtype=np.int64))
