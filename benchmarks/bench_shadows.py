"""Shadow training: k small models at once (batched matmuls) vs one after another (torch.nn + SGD).

Same models, same initialisation, same batches (the two agree to 1e-5, see tests/test_attacks_shadows.py);
timed side by side in one run, interleaved, median of the repeats. Digits (1797 x 64), each shadow on a
random half. Target: ensemble >= 3x faster.

    python benchmarks/bench_shadows.py [--k 16] [--epochs 20] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from attacks import draw_keep_masks
from attacks import shadows as sh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    masks = draw_keep_masks(args.k, len(x), seed=0)
    print(f"digits n={len(x)} d={x.shape[1]}, k={args.k} shadows on random halves, epochs={args.epochs}, "
          f"batch={args.batch_size}, torch {torch.__version__}, threads={torch.get_num_threads()}")
    print(f"{'model':8s} {'ensemble s':>11s} {'sequential s':>13s} {'ratio':>7s} {'max |dparam|':>13s}")
    for kind in ("softmax", "mlp"):
        kw = dict(epochs=args.epochs, batch_size=args.batch_size, lr=0.1, seed=0, hidden=args.hidden)
        sh.train_ensemble(kind, x[:64], y[:64], masks[:, :64], 10, epochs=1)  # warm-up
        t_ens, t_seq = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ens = sh.train_ensemble(kind, x, y, masks, 10, **kw)
            t1 = time.perf_counter()
            seq = sh.train_sequential(kind, x, y, masks, 10, **kw)
            t2 = time.perf_counter()
            t_ens.append(t1 - t0)
            t_seq.append(t2 - t1)
        diff = max((ens.params[n] - seq.params[n]).abs().max().item() for n in ens.params)
        me, ms = statistics.median(t_ens), statistics.median(t_seq)
        print(f"{kind:8s} {me:11.3f} {ms:13.3f} {ms / me:6.1f}x {diff:13.2e}")


if __name__ == "__main__":
    main()
