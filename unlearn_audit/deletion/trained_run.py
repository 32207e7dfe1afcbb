"""A trained run on disk: what online deletion needs from a finished training, and nothing else (DESIGN §2.3, §8).

The base weights w_T, the approximators a_u (float32), the tracked training positions, the record ids, the batch
schedule, a JSON spec (model, SGD settings, the certificate constants) and a manifest with the SHA-256 of every file.
No pickle anywhere (``np.load(allow_pickle=False)``). ``save_trained_run`` / ``load_trained_run`` are the only two
functions that know the format.

    run_dir/trained_run/  manifest.json  spec.json  weights.npy  approximators.npy  tracked_positions.npy
                          record_ids.npy  schedule.npz
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from unlearn_audit.certify import (CertificateConstants, CertificationError, SensitivityCertificate,
                                   certificate_from_constants, constants_from_dict)
from unlearn_audit.common import array_sha256, atomic_write, file_sha256, fsync_path, json_digest
from unlearn_audit.deletion.errors import DurableError, TrainedRunError
from unlearn_audit.training.schedule import Schedule

__all__ = ["TRAINED_RUN_DIR", "TrainedRun", "TrainedRunError", "find_trained_run", "load_trained_run",
           "save_trained_run"]

FORMAT = "unlearn-audit/trained-run"
FORMAT_VERSION = 1
TRAINED_RUN_DIR = "trained_run"
_FILES = ("weights.npy", "approximators.npy", "tracked_positions.npy", "record_ids.npy", "schedule.npz", "spec.json")


class TrainedRun:
    """What online deletion needs from a finished training: base weights, approximators, ids, schedule, spec.

    Args:
        weights: w_T, shape (d,), float32 or float64.
        approximators: (m, d) float32; row r is a_u for the training position ``tracked_positions[r]``.
        tracked_positions: (m,) int64, unique, in [0, n).
        record_ids: (n,) record ids (str), unique, one per training position.
        schedule: the recorded batch schedule (n_train = n).
        spec: JSON-ready dict: ``model``, ``sgd``, ``hfocu`` and ``certificate`` (the certificate constants,
            :func:`~unlearn_audit.certify.constants_from_dict` reads them).
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
        try:
            self.constants: CertificateConstants = constants_from_dict(spec["certificate"])
        except CertificationError as err:
            raise TrainedRunError(f"spec.certificate: {err}") from None
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

    @property
    def order(self) -> str:
        """The approximators' update order (``propagate_first`` or ``inject_first``)."""
        return self.spec.get("hfocu", {}).get("order", "propagate_first")

    # -- from a fitted unlearner -----------------------------------------------------------------------------------
    @classmethod
    def from_unlearner(cls, unlearner) -> "TrainedRun":
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
        if u.store_ is not None:
            approx = u.store_.rows(np.arange(len(rec.tracked_positions))).numpy()
        else:
            approx = rec.approximators.detach().cpu().numpy().astype(np.float32, copy=True)
        spec = {
            "model": {"kind": model.kind, "input_shape": list(model.input_shape), "n_classes": int(model.n_classes),
                      "dim": int(model.dim), "hidden": model.options.get("hidden")},
            "sgd": dataclasses.asdict(sgd),
            "hfocu": {"mode": u.mode, "curvature": u.curvature, "order": u.order, "train_dtype": str(u.dtype)},
            "certificate": u.certificate_constants().to_dict(),
            "weights_hash": array_sha256(weights),
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

    def certificate(self, positions) -> SensitivityCertificate:
        """Δ(U) for U = the given training positions, from the constants saved in the spec (the same function as
        ``HFOCUUnlearner.certificate``: :func:`~unlearn_audit.certify.certificate_from_constants`)."""
        return certificate_from_constants(self.schedule, positions, self.constants, order=self.order)


# ---------------------------------------------------------------------------------------------------------------------
# on disk
def save_trained_run(path, unlearner, *, overwrite: bool = False) -> Path:
    """Write a trained run (from a fitted ``HFOCUUnlearner`` or a ``TrainedRun``) to the folder ``path``.

    The folder is written beside ``path`` first and moved into place at the end, so it is complete or absent.
    Returns ``path``. Raises TrainedRunError if ``path`` exists and is not empty (unless ``overwrite``).

    Example (in the audit, after ``unlearner.fit``)::

        save_trained_run(run_dir / "trained_run", unlearner)
    """
    run = unlearner if isinstance(unlearner, TrainedRun) else TrainedRun.from_unlearner(unlearner)
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
        atomic_write(tmp / "spec.json", json.dumps(run.spec, indent=2, sort_keys=True, allow_nan=False).encode())
        for name in _FILES[:-1]:
            fsync_path(tmp / name)
        hashes = {name: file_sha256(tmp / name) for name in _FILES}
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "files": hashes, "run_digest": run.digest,
                    "files_digest": json_digest(hashes),
                    "weights_hash": run.spec["weights_hash"], "n_train": run.n_train, "dim": run.dim,
                    "n_approximators": int(run.approximators.shape[0])}
        atomic_write(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
        tmp.chmod(0o755)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        tmp.replace(path)
        fsync_path(path.parent)
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
        if file_sha256(f) != files[name]:
            raise TrainedRunError(f"{f}: sha256 does not match the manifest: the file was modified or belongs to "
                                  "another model")
    if manifest.get("files_digest") != json_digest(files) or not isinstance(manifest.get("run_digest"), str):
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
    if spec.get("weights_hash") != array_sha256(run.weights) or manifest.get("weights_hash") != spec["weights_hash"]:
        raise TrainedRunError(f"{path}: weights do not match the recorded weights hash")
    if spec.get("schedule_digest") != schedule.digest():
        raise TrainedRunError(f"{path}: schedule does not match the recorded schedule digest")
    return run


def find_trained_run(run_dir) -> Path:
    """``run_dir/trained_run`` if present, else ``run_dir`` itself (a trained-run folder)."""
    run_dir = Path(run_dir)
    sub = run_dir / TRAINED_RUN_DIR
    return sub if sub.is_dir() else run_dir
