"""Sharded HF-OCU precompute on ``torch.distributed`` (issue 9): writes a trained run that ``forget`` serves.

Every rank builds the same inputs from the config (:func:`unlearn_audit.inputs.build_inputs`: same data, model, seed
and schedule, so the weights are identical by construction; a SHA-256 of the weights is all-gathered at every epoch
boundary and at the end, and any mismatch aborts every rank with one clear error) and computes the approximators of
one contiguous shard of the training records with the layout strategy the in-process unlearner uses
(:mod:`unlearn_audit.hfocu.layouts`, ``tracked_positions`` = the shard). Each rank writes its own shard of the
approximator store; rank 0 ties the shards together and completes the trained run around them
(:func:`~unlearn_audit.deletion.trained_run.finish_trained_run`: weights, record ids, schedule, spec with the
certificate constants, manifest last). Work per rank: the (cheap) training replay plus 1/world_size of the
O(E·n²·d) propagation — or, with the reverse layout (:mod:`unlearn_audit.hfocu.reverse`, what ``auto`` picks when
d < n), 1/world_size of the O(E·n·d²) backward walk: the ranks split the d coordinates instead of the records, each
writing its columns of every record into the shared store (allocated first, barriers around), and each checksums its
own row shard (ranks on several machines then need a file system on which memory-mapped writes of one machine
are seen by the others after the barrier).

Backends: ``gloo`` on CPU, ``nccl`` when every local rank gets its own GPU (``--device auto`` when there are enough
GPUs, ``--device cuda`` insists: :func:`unlearn_audit.training.resolve_device`).

Launch on one machine (workers spawned with ``torch.multiprocessing``, rendezvous on 127.0.0.1 at a free port chosen
at run time), or with PyTorch's own launcher (one process per rank; add --nnodes/--rdzv-endpoint for several
machines, whose ranks must see the same --out folder)::

    unlearn-audit precompute --config audit.toml --out runs/pre --nproc 2
    torchrun --nproc_per_node 2 -m unlearn_audit.cli precompute --config audit.toml --out runs/pre
    unlearn-audit forget runs/pre --requests erase.txt

The config is the audit's (``data``, ``model``, ``training``, ``unlearning.curvature/order`` and ``seed`` are used).
Output folder: a trained run (``manifest.json``, ``spec.json``, ``weights.npy``, ``record_ids.npy``,
``schedule.npz``, ``store/``: :mod:`unlearn_audit.deletion.trained_run`) plus ``precompute.json`` (config, timings
per rank, device). With ``--force`` a previous precompute's files are replaced; a ledger and releases already in the
folder are left alone (a ledger of another run is then refused by ``forget``).
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from unlearn_audit.common import atomic_write_text
from unlearn_audit.deletion.errors import TrainedRunError
from unlearn_audit.deletion.trained_run import STORE_DIR, finish_trained_run, trained_run_spec
from unlearn_audit.hfocu.store import ApproximatorStore, StoreError, remove_store, split_rows
from unlearn_audit.training import resolve_device

__all__ = ["DistributedError", "EpochWeightsCheck", "check_out_dir", "free_port", "precompute", "precompute_rank",
           "run_precompute"]

OUT_FILES = ("manifest.json", "spec.json", "weights.npy", "record_ids.npy", "schedule.npz", "precompute.json")


class DistributedError(RuntimeError):
    """The ranks cannot go on together (diverged weights, different inputs, a failed rank); one-line message."""


# -- setup ----------------------------------------------------------------------------------------------------------
def backend_for(device: str, local_rank: int, local_world_size: int) -> tuple[str, torch.device, str | None]:
    """(backend, device, note) of one rank: nccl on ``cuda:local_rank`` when :func:`resolve_device` gives a GPU,
    else gloo on the CPU; the note says why ``auto`` stayed on the CPU although CUDA is present."""
    try:
        dev = resolve_device(device, local_rank, local_world_size)
    except ValueError as err:
        raise DistributedError(str(err)) from None
    if dev.type == "cuda":
        return "nccl", torch.device("cuda", local_rank), None
    note = None
    if device == "auto" and torch.cuda.is_available():
        note = (f"{local_world_size} processes but {torch.cuda.device_count()} GPU(s) on this node (nccl needs one "
                "per process): CPU used")
    return "gloo", dev, note


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_interface() -> str | None:
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    return next((nm for nm in names if nm in ("lo", "lo0")), None)


def check_out_dir(out: Path, force: bool) -> None:
    """An output folder must be empty (or absent) unless ``force`` (which replaces only this command's own files),
    and writable, not under a file, not the current folder or one of its ancestors (checked before any work)."""
    from unlearn_audit.outputs import OutputDirError, check_output_path

    if out.exists() and not out.is_dir():
        raise DistributedError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DistributedError(f"--out {out} is not empty (pass --force to replace a previous precompute)")
    if not (out.is_dir() and any(out.iterdir())):
        try:
            check_output_path(out, force=False)
        except OutputDirError as err:
            raise DistributedError(str(err)) from None


def _clear_out_dir(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in OUT_FILES:                       # the manifest first: a half-replaced run is never a trained run
        (out / name).unlink(missing_ok=True)
    if (out / STORE_DIR).is_dir():
        remove_store(out / STORE_DIR)


# -- collectives --------------------------------------------------------------------------------------------------
def _gather(obj) -> list:
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def agree(error: str | None, what: str) -> None:
    """Collective: every rank says whether ``what`` went well; if one did not, every rank raises the same error
    (so no rank is left waiting in a later collective)."""
    errors = _gather(error)
    bad = [(r, e) for r, e in enumerate(errors) if e is not None]
    if bad:
        r, e = bad[0]
        raise DistributedError(f"{what} failed on rank {r}: {e}")


def check_same(value: str, what: str) -> None:
    """Collective: all ranks must hold the same ``value`` (a hash)."""
    values = _gather(value)
    wrong = [r for r, v in enumerate(values) if v != values[0]]
    if wrong:
        raise DistributedError(f"{what} differ across ranks: rank {wrong[0]} has {values[wrong[0]][:12]}…, rank 0 "
                               f"has {values[0][:12]}… (same config, data, seed and library versions on every rank?)")


class EpochWeightsCheck:
    """Training hook: at the first step of every epoch after the first, all-gather the hash of w_t (the weights
    at the end of the previous epoch) and abort on any difference."""

    def __init__(self, steps_per_epoch: int, log=None):
        self.steps_per_epoch, self.log, self.checked = int(steps_per_epoch), log, 0

    def __call__(self, info) -> None:
        from unlearn_audit.models.functional import weights_hash

        if info.t > 0 and info.t % self.steps_per_epoch == 0:
            epoch = info.t // self.steps_per_epoch
            check_same(weights_hash(info.w), f"weights after epoch {epoch}")
            self.checked += 1
            if self.log:
                self.log(f"epoch {epoch}: weights identical on all ranks")


# -- one rank -----------------------------------------------------------------------------------------------------
def precompute_rank(cfg, out, *, store_dtype: str = "float32", chunk_rows: int | None = None, force: bool = False,
                    layout: str = "auto", recursion_chunk: int | None = None, device_note: str | None = None,
                    log=None) -> dict[str, Any]:
    """The work of one rank, inside an initialised process group (gloo: CPU; nccl: the current CUDA device).

    ``layout``: as the unlearner's (:func:`~unlearn_audit.hfocu.layouts.make_layout`; ``auto`` picks the same way),
    with this rank's shard as the tracked records. ``recursion_chunk``: vectors per batched HVP (default 256
    time-outer, 64 chunk-outer). Returns rank 0's ``precompute.json`` contents on rank 0 and the rank's own summary
    elsewhere."""
    from unlearn_audit.hfocu.constants import TrajectoryProbe, run_constants
    from unlearn_audit.hfocu.layouts import ReverseOuter, choose_layout, make_layout
    from unlearn_audit.inputs import build_inputs
    from unlearn_audit.models.functional import weights_hash
    from unlearn_audit.training import Schedule, train_sgd

    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(out)
    dev = torch.device("cpu")
    if dist.get_backend() == "nccl":
        dev = torch.device("cuda", torch.cuda.current_device())
    say = (lambda msg: log(f"[rank 0] {msg}")) if (log and rank == 0) else None
    uc = cfg.unlearning

    # Inputs: every rank builds them itself; they must agree before any work is done.
    err = None
    try:
        inp = build_inputs(cfg)
        model, sgd, n = inp.model, inp.sgd, len(inp.x)
        if world > n:
            raise DistributedError(f"{world} processes for {n} training records: use at most {n}")
        schedule = Schedule.make(n, sgd.epochs, sgd.batch_size, sgd.lr, sgd.decay, sgd.seed)
        w0 = model.initial_weights(torch.float32)
        bounds = split_rows(n, world)
        lo, hi = bounds[rank]
        # The choice compares the whole run (the reverse layout splits the coordinates, not the records, among the
        # processes, so both sides divide by the world size).
        choice = choose_layout(layout, model, sgd, uc.curvature, n, n)
        column_split = choice.name == "reverse"
        strategy = make_layout(choice.name, model, sgd, n, None if column_split else np.arange(lo, hi, dtype=np.int64),
                               curvature=uc.curvature, order=uc.order, dtype=torch.float32, chunk_size=recursion_chunk,
                               device=dev)
        strategy.choice = choice
        if isinstance(strategy, ReverseOuter):
            strategy.columns = split_rows(model.dim, world)[rank]
    except (ValueError, StoreError) as e:                                # reported on every rank
        err = str(e)
    except Exception as e:                                               # noqa: BLE001 (reported on every rank)
        err = f"{type(e).__name__}: {e}"
    agree(err, "loading the data and model")
    check_same(inp.data_digest, "training data digests")
    check_same(schedule.digest(), "schedule digests")
    check_same(weights_hash(w0), "initial weights")
    check_same(cfg.digest(), "configs")

    err = None
    if rank == 0:
        try:
            check_out_dir(out, force)
            _clear_out_dir(out)
        except (DistributedError, OSError, StoreError) as e:
            err = str(e)
    agree(err, "preparing the output folder")

    # Training replay with this rank's shard of approximators (rank 0 also probes the trajectory for the measured
    # certificate constants of models without analytic ones).
    check = EpochWeightsCheck(-(-n // sgd.batch_size), say)
    probe = TrajectoryProbe.for_run(n, sgd) if (rank == 0 and model.kind != "softmax") else None
    hooks = ([probe] if probe else []) + strategy.hooks() + [check]
    x_dev, y_dev = inp.x.to(dev), inp.y.to(dev)
    try:                                   # torch.func's first call imports torch._dynamo (seconds): not training
        importlib.import_module("torch._dynamo")
    except ImportError:                                                                 # pragma: no cover
        pass
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = train_sgd(model, x_dev, y_dev, sgd, schedule=schedule, w0=w0.to(dev), hooks=hooks, dtype=torch.float32)
    replay_seconds = time.perf_counter() - t0
    w_T = result.weights.detach().cpu()
    model_hash = weights_hash(w_T)
    check_same(model_hash, "final weights w_T")

    # Each rank computes and writes its own shard; rank 0 then ties the store together and completes the run.
    # Reverse layout on several processes: each computes its share of the coordinates for EVERY record and writes
    # those columns into every shard's chunks (allocated first, a barrier between); each then checksums its shard.
    err, n_chunks, hvps, writer = None, 0, 0, None
    shared = column_split and world > 1
    try:
        writer = ApproximatorStore.create(
            out / STORE_DIR, n, model.dim, store_dtype, chunk_rows, model_hash, schedule.digest(), inp.ids.tolist(),
            shards=bounds, shard_index=rank, overwrite=True,
            extra={"curvature": strategy.curvature_name, "order": uc.order, "layout": strategy.name,
                   "layout_reason": choice.reason, "model": model.describe(), "data_digest": inp.data_digest,
                   "world_size": world})
        if shared:
            writer.share_columns()
    except (StoreError, OSError, ValueError) as e:
        err = str(e)
    agree(err, "creating the store shards")
    assert writer is not None
    try:
        hvps = strategy.stream(x_dev, y_dev, writer, row_offset=lo)
        writer.release_columns()
    except (StoreError, OSError, ValueError) as e:
        err = str(e)
    agree(err, "computing the approximators")
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    t1 = time.perf_counter()
    try:
        writer.finalise()
        n_chunks = len(writer.chunks)
    except (StoreError, OSError, ValueError) as e:
        err = str(e)
    agree(err, "writing the store shards")
    write_seconds = time.perf_counter() - t1
    summary = {"rank": rank, "rows": [lo, hi], "device": str(dev), "backend": dist.get_backend(),
               "threads": torch.get_num_threads(), "train_seconds": train_seconds, "train_cpu_seconds": train_cpu,
               "replay_seconds": replay_seconds, "write_seconds": write_seconds, "hvp_count": hvps,
               "epoch_checks": check.checked + 1, "chunks": n_chunks}
    ranks = _gather(summary)
    err, info = None, summary
    if rank == 0:
        try:
            manifest = ApproximatorStore.assemble(out / STORE_DIR, ids=inp.ids.tolist())
            weights = w_T.numpy().astype(np.float32)
            constants = run_constants(model, sgd, uc.curvature, inp.x, inp.y, result, probe)
            spec = trained_run_spec(model, sgd, mode="all", curvature=uc.curvature, order=uc.order,
                                    train_dtype=str(torch.float32), constants=constants, weights=weights,
                                    schedule=schedule)
            run = finish_trained_run(out, weights, inp.ids, schedule, spec)
            info = {"n": n, "d": model.dim, "world_size": world, "backend": dist.get_backend(),
                    "store": str(out / STORE_DIR), "store_dtype": store_dtype, "model_hash": model_hash,
                    "run_digest": run.digest, "schedule_digest": schedule.digest(), "data_digest": inp.data_digest,
                    "config": cfg.model_dump(mode="json"), "config_digest": cfg.digest(),
                    "curvature": strategy.curvature_name, "layout": strategy.name, "layout_reason": choice.reason,
                    "column_split": shared,
                    "quantisation": manifest["quantisation"], "store_bytes": n * manifest["d"] * (
                        4 if store_dtype == "float32" else 2),
                    "wall_seconds": max(r["train_seconds"] + r["write_seconds"] for r in ranks), "ranks": ranks,
                    "device_note": device_note}
            atomic_write_text(out / "precompute.json", json.dumps(info, indent=1))
        except (StoreError, OSError, TrainedRunError, ValueError) as e:
            err = str(e)
    agree(err, "writing the trained run")
    return info


# -- launching ----------------------------------------------------------------------------------------------------
def _known_errors():
    from unlearn_audit.config import ConfigError
    from unlearn_audit.data import DataError
    from unlearn_audit.models import ModelError

    return (DistributedError, StoreError, ConfigError, DataError, ModelError, TrainedRunError)


def _exit_with_parent(parent_pid: int) -> None:
    """A worker must not outlive its launcher (killed with Ctrl-C or a signal): poll the parent, exit when gone."""
    import threading

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _worker(local_rank: int, cfg_data: dict, out: str, world: int, port: int, options: dict, queue) -> None:
    """Spawned process: join the group on 127.0.0.1:port, run :func:`precompute_rank`, report through ``queue``,
    then leave at once (:func:`_leave`)."""
    from unlearn_audit.config import config_from_dict

    _exit_with_parent(options.pop("parent_pid"))
    threads = options.pop("threads")
    torch.set_num_threads(threads)
    device = options.pop("device")
    try:
        backend, dev, note = backend_for(device, local_rank, world)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=local_rank, world_size=world,
                                timeout=timedelta(seconds=options.pop("timeout")))
        res = precompute_rank(config_from_dict(cfg_data), out, device_note=note,
                              log=_stderr_log if options.pop("verbose") else None, **options)
        queue.put((local_rank, "ok", res))
    except _known_errors() as e:
        queue.put((local_rank, "error", str(e)))
        _leave(1)
    except Exception as e:                                               # noqa: BLE001
        traceback.print_exc()
        queue.put((local_rank, "error", f"{type(e).__name__}: {e}"))
        _leave(1)
    _leave(0)


def _leave(code: int) -> None:
    """End a spawned worker without tearing down the process group or running C++ destructors: gloo's background
    threads can abort the process while being destroyed ("terminate called without an active exception", SIGABRT;
    seen once in about five test-suite runs, after the rank had finished and reported). Everything a rank does ends
    in a collective that every rank passed (:func:`precompute_rank`'s last ``agree``), its report is in the queue
    (a SimpleQueue writes synchronously), and the OS frees the sockets and the store."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_options(device: str, store_dtype: str, layout: str) -> None:
    if device not in ("auto", "cpu", "cuda"):
        raise DistributedError(f"device must be auto, cpu or cuda, got '{device}'")
    if store_dtype not in ("float32", "bfloat16"):
        raise DistributedError(f"store dtype must be float32 or bfloat16, got '{store_dtype}'")
    if layout not in ("auto", "time_outer", "chunk_outer", "reverse"):
        raise DistributedError(f"layout must be auto, time_outer, chunk_outer or reverse, got '{layout}'")


def run_precompute(cfg, out, *, nproc: int = 1, device: str = "auto", store_dtype: str = "float32",
                   chunk_rows: int | None = None, force: bool = False, threads: int | None = None,
                   layout: str = "auto", recursion_chunk: int | None = None, timeout: float = 1800.0,
                   verbose: bool = False, start_method: str = "spawn") -> dict:
    """Start ``nproc`` local workers (torch.multiprocessing, rendezvous on 127.0.0.1 at a free port) that precompute
    the sharded store in ``out``. ``threads``: torch threads per worker (default: CPU cores / nproc).
    ``start_method``: ``spawn`` (default, always safe) or ``fork`` (CPU only: the workers inherit the imported
    modules, saving seconds of start-up; refused once CUDA is initialised). Returns the contents of
    ``precompute.json``; raises :class:`DistributedError` with the first rank's one-line error."""
    import torch.multiprocessing as mp

    if int(nproc) < 1:
        raise DistributedError(f"--nproc must be >= 1, got {nproc}")
    _check_options(device, store_dtype, layout)
    if layout == "reverse" and store_dtype != "float32" and int(nproc) > 1:
        raise DistributedError("the reverse layout on several processes writes column slabs and needs a float32 "
                               "store (bfloat16 quantisation is measured on whole rows): use --store-dtype float32 "
                               "or --nproc 1")
    if start_method not in ("spawn", "fork", "forkserver"):
        raise DistributedError(f"start_method must be spawn, fork or forkserver, got '{start_method}'")
    if start_method == "fork" and (device == "cuda" or torch.cuda.is_initialized()):
        raise DistributedError("start_method 'fork' is for CPU runs only (CUDA cannot be used after fork)")
    out = Path(out)
    check_out_dir(out, force)
    threads = threads or max(1, (os.cpu_count() or 1) // int(nproc))
    lo = loopback_interface()
    if lo and "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = lo          # keep gloo's traffic on the loopback interface
    queue = mp.get_context(start_method).SimpleQueue()
    options = {"device": device, "store_dtype": store_dtype, "chunk_rows": chunk_rows, "force": force,
               "threads": int(threads), "layout": layout, "recursion_chunk": recursion_chunk, "timeout": float(timeout),
               "verbose": bool(verbose), "parent_pid": os.getpid()}
    failure = None
    reports: list = []

    def drain() -> None:
        # read reports while the workers run: a pipe holds ~64 KiB, and a worker blocked writing its report would
        # never exit, so joining before reading could wait forever
        while not queue.empty():
            reports.append(queue.get())

    try:
        workers = mp.start_processes(_worker, args=(cfg.model_dump(mode="json"), str(out), int(nproc), free_port(),
                                                    options, queue), nprocs=int(nproc), join=False,
                                     start_method=start_method)
        while not workers.join(timeout=0.5):
            drain()
    except mp.ProcessExitedException as e:
        failure = str(e)
    except mp.ProcessRaisedException as e:
        failure = str(e).strip().splitlines()[-1]
    drain()
    errors = sorted((r, msg) for r, status, msg in reports if status == "error")
    if errors:
        r, msg = errors[0]
        raise DistributedError(msg if "rank" in msg else f"rank {r}: {msg}")
    if failure:
        raise DistributedError(f"a worker failed: {failure}")
    ok = [res for r, status, res in reports if status == "ok" and r == 0]
    if not ok:
        raise DistributedError("rank 0 reported no result")
    return ok[0]


def precompute(cfg, out, *, nproc: int = 1, device: str = "auto", store_dtype: str = "float32",
               chunk_rows: int | None = None, force: bool = False, threads: int | None = None, layout: str = "auto",
               verbose: bool = False, start_method: str = "spawn") -> dict | None:
    """The ``precompute`` command's library side. Under torchrun (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR/PORT`` in
    the environment) this process is one rank and joins the group from the environment (``nproc`` is ignored);
    otherwise :func:`run_precompute` starts ``nproc`` local workers. Returns ``precompute.json``'s contents on rank 0
    (the launcher), None on the other ranks."""
    if "RANK" not in os.environ:
        return run_precompute(cfg, out, nproc=nproc, device=device, store_dtype=store_dtype, chunk_rows=chunk_rows,
                              force=force, threads=threads, layout=layout, verbose=verbose, start_method=start_method)
    _check_options(device, store_dtype, layout)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // local_world))
    backend, dev, note = backend_for(device, local_rank, local_world)
    if note and rank == 0:
        _stderr_log(f"note: {note}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, init_method="env://")
    try:
        info = precompute_rank(cfg, out, store_dtype=store_dtype, chunk_rows=chunk_rows, force=force, layout=layout,
                               device_note=note, log=_stderr_log if verbose else None)
    finally:
        dist.destroy_process_group()
    return info if rank == 0 else None
