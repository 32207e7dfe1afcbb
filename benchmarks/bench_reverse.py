"""Reverse-mode precompute against the forward layouts, side by side in one run (DESIGN §9 "Reverse mode", issue 15).

Cases (full Fashion-MNIST from the Debian package, 60,000 training records; the audit's data pipeline:
standardised, rows on the unit ball; 15 epochs, |B| = 32, η0 = 0.05, γ = 0.995, λ = 0.5, seed 0):

* ``lr``: softmax regression on the 784 pixels, d = 7,850.
* ``pca50``: the same records reduced to 50 features by PCA (fitted on the training records), d = 510.

What is measured, and how it is extrapolated (said again in the results file): training records the trajectory of
``--epochs-measured`` epochs (default 1). On it,
  - forward, chunk-outer (the engine's, zero vectors skipped) and time-outer, each on a random subset of records
    (the layouts treat records independently, so the cost is per active vector-step); its seconds per HVP times the
    exact HVP count of all n records over E = 15 epochs (Σ_u (T − s_u), s_u the step of u's first injection);
  - reverse on a few blocks of the propagator's rows (coordinates) through the same steps; its seconds per row-step
    times d·T (the backward walk does d row products per step whatever the epoch).
The ratio forward/reverse over 15 epochs is the headline; the 1-epoch ratio is reported too (the first epoch
favours forward: half the vectors are still zero on average). Correctness on the same run: the measured reverse
coordinates against the measured forward rows (relative error over their intersection).

``e2e`` runs the real thing: ``unlearn-audit precompute --layout reverse`` on the lr case, 15 epochs, all 60,000
records, into a store on disk, then verifies every chunk's checksum and checks a few records against the
chunk-outer forward recursion (run on those records only).

    python benchmarks/bench_reverse.py --case lr --case pca50          # ~5 minutes on 2 cores
    python benchmarks/bench_reverse.py --case e2e --nproc 2            # the full run (tens of minutes)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unlearn_audit.config import config_from_dict
from unlearn_audit.hfocu.chunked import SoftmaxTrajectory, softmax_chunk_outer
from unlearn_audit.hfocu.recursion import ApproximatorRecursion
from unlearn_audit.hfocu.reverse import softmax_reverse
from unlearn_audit.inputs import build_inputs
from unlearn_audit.models import build_model
from unlearn_audit.training import Schedule, SGDConfig, train_sgd

RESULTS = Path(__file__).parent / "results"
TRAINING = {"epochs": 15, "batch_size": 32, "lr": 0.05, "decay": 0.995, "lam": 0.5}
CONFIG = {"seed": 0, "data": {"dataset": "fashion_mnist", "train_fraction": 0.9, "test_fraction": 0.05,
                              "population_fraction": 0.05, "max_train": 60000},
          "training": TRAINING, "unlearning": {"layout": "reverse"}}


def load(case: str, max_train: int | None = None):
    cfg = CONFIG if max_train is None else {**CONFIG, "data": {**CONFIG["data"], "max_train": max_train}}
    inp = build_inputs(config_from_dict(cfg))
    x, y = inp.x, inp.y
    if case == "pca50":
        from sklearn.decomposition import PCA

        z = PCA(50, random_state=0).fit_transform(x.numpy().astype(np.float64))
        z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1.0)          # unit ball, as the pipeline does
        x = torch.as_tensor(z, dtype=torch.float32)
    return x, y


def forward_hvp_count(first_step: np.ndarray, steps_per_epoch: int, epochs: int) -> int:
    """Σ_u (T − s_u): the HVPs of the forward recursion over ``epochs`` epochs with zero vectors skipped."""
    return int((epochs * steps_per_epoch - first_step).sum())


def _clock(device: torch.device) -> tuple[float, float]:
    """(wall, this process's CPU) seconds, after the GPU's queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float], device: torch.device) -> tuple[float, float]:
    t1 = _clock(device)
    return t1[0] - t0[0], t1[1] - t0[1]


def side_by_side(case: str, epochs_measured: int, fwd_records: int, rev_blocks: int, block_rows: int,
                 seed: int = 0, device: str = "cpu", chunk_sizes: tuple[int, ...] = (64, 256),
                 max_train: int | None = None) -> dict:
    """The measured side-by-side run of the module docstring (``max_train``: fewer records, for smoke runs).

    Timing basis: on a CPU with one torch thread, this process's CPU time (robust to other jobs sharing the cores:
    the machine's 2 cores are shared by several workers); otherwise wall time. Both are recorded."""
    dev = torch.device(device)
    basis = "cpu" if dev.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    pick = (lambda w_c: w_c[1]) if basis == "cpu" else (lambda w_c: w_c[0])
    x, y = load(case, max_train)
    x, y = x.to(dev), y.to(dev)
    n, D = x.shape
    C = 10
    d = C * (D + 1)
    model = build_model("softmax", (D,), C, seed=0)
    sgd = SGDConfig(**{**TRAINING, "epochs": epochs_measured}, seed=0)
    traj = SoftmaxTrajectory()
    t0 = _clock(dev)
    train_sgd(model, x, y, sgd, hooks=[traj])
    t_train_traj = pick(_since(t0, dev))
    T1 = -(-n // sgd.batch_size)
    T = traj.n_steps
    first = np.full(n, T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        first[traj.positions[t]] = t
    rng = np.random.default_rng(seed)
    subset = np.sort(rng.choice(n, size=min(fwd_records, n), replace=False))
    out: dict = {"case": case, "device": str(dev), "timing_basis": basis, "n": n, "d": d, "steps_per_epoch": T1,
                 "epochs_measured": epochs_measured,
                 "training_with_trajectory_seconds": t_train_traj, "trajectory_bytes": traj.nbytes()}

    # forward, chunk-outer (chunk 64, the engine's default; and larger chunks)
    fwd = {}
    for cs in chunk_sizes:
        t0 = _clock(dev)
        A, hvps = softmax_chunk_outer(x, y, C, sgd.lam, traj, subset, chunk_size=cs)
        wc = _since(t0, dev)
        dt = pick(wc)
        fwd[f"chunk_outer_{cs}"] = {"seconds": dt, "wall_seconds": wc[0], "hvps": hvps, "seconds_per_hvp": dt / hvps}
        ref = A
    # forward, time-outer (a training hook: its time is training with the hook minus training alone)
    model2 = build_model("softmax", (D,), C, seed=0)
    t0 = _clock(dev)
    train_sgd(model2, x, y, sgd)
    t_plain = pick(_since(t0, dev))
    rec = ApproximatorRecursion(model2, sgd, n, subset, chunk_size=max(256, len(subset)), device=dev)
    t0 = _clock(dev)
    train_sgd(model2, x, y, sgd, hooks=[rec])
    dt = pick(_since(t0, dev)) - t_plain
    fwd["time_outer"] = {"seconds": dt, "hvps": int(rec.hvp_count), "seconds_per_hvp": dt / max(1, rec.hvp_count)}
    to_err = float((rec.approximators.double() - ref.double()).norm() / ref.double().norm())
    best = min(fwd, key=lambda k: fwd[k]["seconds_per_hvp"])
    out["forward_records_measured"] = len(subset)
    out["forward"] = fwd
    out["forward_best"] = best
    out["time_outer_vs_chunk_outer_rel_error"] = to_err

    # reverse on a few blocks of coordinates (spread over the weights and the biases)
    k_total = min(d, rev_blocks * block_rows)
    c0 = int(rng.integers(0, d - k_total + 1))
    slabs = []
    t0 = _clock(dev)
    _, row_steps = softmax_reverse(x, y, C, sgd.lam, traj, np.arange(n), block_rows=block_rows,
                                   columns=(c0, c0 + k_total),
                                   column_sink=lambda start, slab: slabs.append((start, slab.clone())))
    wc = _since(t0, dev)
    t_rev = pick(wc)
    got = torch.cat([s for _, s in sorted(slabs, key=lambda p: p[0])], dim=1)[torch.as_tensor(subset, device=dev)]
    want = ref[:, c0:c0 + k_total]
    rel = float((got.double() - want.double()).norm() / want.double().norm())
    out["reverse"] = {"coordinates_measured": k_total, "first_coordinate": c0, "block_rows": block_rows,
                      "seconds": t_rev, "wall_seconds": wc[0], "row_steps": row_steps,
                      "seconds_per_row_step": t_rev / row_steps}
    out["reverse_vs_forward_rel_error"] = rel

    # extrapolations (stated)
    ex = {}
    for E in (epochs_measured, 15):
        h = forward_hvp_count(first, T1, E)
        f = fwd[best]["seconds_per_hvp"] * h
        r = out["reverse"]["seconds_per_row_step"] * d * E * T1
        ex[f"{E}_epochs"] = {"forward_hvps": h, "forward_seconds": f, "reverse_row_steps": d * E * T1,
                             "reverse_seconds": r, "ratio_forward_over_reverse": f / r,
                             "flop_ratio": h / (d * E * T1)}
    out["extrapolated_all_records"] = ex
    return out


def end_to_end(nproc: int, threads: int, workdir: Path, check_records: int = 64, max_train: int = 60000,
               epochs: int = 15, device: str = "cpu") -> dict:
    """The precompute CLI on the lr case, 15 epochs, reverse layout; then the store is verified (``max_train`` and
    ``epochs`` make a small smoke run of the same path)."""
    from unlearn_audit.hfocu.store import ApproximatorStore

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = config_from_dict({**CONFIG, "data": {**CONFIG["data"], "max_train": max_train},
                            "training": {**TRAINING, "epochs": epochs}})
    (workdir / "fmnist_lr.toml").write_text(cfg.to_toml(), encoding="utf-8")
    out = workdir / "pre"
    cmd = [sys.executable, "-m", "unlearn_audit.cli", "precompute", "--config", str(workdir / "fmnist_lr.toml"),
           "--out", str(out), "--nproc", str(nproc), "--threads", str(threads), "--layout", "reverse",
           "--device", device] + (["--start-method", "fork"] if device == "cpu" else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"precompute failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    info = json.loads((out / "precompute.json").read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    store = ApproximatorStore.open(out / "store", expected_model_hash=info["model_hash"],
                                   expected_schedule_digest=info["schedule_digest"])
    store.verify_all()
    t_verify = time.perf_counter() - t0
    # a few records against the forward recursion (chunk-outer on those records only, 15 epochs)
    inp = build_inputs(cfg)
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(store.n, size=check_records, replace=False))
    traj = SoftmaxTrajectory()
    sched = Schedule.make(len(inp.x), inp.sgd.epochs, inp.sgd.batch_size, inp.sgd.lr, inp.sgd.decay, inp.sgd.seed)
    train_sgd(inp.model, inp.x, inp.y, inp.sgd, schedule=sched, hooks=[traj])
    ref, _ = softmax_chunk_outer(inp.x, inp.y, 10, inp.sgd.lam, traj, store.positions[rows], chunk_size=64)
    got = store.rows(rows).double()
    ref = ref.double()
    per_row = ((got - ref).norm(dim=1) / ref.norm(dim=1)).numpy()
    return {"command": " ".join(cmd[1:]), "wall_seconds": wall, "precompute": {
                k: info[k] for k in ("n", "d", "world_size", "layout", "layout_reason", "column_split",
                                     "wall_seconds", "store_bytes", "ranks")},
            "store_verified_seconds": t_verify, "chunks_verified": store.n_chunks,
            "bytes_verified": store.bytes_verified, "records_checked_against_forward": check_records,
            "max_rel_error_vs_forward": float(per_row.max()), "median_rel_error_vs_forward": float(np.median(per_row))}


def markdown(results: dict) -> str:
    """The results file's summary (benchmarks/results/reverse.md)."""
    st = results["settings"]
    lines = ["# Reverse-mode precompute vs the forward layouts (issue 15)", "",
             f"Machine: {results['machine']}, torch {results['torch']}, {results['device']}. Settings: {st['data']}; "
             f"{st['epochs']} epochs, |B| = {st['batch_size']}, η0 = {st['lr']}, γ = {st['decay']}, λ = {st['lam']}.",
             "", "Side by side in one run (`python benchmarks/bench_reverse.py --case lr --case pca50`). One epoch of "
             "training recorded; forward layouts timed on a random subset of records (cost per HVP), reverse on a few "
             "blocks of coordinates (cost per row-step); both EXTRAPOLATED to all n records and 15 epochs from exact "
             "HVP / row-step counts (forward: Σ_u (T − s_u), zero vectors skipped; reverse: d·T). Timing basis: the "
             "process's CPU time with one torch thread (the 2 cores were shared with other workers' jobs, which makes "
             "wall time depend on their load; the `wall_seconds` are in reverse.json).", "",
             "| case | n | d | best forward | forward µs/HVP | reverse µs/row-step | forward 15 ep (extrap.) | "
             "reverse 15 ep (extrap.) | ratio 15 ep | FLOP ratio | ratio 1 ep | rel. error rev vs fwd |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in ("lr", "pca50"):
        r = results.get(case)
        if not r:
            continue
        e15 = r["extrapolated_all_records"]["15_epochs"]
        e1 = r["extrapolated_all_records"][f"{r['epochs_measured']}_epochs"]
        best = r["forward"][r["forward_best"]]
        lines.append(f"| {case} | {r['n']} | {r['d']} | {r['forward_best']} | {1e6 * best['seconds_per_hvp']:.2f} | "
                     f"{1e6 * r['reverse']['seconds_per_row_step']:.2f} | {e15['forward_seconds'] / 60:.1f} min | "
                     f"{e15['reverse_seconds'] / 60:.1f} min | **{e15['ratio_forward_over_reverse']:.1f}×** | "
                     f"{e15['flop_ratio']:.1f} | {e1['ratio_forward_over_reverse']:.1f}× | "
                     f"{r['reverse_vs_forward_rel_error']:.1e} |")
    for case in ("lr", "pca50"):
        r = results.get(case)
        if r:
            fw = ", ".join(f"{k} {1e6 * v['seconds_per_hvp']:.2f} µs/HVP" for k, v in r["forward"].items())
            lines.append(f"\n{case}: forward layouts measured on {r['forward_records_measured']} records ({fw}); "
                         f"reverse on {r['reverse']['coordinates_measured']} coordinates in blocks of "
                         f"{r['reverse']['block_rows']} rows; {r['threads']} thread(s).")
    status = results.get("e2e_lr_15_epochs_status")
    if status and not results.get("e2e_lr_15_epochs"):
        lines += ["", "## End to end: full Fashion-MNIST LR, 15 epochs, `all` mode (NOT FINISHED at landing)", "",
                  status["text"]]
    e = results.get("e2e_lr_15_epochs")
    if e:
        p = e["precompute"]
        cpu = max(rk["train_cpu_seconds"] for rk in p["ranks"])
        lines += ["", "## End to end: full Fashion-MNIST LR, 15 epochs, `all` mode", "",
                  f"`{e['command']}` started {e['started_utc']}: **{e['wall_seconds'] / 60:.1f} min wall** "
                  f"({p['world_size']} processes × {e['threads_per_process']} thread, layout {p['layout']}, "
                  f"column split {p['column_split']}); the busiest rank used {cpu / 60:.1f} min of CPU (training "
                  f"replay + backward walk; the machine's 2 cores were shared with other workers' jobs during the run, "
                  f"so wall time > CPU time). Store: {p['store_bytes'] / 2 ** 30:.2f} GiB, {e['chunks_verified']} "
                  f"chunks verified (SHA-256) in {e['store_verified_seconds']:.1f} s; "
                  f"{e['records_checked_against_forward']} random records against the chunk-outer forward recursion: "
                  f"max relative error "
                  f"{e['max_rel_error_vs_forward']:.1e} (median {e['median_rel_error_vs_forward']:.1e}).",
                  "", f"auto's reason on this run: {p['layout_reason']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", choices=["lr", "pca50", "e2e"], required=True)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--epochs-measured", type=int, default=1)
    ap.add_argument("--fwd-records", type=int, default=1280, help="records the forward layouts are timed on")
    ap.add_argument("--rev-blocks", type=int, default=2, help="blocks of coordinates the reverse walk is timed on")
    ap.add_argument("--block-rows", type=int, default=256)
    ap.add_argument("--nproc", type=int, default=2, help="e2e: precompute processes (each --threads threads)")
    ap.add_argument("--workdir", default=None, help="e2e: folder for the run (default: a new temporary folder)")
    ap.add_argument("--e2e-max-train", type=int, default=60000, help="e2e: training records (smoke runs: fewer)")
    ap.add_argument("--e2e-epochs", type=int, default=15, help="e2e: epochs (smoke runs: fewer)")
    ap.add_argument("--out", default=str(RESULTS / "reverse.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update({"machine": platform.platform(), "device": "cpu", "torch": torch.__version__,
                    "settings": {**TRAINING, "data": "Fashion-MNIST (Debian dataset-fashion-mnist), 60,000 "
                                 "training records, standardised, unit ball"}})
    for case in args.case:
        if case == "e2e":
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_reverse_"))
            r = end_to_end(args.nproc, args.threads, work, max_train=args.e2e_max_train, epochs=args.e2e_epochs)
            r["threads_per_process"] = args.threads
            r["started_utc"], r["epochs"], r["max_train"] = started, args.e2e_epochs, args.e2e_max_train
            results["e2e_lr_15_epochs" if (args.e2e_epochs, args.e2e_max_train) == (15, 60000) else "e2e_smoke"] = r
            print(f"e2e: {r['wall_seconds'] / 60:.1f} min wall ({r['precompute']['world_size']} processes), store "
                  f"verified ({r['chunks_verified']} chunks) in {r['store_verified_seconds']:.1f} s; max rel. error vs "
                  f"forward on {r['records_checked_against_forward']} records {r['max_rel_error_vs_forward']:.2e}")
        else:
            r = side_by_side(case, args.epochs_measured, args.fwd_records, args.rev_blocks, args.block_rows)
            r["threads"] = args.threads
            results[case] = r
            e15 = r["extrapolated_all_records"]["15_epochs"]
            e1 = r["extrapolated_all_records"][f"{args.epochs_measured}_epochs"]
            print(f"{case} (n={r['n']}, d={r['d']}, {args.threads} threads): best forward {r['forward_best']} "
                  f"{1e6 * r['forward'][r['forward_best']]['seconds_per_hvp']:.2f} us/HVP, reverse "
                  f"{1e6 * r['reverse']['seconds_per_row_step']:.2f} us/row-step; 15 epochs (extrapolated): "
                  f"forward {e15['forward_seconds'] / 60:.1f} min, reverse {e15['reverse_seconds'] / 60:.1f} min, "
                  f"ratio {e15['ratio_forward_over_reverse']:.1f}x (FLOP ratio {e15['flop_ratio']:.1f}); "
                  f"{args.epochs_measured} epoch(s): ratio {e1['ratio_forward_over_reverse']:.1f}x; "
                  f"rel. error reverse vs forward {r['reverse_vs_forward_rel_error']:.1e}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
        path.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
