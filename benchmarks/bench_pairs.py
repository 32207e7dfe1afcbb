"""Paired models (DESIGN §4b), side by side in one run: the closed form for softmax regression against the vmapped
jvp of the autodiff update map, on the same N models, schedules and forget set. Timing basis: CPU time of this
process (``time.process_time``) on ``--threads`` threads, per training step.

    python benchmarks/bench_pairs.py                       # mnist5000, N = 128, d = 7,850, 12 steps
    python benchmarks/bench_pairs.py --dataset digits --models 128 --steps 40

Writes benchmarks/results/pairs.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from unlearn_audit.audit import pairs
from unlearn_audit.data import load_dataset
from unlearn_audit.models import build_model
from unlearn_audit.training import Schedule, SGDConfig
from unlearn_audit.training.sgd import starting_point

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist5000")
    ap.add_argument("--models", type=int, default=128, help="N paired models (the audit's default)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--forget", type=int, default=30, help="records in the forget set")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = load_dataset(a.dataset)
    n = a.steps * a.batch_size                                         # one epoch of exactly --steps steps
    x = torch.as_tensor(ds.x[:n]).float().reshape(n, -1)
    y = torch.as_tensor(ds.y[:n])
    d_in = x.shape[1]
    model = build_model("softmax", (d_in,), ds.n_classes, seed=0)
    sgd = SGDConfig(epochs=1, batch_size=a.batch_size, lr=0.5, decay=0.995, lam=0.15, seed=0)
    seeds = np.arange(a.models)
    schedules = [Schedule.make(n, 1, a.batch_size, sgd.lr, sgd.decay, int(s)) for s in seeds]
    w0 = torch.stack([starting_point(model, sgd, build_model("softmax", (d_in,), ds.n_classes, seed=int(s))
                                     .initial_weights(), torch.float32) for s in seeds])
    forget = torch.zeros(n)
    forget[: a.forget] = 1.0
    seconds, outputs = {}, {}
    for name, fn in (("closed_form", pairs._softmax_closed_form), ("vmapped_jvp", pairs._vmapped_jvp)):
        t0 = time.process_time()
        outputs[name] = fn(model, x, y, sgd, schedules, w0, forget, "sum", True, None)
        seconds[name] = (time.process_time() - t0) / a.steps
    diff = {k: float((p - q).abs().max() / q.abs().max())
            for k, p, q in zip(("original", "approximator", "retrain"), outputs["closed_form"], outputs["vmapped_jvp"])}
    out = {"dataset": a.dataset, "models": a.models, "d": model.dim, "batch_size": a.batch_size, "steps": a.steps,
           "threads": a.threads, "seconds_per_step": seconds,
           "ratio": seconds["vmapped_jvp"] / seconds["closed_form"], "max_relative_difference": diff}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pairs.json").write_text(json.dumps(out, indent=2) + "\n")
    md = (f"# Paired models: closed form vs vmapped jvp\n\n{a.dataset}, N = {a.models} models, d = {model.dim}, "
          f"|B| = {a.batch_size}, {a.steps} steps, {a.threads} thread(s), CPU time per step.\n\n"
          "| path | s per step |\n|---|---|\n"
          + "".join(f"| {k} | {v:.4f} |\n" for k, v in seconds.items())
          + f"\nratio: {out['ratio']:.1f}×; largest relative difference (float32): "
          + ", ".join(f"{k} {v:.1e}" for k, v in diff.items()) + "\n")
    (RESULTS / "pairs.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
