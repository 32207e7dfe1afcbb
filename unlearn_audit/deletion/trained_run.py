"""A trained run on disk: what online deletion needs from a finished training, and nothing else (DESIGN §2.3, §8).

The base weights w_T, the approximators a_u in the one approximator store format (:mod:`unlearn_audit.hfocu.store`:
memory-mapped chunks, each with its SHA-256, the model hash and schedule digest in its manifest), the record ids, the
batch schedule, a JSON spec (model, SGD settings, the certificate constants) and a manifest with the SHA-256 of every
file. No pickle anywhere (``np.load(allow_pickle=False)``). Written by the audit (``save_trained_run``) and by the
sharded precompute (``finish_trained_run`` around the store its processes wrote); read by ``load_trained_run``.

    trained_run/  manifest.json  spec.json  weights.npy  record_ids.npy  schedule.npz  [trajectory.npy]
                  store/  manifest.json  ids.json  positions.npy  shard-00000/chunk-000000.npy ...

``trajectory.npy`` (optional): the recorded weights w_0..w_{T-1} (T × d, the training dtype), kept when the
a-posteriori certificate can replay this model (softmax regression; smooth models within a memory budget). With it,
and the training data rebuilt from the config recorded in ``spec.training_data`` (checked against its digest),
``forget`` certifies each release with the same replayed bound as the audit; without either, the a-posteriori bound
takes its plug-in form (looser: 11x at one deleted record on the default digits run, not certifiable at 11).

The store's rows are the tracked training positions (all of them for mode ``all``, the declared candidates for
``candidates``); ``record_ids.npy`` holds the id of every training position, so an id without an approximator is told
apart from an unknown one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
import torch

from unlearn_audit.certify import (
    CertificateConstants,
    CertificationError,
    SensitivityCertificate,
    certificate_from_constants,
    constants_from_dict,
)
from unlearn_audit.common import array_sha256, atomic_write, file_sha256, fsync_path, json_digest
from unlearn_audit.deletion.errors import DurableError, TrainedRunError
from unlearn_audit.hfocu.replay import certificate_replay_terms, replay_supported
from unlearn_audit.hfocu.store import ApproximatorStore, StoreError
from unlearn_audit.models import FunctionalModel
from unlearn_audit.training import SGDConfig
from unlearn_audit.training.schedule import Schedule

__all__ = ["STORE_DIR", "TRAINED_RUN_DIR", "TrainedRun", "TrainedRunError", "find_trained_run", "finish_trained_run",
           "load_trained_run", "save_trained_run", "trained_run_spec"]

FORMAT = "unlearn-audit/trained-run"
FORMAT_VERSION = 2
TRAINED_RUN_DIR = "trained_run"
STORE_DIR = "store"
_FILES = ("weights.npy", "record_ids.npy", "schedule.npz", "spec.json", f"{STORE_DIR}/manifest.json")
_OPTIONAL_FILES = ("trajectory.npy",)
_BLOCK = 4096                                    # rows per block when a whole store is read or copied

Approximators = Union[np.ndarray, ApproximatorStore]


def trained_run_spec(model: FunctionalModel, sgd: SGDConfig, *, mode: str, curvature: str, order: str,
                     train_dtype: str, constants: CertificateConstants, weights: np.ndarray,
                     schedule: Schedule, bound: str = "a_posteriori", capacity: dict | None = None) -> dict:
    """The spec of a trained run (JSON): how to rebuild the model, the SGD settings, the HF-OCU settings (with the
    certificate's ``bound``), the certificate constants, the hashes tying it to its weights and schedule, and the
    utility budget ``capacity`` (``sigma_budget``, ``max_accuracy_loss``: what ``forget`` compares a release's σ
    with) when one was measured."""
    spec: dict = {
        "model": {"kind": model.kind, "input_shape": list(model.input_shape), "n_classes": int(model.n_classes),
                  "dim": int(model.dim), "hidden": model.options.get("hidden")},
        "sgd": dataclasses.asdict(sgd),
        "hfocu": {"mode": mode, "curvature": curvature, "order": order, "train_dtype": train_dtype, "bound": bound},
        "certificate": constants.to_dict(),
        "weights_hash": array_sha256(weights),
        "schedule_digest": schedule.digest(),
    }
    if model.plugin is not None:             # a custom model: which user code built it (module, file hash, version)
        spec["model"].update(factory=model.options.get("factory"), plugin=model.plugin.to_dict())
    if capacity:
        spec["capacity"] = dict(capacity)
    return spec


class TrainedRun:
    """What online deletion needs from a finished training: base weights, approximators, ids, schedule, spec.

    Args:
        weights: w_T, shape (d,), float32 or float64.
        approximators: the (m, d) approximators, row r for the training position ``tracked_positions[r]``: a
            float32 array (a run in memory) or an :class:`~unlearn_audit.hfocu.store.ApproximatorStore` whose rows
            and ids are exactly those (a run on disk).
        tracked_positions: (m,) int64, unique, in [0, n).
        record_ids: (n,) record ids (str), unique, one per training position.
        schedule: the recorded batch schedule (n_train = n).
        spec: JSON-ready dict (:func:`trained_run_spec`): ``model``, ``sgd``, ``hfocu`` and ``certificate`` (the
            certificate constants, :func:`~unlearn_audit.certify.constants_from_dict` reads them).
        digest: the run digest (from the manifest); computed when first asked for otherwise.
    """

    def __init__(self, weights, approximators: Approximators, tracked_positions, record_ids, schedule: Schedule,
                 spec: dict, digest: str | None = None, trajectory: np.ndarray | None = None):
        w = np.asarray(weights)
        if trajectory is not None:
            trajectory = np.asarray(trajectory)
            if trajectory.shape != (schedule.n_steps, w.shape[0]) or trajectory.dtype not in (np.float32, np.float64):
                raise TrainedRunError(f"the trajectory must be float32/float64 of shape ({schedule.n_steps}, "
                                      f"{w.shape[0]}), got {trajectory.shape} {trajectory.dtype}")
        tracked = np.asarray(tracked_positions)
        ids = np.asarray(record_ids)
        if w.ndim != 1 or w.dtype not in (np.float32, np.float64) or not np.all(np.isfinite(w)):
            raise TrainedRunError(f"weights must be a finite float32/float64 vector, got shape {w.shape} {w.dtype}")
        a: Approximators
        if isinstance(approximators, ApproximatorStore):
            a = approximators
            if a.d != w.shape[0]:
                raise TrainedRunError(f"the approximator store has d={a.d}, the weights have {w.shape[0]} entries")
        else:
            a = np.asarray(approximators)
            if a.ndim != 2 or a.shape[1] != w.shape[0] or a.dtype != np.float32:
                raise TrainedRunError(f"approximators must be float32 of shape (m, {w.shape[0]}), got {a.shape} "
                                      f"{a.dtype}")
        m = a.n if isinstance(a, ApproximatorStore) else a.shape[0]
        if ids.ndim != 1 or ids.dtype.kind != "U":
            raise TrainedRunError("record ids must be a 1-D array of str")
        n = len(ids)
        if len(np.unique(ids)) != n:
            raise TrainedRunError("record ids are not unique")
        if schedule.n_train != n:
            raise TrainedRunError(f"schedule is for {schedule.n_train} records, the run has {n} record ids")
        if tracked.ndim != 1 or not np.issubdtype(tracked.dtype, np.integer) or len(tracked) != m:
            raise TrainedRunError("tracked positions must be integers, one per approximator row")
        if len(tracked) and (tracked.min() < 0 or tracked.max() >= n or len(np.unique(tracked)) != len(tracked)):
            raise TrainedRunError("tracked positions must be unique training positions")
        if isinstance(a, ApproximatorStore) and (not np.array_equal(a.positions, tracked)
                                                 or a.ids != [str(r) for r in ids[tracked]]):
            raise TrainedRunError("the approximator store's rows are not the run's tracked records (ids or "
                                  "positions differ)")
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
        self.trajectory = trajectory
        self._digest = digest
        self._replay_data: tuple | None = None      # (model, sgd, x, y) once rebuilt for the certificate's replay
        self._replay_cache = None
        self.replay_unavailable: str | None = None  # why the a-posteriori bound took its plug-in form
        self.folder: Path | None = None     # the folder it was loaded from (None for a run in memory)
        self.position_of = {str(r): i for i, r in enumerate(ids)}
        self.row_of = np.full(n, -1, dtype=np.int64)
        self.row_of[self.tracked_positions] = np.arange(len(tracked), dtype=np.int64)

    @property
    def n_approximators(self) -> int:
        return len(self.tracked_positions)

    def approximator_rows(self, rows) -> np.ndarray:
        """Approximators of the given rows, (k, d) float32, in the order given (a store reads only their chunks)."""
        rows = np.asarray(rows, dtype=np.int64)
        if isinstance(self.approximators, ApproximatorStore):
            try:
                return self.approximators.rows(rows).numpy()
            except StoreError as err:
                raise TrainedRunError(str(err)) from None
        return np.asarray(self.approximators[rows])

    def _blocks(self):
        for start in range(0, self.n_approximators, _BLOCK):
            yield start, self.approximator_rows(np.arange(start, min(start + _BLOCK, self.n_approximators)))

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
        h.update(f"approximators:<f4:{(self.n_approximators, self.dim)}".encode())
        for _, block in self._blocks():
            h.update(np.ascontiguousarray(block, dtype=np.float32).tobytes())
        h.update(json.dumps([str(r) for r in self.record_ids]).encode())
        h.update(self.schedule.digest().encode())
        h.update(json.dumps(self.spec, sort_keys=True).encode())
        if self.trajectory is not None:
            h.update(f"trajectory:{self.trajectory.dtype.str}:{self.trajectory.shape}".encode())
            h.update(np.ascontiguousarray(self.trajectory).tobytes())
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
    def from_unlearner(cls, unlearner, *, data_config: dict | None = None) -> "TrainedRun":
        """Capture a fitted :class:`~unlearn_audit.hfocu.HFOCUUnlearner` (any time after ``fit``: its base weights
        w_T and approximators are not changed by ``delete``). A store-backed unlearner's store is used as it is.

        ``data_config``: the config (``AuditConfig.model_dump(mode="json")``) that rebuilds the training data; with
        the unlearner's recorded trajectory it lets ``forget`` replay the a-posteriori certificate (the spec keeps
        it with the training data's digest, never the data)."""
        u = unlearner
        if not hasattr(u, "layout_"):
            raise TrainedRunError("the unlearner is not fitted: call fit() first")
        if u.layout_ == "replay":
            raise TrainedRunError("mode 'replay' keeps no approximators: a trained run for online deletion needs "
                                  "mode 'all' or 'candidates'")
        weights = u.weights_.detach().cpu().numpy().copy()
        approx = u.store_ if u.store_ is not None else \
            u.approximators_.detach().cpu().numpy().astype(np.float32, copy=True)
        spec = trained_run_spec(u.model, u.sgd, mode=u.mode, curvature=u.curvature, order=u.order,
                                train_dtype=str(u.dtype), constants=u.certificate_constants(), weights=weights,
                                schedule=u.schedule_, bound=u.bound, capacity=getattr(u, "capacity_budget_", None))
        recorded = u._recorded_weights() if hasattr(u, "_recorded_weights") else None
        trajectory = None
        if recorded is not None and replay_supported(u.model, u.sgd):
            trajectory = torch.stack([w.detach().cpu() for w in recorded]).numpy()
            if data_config is not None:
                spec["training_data"] = {"config": data_config,
                                         "digest": training_digest(u.x_, u.y_, np.asarray(u.ids_).astype(str))}
        return cls(weights, approx, u.tracked_positions_, np.asarray(u.ids_).astype(str), u.schedule_, spec,
                   trajectory=trajectory)

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
        """Σ a_u over the given positions, in the given order, in float64 (deterministic: rows added in order, the
        same for a run in memory and on disk)."""
        block = self.approximator_rows(self.row_of[np.asarray(positions, dtype=np.int64)])
        return block.astype(np.float64).sum(axis=0)

    def certificate(self, positions) -> SensitivityCertificate:
        """Δ(U) for U = the given training positions, from the constants saved in the spec (the same function as
        ``HFOCUUnlearner.certificate``: :func:`~unlearn_audit.certify.certificate_from_constants`), with the run's
        ``bound``. The a-posteriori bound replays U along the saved trajectory with the training data rebuilt from
        the recorded config (:meth:`replay_data`), exactly as the unlearner does; when either is unavailable it
        takes its plug-in form (‖A_t‖ ≤ b_t: looser, still far below the worst case) and ``replay_unavailable``
        says why."""
        replay = None
        if self.bound == "a_posteriori" and self.replay_data() is not None:
            replay = self._replay_terms
        return certificate_from_constants(self.schedule, positions, self.constants, order=self.order,
                                          bound=self.bound, replay=replay)

    def _replay_terms(self, positions: np.ndarray):
        data = self.replay_data()
        assert data is not None and self.trajectory is not None
        model, sgd, x, y = data
        traj = torch.as_tensor(self.trajectory)
        stored = torch.as_tensor(self.approximator_sum(positions))
        terms, self._replay_cache = certificate_replay_terms(
            model, sgd, x, y, self.schedule, traj, torch.as_tensor(self.weights), positions, stored_sum=stored,
            cache=self._replay_cache, train_dtype=str(self.spec.get("hfocu", {}).get("train_dtype", "float32")))
        return terms

    def replay_data(self) -> tuple | None:
        """(model, sgd, x, y) for the certificate's replay: the training data rebuilt from ``spec.training_data``
        (the config of the run that saved it) and checked against the recorded digest, once. None, with the reason
        in ``replay_unavailable``, when the run has no trajectory or no data config, or the data cannot be rebuilt
        or differs."""
        if self._replay_data is not None or self.replay_unavailable is not None:
            return self._replay_data
        source = self.spec.get("training_data")
        if self.trajectory is None:
            self.replay_unavailable = "the trained run keeps no weight trajectory"
        elif not isinstance(source, dict) or not isinstance(source.get("config"), dict):
            self.replay_unavailable = "the trained run records no config to rebuild its training data"
        else:
            self._replay_data = self._rebuild_training_data(source)
        return self._replay_data

    def _rebuild_training_data(self, source: dict) -> tuple | None:
        from unlearn_audit.config import config_from_dict
        from unlearn_audit.inputs import build_inputs

        if (source["config"].get("model") or {}).get("factory"):
            self.replay_unavailable = ("the model comes from a plugin (model.factory): serving a deletion never "
                                       "imports plugin code")
            return None
        try:
            inp = build_inputs(config_from_dict(source["config"]))
        except Exception as err:                      # noqa: BLE001 - any failure means: no replay, say why
            self.replay_unavailable = f"the training data could not be rebuilt ({type(err).__name__}: " \
                                      f"{str(err).splitlines()[0] if str(err) else ''})"
            return None
        if training_digest(inp.x, inp.y, inp.ids) != source.get("digest") or inp.model.dim != self.dim:
            self.replay_unavailable = "the rebuilt training data differ from the data this run was trained on"
            return None
        return inp.model, inp.sgd, inp.x, inp.y

    @property
    def bound(self) -> str:
        """The sensitivity bound releases are calibrated to (``a_posteriori`` or ``worst_case``; runs saved before
        the a-posteriori bound existed: ``worst_case``)."""
        return self.spec.get("hfocu", {}).get("bound", "worst_case")


# ---------------------------------------------------------------------------------------------------------------------
# on disk
def _write_store(folder: Path, run: TrainedRun) -> None:
    """The run's approximators as a store in ``folder`` (copied block by block from a store: no m x d in memory)."""
    src = run.approximators
    dtype = src.dtype if isinstance(src, ApproximatorStore) else "float32"
    writer = ApproximatorStore.create(folder, run.n_approximators, run.dim, dtype, model_hash=run.spec["weights_hash"],
                                      schedule_digest=run.spec["schedule_digest"],
                                      ids=[str(r) for r in run.record_ids[run.tracked_positions]],
                                      positions=run.tracked_positions,
                                      extra={"curvature": run.spec.get("hfocu", {}).get("curvature"),
                                             "order": run.order})
    for start, block in run._blocks():
        writer.write_rows(start, block)
    writer.finalise()


def _write_files(folder: Path, run: TrainedRun) -> None:
    """Everything but the store, then the manifest (the commit point: a folder without it is not a trained run)."""
    np.save(folder / "weights.npy", run.weights, allow_pickle=False)
    np.save(folder / "record_ids.npy", run.record_ids.astype(str), allow_pickle=False)
    np.savez(folder / "schedule.npz", allow_pickle=False, **run.schedule.to_npz_dict())
    atomic_write(folder / "spec.json", json.dumps(run.spec, indent=2, sort_keys=True, allow_nan=False).encode())
    names = list(_FILES)
    if run.trajectory is not None:
        np.save(folder / "trajectory.npy", run.trajectory, allow_pickle=False)
        names.append("trajectory.npy")
    for name in names:
        fsync_path(folder / name)
    hashes = {name: file_sha256(folder / name) for name in names}
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "files": hashes, "run_digest": run.digest,
                "files_digest": json_digest(hashes), "weights_hash": run.spec["weights_hash"],
                "n_train": run.n_train, "dim": run.dim, "n_approximators": run.n_approximators}
    atomic_write(folder / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())


def save_trained_run(path, unlearner, *, overwrite: bool = False, data_config: dict | None = None) -> Path:
    """Write a trained run (from a fitted ``HFOCUUnlearner`` or a ``TrainedRun``) to the folder ``path``.

    The folder is written beside ``path`` first and moved into place at the end, so it is complete or absent.
    ``data_config``: see :meth:`TrainedRun.from_unlearner` (the audit passes its config).
    Returns ``path``. Raises TrainedRunError if ``path`` exists and is not empty (unless ``overwrite``).

    Example (in the audit, after ``unlearner.fit``)::

        save_trained_run(run_dir / "trained_run", unlearner)
    """
    run = unlearner if isinstance(unlearner, TrainedRun) else TrainedRun.from_unlearner(unlearner,
                                                                                        data_config=data_config)
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise TrainedRunError(f"{path}: exists and is not empty (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        _write_store(tmp / STORE_DIR, run)
        _write_files(tmp, run)
        tmp.chmod(0o755)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        tmp.replace(path)
        fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def finish_trained_run(folder, weights: np.ndarray, record_ids, schedule: Schedule, spec: dict) -> TrainedRun:
    """Complete a trained run in ``folder`` whose approximator store ``folder/store`` is already written (the sharded
    precompute: one shard per process): check the store against the weights and schedule, write the other files
    and, last, the manifest. Returns the run."""
    folder = Path(folder)
    try:
        store = ApproximatorStore.open(folder / STORE_DIR, expected_model_hash=spec["weights_hash"],
                                       expected_schedule_digest=spec["schedule_digest"])
    except StoreError as err:
        raise TrainedRunError(str(err)) from None
    run = TrainedRun(weights, store, store.positions, np.asarray(record_ids).astype(str), schedule, spec)
    _write_files(folder, run)
    return run


def load_trained_run(path, *, verify_chunks: bool = True) -> TrainedRun:
    """Read a trained run, checking every file against the manifest's SHA-256 and the store against the weights and
    schedule. ``verify_chunks``: check every store chunk's SHA-256 now (reads the whole store once, so a tampered
    run is refused before anything else happens); False checks each chunk when it is first read instead (a request
    then reads only the chunks holding its records: for stores much larger than a request).

    Raises:
        TrainedRunError: missing folder or file, malformed manifest/spec/arrays, or a file whose hash does not match
        (the run was modified or belongs to another model).
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
                              f"({FORMAT_VERSION}); write the run again with this version")
    files = manifest.get("files")
    if not isinstance(files, dict) or not set(_FILES) <= set(files) <= set(_FILES) | set(_OPTIONAL_FILES):
        raise TrainedRunError(f"{mpath}: the manifest must list {', '.join(_FILES)} (and optionally "
                              f"{', '.join(_OPTIONAL_FILES)}), nothing else")
    for name in files:
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
        ids = np.load(path / "record_ids.npy", allow_pickle=False)
        with np.load(path / "schedule.npz", allow_pickle=False) as z:
            schedule = Schedule.from_npz_dict({k: z[k] for k in z.files})
        trajectory = np.load(path / "trajectory.npy", allow_pickle=False) if "trajectory.npy" in files else None
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise TrainedRunError(f"{path}: unreadable trained run ({str(exc).splitlines()[0] if str(exc) else exc!r})") \
            from None
    if not isinstance(spec, dict):
        raise TrainedRunError(f"{path}/spec.json: not a JSON object")
    if spec.get("weights_hash") != array_sha256(weights) or manifest.get("weights_hash") != spec["weights_hash"]:
        raise TrainedRunError(f"{path}: weights do not match the recorded weights hash")
    if spec.get("schedule_digest") != schedule.digest():
        raise TrainedRunError(f"{path}: schedule does not match the recorded schedule digest")
    try:
        store = ApproximatorStore.open(path / STORE_DIR, expected_model_hash=spec["weights_hash"],
                                       expected_schedule_digest=spec["schedule_digest"])
        if verify_chunks:
            store.verify_all()
    except StoreError as err:
        raise TrainedRunError(str(err)) from None
    run = TrainedRun(weights, store, store.positions, ids, schedule, spec, digest=manifest["run_digest"],
                     trajectory=trajectory)
    run.folder = path               # where the deletion service anchors the ledger's chain head
    return run


def find_trained_run(run_dir) -> Path:
    """``run_dir/trained_run`` if present, else ``run_dir`` itself (a trained-run folder, e.g. a precompute's)."""
    run_dir = Path(run_dir)
    sub = run_dir / TRAINED_RUN_DIR
    return sub if sub.is_dir() else run_dir


def training_digest(x, y, record_ids) -> str:
    """sha256 (hex) of the training features (float32), labels (int64) and record ids: ties a trained run's recorded
    data config to the exact data it was trained on."""
    h = hashlib.sha256()
    h.update(b"unlearn_audit.TrainingData/v1\0")
    xa = np.ascontiguousarray(np.asarray(x.detach().cpu() if hasattr(x, "detach") else x), dtype="<f4")
    h.update(repr(xa.shape).encode() + b"\0" + xa.tobytes())
    h.update(np.ascontiguousarray(np.asarray(y.detach().cpu() if hasattr(y, "detach") else y), dtype="<i8").tobytes())
    for rid in np.asarray(record_ids).astype(str).tolist():
        b = rid.encode("utf-8")
        h.update(len(b).to_bytes(4, "little") + b)
    return h.hexdigest()
