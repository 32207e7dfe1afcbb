"""Sharded HF-OCU precompute on ``torch.distributed`` (issue 9).

Every rank replays the same training run (same data, seed and schedule, so the weights are identical by
construction; a SHA-256 of the weights is all-gathered at every epoch boundary and at the end, and any mismatch
aborts every rank with one clear error) and keeps the approximators of one contiguous shard of the training records
only (``ApproximatorRecursion(tracked_positions=shard)``). Each rank then writes its own shard of the file-backed
store (:mod:`unlearn_audit.hfocu.store`); rank 0 ties the shards together in ``manifest.json``. A deletion later reads
only the chunks, hence the shards, holding the deleted records. Work per rank: the (cheap) training replay plus
1/world_size of the O(E·n²·d) propagation.

Backends: ``gloo`` on CPU, ``nccl`` when every local rank gets its own GPU (``--device auto|cuda``); without a
usable GPU it falls back to the CPU and gloo (and says so in the summary).

Launch on one machine (workers spawned with ``torch.multiprocessing``, rendezvous on 127.0.0.1 at a free port chosen
at run time)::

    unlearn-audit precompute --config audit.toml --out runs/pre --nproc 2
    python -m unlearn_audit.deletion.precompute --config audit.toml --out runs/pre --nproc 2

or with PyTorch's own launcher (one process per rank; add --nnodes/--rdzv-endpoint for several machines, whose
ranks must see the same --out folder)::

    torchrun --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29511 \\
        -m unlearn_audit.deletion.precompute --config audit.toml --out runs/pre

The config is the audit's (``data``, ``model``, ``training``, ``unlearning.curvature/order`` and ``seed`` are used).
Output folder: ``store/`` (the sharded approximator store), ``weights.npy`` (w_T, float32), ``schedule.npz`` and
``precompute.json`` (config, timings per rank, device).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from unlearn_audit.hfocu.store import ApproximatorStore, StoreError, remove_store, split_rows

OUT_FILES = ("weights.npy", "schedule.npz", "precompute.json")


class DistributedError(RuntimeError):
    """The ranks cannot go on together (diverged weights, different inputs, a failed rank); one-line message."""


# -- inputs ---------------------------------------------------------------------------------------------------------
@dataclass
class TrainingData:
    x: torch.Tensor
    y: torch.Tensor
    ids: np.ndarray
    n_classes: int
    feature_shape: tuple[int, ...]
    digest: str


def load_training_data(cfg) -> TrainingData:
    """The training split exactly as :func:`unlearn_audit.audit.pipeline.run_audit` builds it."""
    from unlearn_audit.data import load_dataset, prepare, split_dataset

    dc = cfg.data
    ds = load_dataset(dc.dataset, data_dir=dc.data_dir, path=dc.path, label_column=dc.label_column)
    splits = prepare(split_dataset(ds, train_fraction=dc.train_fraction, test_fraction=dc.test_fraction,
                                   population_fraction=dc.population_fraction, seed=cfg.seed,
                                   max_train=dc.max_train), standardize=dc.standardize, unit_norm=dc.unit_norm)
    train = splits.train
    return TrainingData(torch.as_tensor(np.asarray(train.x), dtype=torch.float32),
                        torch.as_tensor(np.asarray(train.y), dtype=torch.int64), np.asarray(train.ids).astype(str),
                        ds.n_classes, tuple(train.feature_shape), train.digest())


def sgd_config(cfg):
    from unlearn_audit.training import SGDConfig

    tc = cfg.training
    return SGDConfig(epochs=tc.epochs, batch_size=tc.batch_size, lr=tc.lr, decay=tc.decay, lam=tc.lam, clip=tc.clip,
                     clip_norm=tc.clip_norm, weight_norm_bound=tc.weight_norm_bound, seed=cfg.seed)


def resolve_device(device: str, local_rank: int, local_world_size: int) -> tuple[str, torch.device, str | None]:
    """(backend, device, note): nccl + cuda:local_rank when each local rank has a GPU, else gloo + cpu."""
    if device not in ("auto", "cpu", "cuda"):
        raise DistributedError(f"device must be auto, cpu or cuda, got '{device}'")
    if device != "cpu" and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if count >= local_world_size:
            return "nccl", torch.device("cuda", local_rank), None
        note = f"{local_world_size} processes but {count} GPU(s) on this node (nccl needs one per process): CPU used"
        return "gloo", torch.device("cpu"), note
    note = "no CUDA device available: fell back to CPU (gloo)" if device == "cuda" else None
    return "gloo", torch.device("cpu"), note


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
    """An output folder must be empty (or absent) unless ``force``."""
    if out.exists() and not out.is_dir():
        raise DistributedError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DistributedError(f"--out {out} is not empty (pass --force to replace a previous precompute)")


def _clear_out_dir(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if (out / "store").is_dir():
        remove_store(out / "store")
    for name in OUT_FILES:
        (out / name).unlink(missing_ok=True)


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
def resolve_layout(layout: str, model, sgd, curvature: str) -> str:
    """The unlearner's rule (:func:`unlearn_audit.hfocu.unlearner.resolve_layout`), with this module's error type."""
    from unlearn_audit.hfocu.unlearner import resolve_layout as _resolve

    try:
        return _resolve(layout, model, sgd, curvature)
    except ValueError as err:
        raise DistributedError(str(err)) from None


def precompute_rank(cfg, out, *, store_dtype: str = "float32", chunk_rows: int | None = None, force: bool = False,
                    layout: str = "auto", recursion_chunk: int | None = None, device_note: str | None = None,
                    log=None) -> dict:
    """The work of one rank, inside an initialised process group (gloo: CPU; nccl: the current CUDA device).

    ``layout``: ``time_outer`` advances this rank's approximators during the training replay
    (:class:`~unlearn_audit.hfocu.recursion.ApproximatorRecursion` with ``tracked_positions`` = the shard);
    ``chunk_outer`` (softmax) records the small trajectory during the replay, then runs the shard's records through
    it chunk by chunk (:func:`~unlearn_audit.hfocu.chunked.softmax_chunk_outer`); ``auto`` picks as the unlearner
    does. ``recursion_chunk``: vectors per batched HVP (default 256 time-outer, 64 chunk-outer).
    Returns rank 0's ``precompute.json`` contents on rank 0 and the rank's own summary elsewhere."""
    from unlearn_audit.hfocu.chunked import SoftmaxTrajectory, softmax_chunk_outer
    from unlearn_audit.hfocu.curvature import make_curvature
    from unlearn_audit.hfocu.recursion import ApproximatorRecursion
    from unlearn_audit.models import build_model
    from unlearn_audit.models.functional import weights_hash
    from unlearn_audit.training import Schedule, train_sgd

    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(out)
    dev = torch.device("cpu")
    if dist.get_backend() == "nccl":
        dev = torch.device("cuda", torch.cuda.current_device())
    say = (lambda msg: log(f"[rank 0] {msg}")) if (log and rank == 0) else None

    # Inputs: every rank loads the data itself; they must agree before any work is done.
    err = None
    try:
        data = load_training_data(cfg)
        sgd = sgd_config(cfg)
        n = len(data.x)
        if world > n:
            raise DistributedError(f"{world} processes for {n} training records: use at most {n}")
        model = build_model(cfg.model.kind, data.feature_shape, data.n_classes, seed=cfg.seed,
                            hidden=cfg.model.hidden)
        schedule = Schedule.make(n, sgd.epochs, sgd.batch_size, sgd.lr, sgd.decay, sgd.seed)
        w0 = model.initial_weights(torch.float32)
        layout = resolve_layout(layout, model, sgd, cfg.unlearning.curvature)
    except Exception as e:                                               # noqa: BLE001 (reported on every rank)
        err = f"{type(e).__name__}: {e}"
    agree(err, "loading the data and model")
    check_same(data.digest, "training data digests")
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

    # Training replay with this rank's shard of approximators.
    bounds = split_rows(n, world)
    lo, hi = bounds[rank]
    shard = np.arange(lo, hi, dtype=np.int64)
    steps_per_epoch = -(-n // sgd.batch_size)
    check = EpochWeightsCheck(steps_per_epoch, say)
    if layout == "time_outer":
        rec = ApproximatorRecursion(model, sgd, n, shard, curvature=cfg.unlearning.curvature,
                                    order=cfg.unlearning.order, chunk_size=recursion_chunk or 256, device=dev)
        hooks, curvature_name = [rec, check], rec.curvature_name
    else:
        traj = SoftmaxTrajectory()
        hooks = [traj, check]
        curvature_name = make_curvature(model, sgd.lam, cfg.unlearning.curvature).name
    x_dev, y_dev = data.x.to(dev), data.y.to(dev)
    try:                                   # torch.func's first call imports torch._dynamo (seconds): not training
        importlib.import_module("torch._dynamo")
    except ImportError:                                                                 # pragma: no cover
        pass
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = train_sgd(model, x_dev, y_dev, sgd, schedule=schedule, w0=w0.to(dev), hooks=hooks,
                       dtype=torch.float32)
    replay_seconds = time.perf_counter() - t0
    if layout == "time_outer":
        A, hvps = rec.approximators, int(rec.hvp_count)
    else:
        A, hvps = softmax_chunk_outer(x_dev, y_dev, model.n_classes, sgd.lam, traj, shard,
                                      chunk_size=recursion_chunk or 64, dtype=torch.float32,
                                      order=cfg.unlearning.order)
        del traj
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    w_T = result.weights.detach().cpu()
    model_hash = weights_hash(w_T)
    check_same(model_hash, "final weights w_T")

    # Each rank writes its own shard; rank 0 then writes the manifest.
    t1 = time.perf_counter()
    err, n_chunks = None, 0
    try:
        writer = ApproximatorStore.create(
            out / "store", n, model.dim, store_dtype, chunk_rows, model_hash, schedule.digest(), data.ids.tolist(),
            shards=bounds, shard_index=rank, overwrite=True,
            extra={"curvature": curvature_name, "order": cfg.unlearning.order, "layout": layout,
                   "model": model.describe(), "data_digest": data.digest, "world_size": world})
        for start in range(0, hi - lo, writer.chunk_rows):
            writer.write_rows(lo + start, A[start:start + writer.chunk_rows])
        writer.finalise()
        n_chunks = len(writer.chunks)
    except (StoreError, OSError) as e:
        err = str(e)
    agree(err, "writing the store shards")
    write_seconds = time.perf_counter() - t1
    summary = {"rank": rank, "rows": [lo, hi], "device": str(dev), "backend": dist.get_backend(),
               "threads": torch.get_num_threads(), "train_seconds": train_seconds, "train_cpu_seconds": train_cpu,
               "replay_seconds": replay_seconds, "write_seconds": write_seconds, "hvp_count": hvps,
               "epoch_checks": check.checked + 1, "chunks": n_chunks}
    ranks = _gather(summary)
    err, info = None, None
    if rank == 0:
        try:
            manifest = ApproximatorStore.assemble(out / "store", ids=data.ids.tolist())
            np.save(out / "weights.npy", w_T.numpy().astype(np.float32), allow_pickle=False)
            np.savez(out / "schedule.npz", **schedule.to_npz_dict())
            info = {"n": n, "d": model.dim, "world_size": world, "backend": dist.get_backend(),
                    "store": str(out / "store"), "store_dtype": store_dtype, "model_hash": model_hash,
                    "schedule_digest": schedule.digest(), "data_digest": data.digest, "config": cfg.model_dump(
                        mode="json"), "config_digest": cfg.digest(), "curvature": curvature_name, "layout": layout,
                    "quantisation": manifest["quantisation"], "store_bytes": n * manifest["d"] * (
                        4 if store_dtype == "float32" else 2),
                    "wall_seconds": max(r["train_seconds"] + r["write_seconds"] for r in ranks), "ranks": ranks,
                    "device_note": device_note}
            (out / "precompute.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
        except (StoreError, OSError) as e:
            err = str(e)
    agree(err, "writing the manifest")
    return info if rank == 0 else summary


# -- launching ----------------------------------------------------------------------------------------------------
def _known_errors():
    from unlearn_audit.config import ConfigError
    from unlearn_audit.data import DataError
    from unlearn_audit.models import ModelError

    return (DistributedError, StoreError, ConfigError, DataError, ModelError)


def _exit_with_parent(parent_pid: int) -> None:
    """A worker must not outlive its launcher (killed with Ctrl-C or a signal): poll the parent, exit when gone."""
    import threading

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _worker(local_rank: int, cfg_data: dict, out: str, world: int, port: int, options: dict, queue) -> None:
    """Spawned process: join the group on 127.0.0.1:port, run :func:`precompute_rank`, report through ``queue``."""
    from unlearn_audit.config import config_from_dict

    _exit_with_parent(options.pop("parent_pid"))
    threads = options.pop("threads")
    torch.set_num_threads(threads)
    device = options.pop("device")
    try:
        backend, dev, note = resolve_device(device, local_rank, world)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=local_rank, world_size=world,
                                timeout=timedelta(seconds=options.pop("timeout")))
        try:
            res = precompute_rank(config_from_dict(cfg_data), out, device_note=note,
                                  log=_stderr_log if options.pop("verbose") else None, **options)
        finally:
            dist.destroy_process_group()
        queue.put((local_rank, "ok", res))
    except _known_errors() as e:
        queue.put((local_rank, "error", str(e)))
        sys.exit(1)
    except Exception as e:                                               # noqa: BLE001
        traceback.print_exc()
        queue.put((local_rank, "error", f"{type(e).__name__}: {e}"))
        sys.exit(1)


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
    if device not in ("auto", "cpu", "cuda"):
        raise DistributedError(f"device must be auto, cpu or cuda, got '{device}'")
    if store_dtype not in ("float32", "bfloat16"):
        raise DistributedError(f"store dtype must be float32 or bfloat16, got '{store_dtype}'")
    if layout not in ("auto", "time_outer", "chunk_outer"):
        raise DistributedError(f"layout must be auto, time_outer or chunk_outer, got '{layout}'")
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
    try:
        mp.start_processes(_worker, args=(cfg.model_dump(mode="json"), str(out), int(nproc), free_port(), options,
                                          queue), nprocs=int(nproc), join=True, start_method=start_method)
    except mp.ProcessExitedException as e:
        failure = str(e)
    except mp.ProcessRaisedException as e:
        failure = str(e).strip().splitlines()[-1]
    reports = []
    while not queue.empty():
        reports.append(queue.get())
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m unlearn_audit.deletion.precompute``: one rank under torchrun (RANK, WORLD_SIZE,
    MASTER_ADDR/PORT in the environment), or the local launcher with ``--nproc`` otherwise."""
    from unlearn_audit.config import load_config

    ap = argparse.ArgumentParser(prog="python -m unlearn_audit.deletion.precompute",
                                 description="Sharded HF-OCU approximator precompute (see the module docstring).")
    ap.add_argument("--config", required=True, help="audit TOML config (data, model, training sections)")
    ap.add_argument("--out", required=True, help="output folder (empty unless --force)")
    ap.add_argument("--nproc", type=int, default=1, help="local worker processes (ignored under torchrun)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--store-dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--chunk-rows", type=int, default=None)
    ap.add_argument("--layout", choices=["auto", "time_outer", "chunk_outer"], default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if "RANK" not in os.environ:
            info = run_precompute(cfg, args.out, nproc=args.nproc, device=args.device, store_dtype=args.store_dtype,
                                  chunk_rows=args.chunk_rows, force=args.force, threads=args.threads,
                                  layout=args.layout, verbose=args.verbose)
            print(f"precompute: n={info['n']} d={info['d']} on {info['world_size']} process(es) ({info['backend']}) "
                  f"in {info['wall_seconds']:.2f} s; store {info['store']}")
            return 0
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local_world))
        backend, dev, note = resolve_device(args.device, local_rank, local_world)
        if note and rank == 0:
            _stderr_log(f"note: {note}")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, init_method="env://")
        try:
            info = precompute_rank(cfg, args.out, store_dtype=args.store_dtype, chunk_rows=args.chunk_rows,
                                   force=args.force, layout=args.layout, device_note=note,
                                   log=_stderr_log if args.verbose else None)
        finally:
            dist.destroy_process_group()
        if rank == 0:
            print(f"precompute: n={info['n']} d={info['d']} on {world} process(es) ({backend}) in "
                  f"{info['wall_seconds']:.2f} s; store {info['store']}")
        return 0
    except _known_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
