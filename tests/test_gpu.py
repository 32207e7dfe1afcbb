"""The GPU path (issue 15): the engine on CUDA against the CPU, and the one-call GPU check's CPU quick form.

Tests marked ``gpu`` need a CUDA GPU and are skipped without one; ``benchmarks/gpu_check.sh`` runs them on a GPU
machine (with the GPU benchmarks). The last test runs that script's ``--cpu-quick`` form, so it cannot rot, and
checks that without a GPU (and without the flag) it refuses with one line and a non-zero exit code.

Equality criterion on the GPU: every record's approximator within 1e-5 relative of the CPU's time-outer recursion
(float32; cuBLAS sums in another order than MKL, and TF32 is off by default for float32 matmuls in torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_audit.data import load_dataset
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.hfocu.layouts import make_layout
from unlearn_audit.hfocu.store import ApproximatorStore
from unlearn_audit.models import build_model
from unlearn_audit.training import SGDConfig, train_sgd

ROOT = Path(__file__).resolve().parent.parent
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")
SOFTMAX = SGDConfig(epochs=3, batch_size=16, lr=0.5, decay=0.995, lam=0.05, seed=0)
MLP = SGDConfig(epochs=2, batch_size=16, lr=0.3, decay=0.99, lam=0.05, seed=1)


def _digits(n=240):
    ds = load_dataset("digits")
    x = torch.as_tensor(ds.x[:n], dtype=torch.float32)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12), torch.as_tensor(ds.y[:n]), np.asarray(ds.ids[:n])


def _run(layout, kind, sgd, x, y, device):
    model = build_model(kind, (64,), 10, seed=0, hidden=8)
    lay = make_layout(layout, model, sgd, len(x), None, device=device)
    xd, yd = x.to(device), y.to(device)
    train_sgd(model, xd, yd, sgd, hooks=lay.hooks())
    approx, _ = lay.finish(xd, yd)
    return approx.double().cpu()


def _max_rel(got, ref):
    n = ref.norm(dim=1)
    live = n > 0
    return float(((got - ref).norm(dim=1)[live] / n[live]).max())


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("kind, sgd, layouts", [("softmax", SOFTMAX, ["time_outer", "chunk_outer", "reverse"]),
                                                ("mlp", MLP, ["time_outer", "reverse"])], ids=["softmax", "mlp"])
def test_layouts_on_cuda_match_the_cpu(kind, sgd, layouts):
    x, y, _ = _digits(240 if kind == "softmax" else 96)
    ref = _run("time_outer", kind, sgd, x, y, "cpu")
    for layout in layouts:
        assert _max_rel(_run(layout, kind, sgd, x, y, "cuda"), ref) < 1e-5, layout


@pytest.mark.gpu
@cuda
def test_unlearner_and_precompute_on_cuda(tmp_path):
    from unlearn_audit.config import config_from_dict
    from unlearn_audit.deletion.precompute import run_precompute
    from unlearn_audit.inputs import build_inputs

    x, y, ids = _digits()
    cpu = HFOCUUnlearner(build_model("softmax", (64,), 10, seed=0), SOFTMAX, layout="time_outer").fit(x, y, ids)
    gpu = HFOCUUnlearner(build_model("softmax", (64,), 10, seed=0), SOFTMAX, layout="reverse", device="cuda",
                         store_path=str(tmp_path / "store")).fit(x, y, ids)
    assert gpu.device.type == "cuda"
    store = ApproximatorStore.open(tmp_path / "store")
    store.verify_all()
    assert _max_rel(store.rows(np.arange(len(x))).double(), cpu.approximators_.double()) < 1e-5
    cfg = config_from_dict({"seed": 0, "data": {"dataset": "digits"}, "training": {"epochs": 3, "lr": 0.5}})
    info = run_precompute(cfg, tmp_path / "pre", nproc=1, device="cuda", layout="reverse")
    assert info["ranks"][0]["device"].startswith("cuda")
    d = build_inputs(cfg)
    ref = HFOCUUnlearner(d.model, d.sgd, layout="time_outer").fit(d.x, d.y, d.ids)
    got = ApproximatorStore.open(tmp_path / "pre" / "store").rows(np.arange(len(d.x))).double()
    assert _max_rel(got, ref.approximators_.double()) < 1e-5


def test_gpu_check_script_cpu_quick_form(tmp_path):
    """``benchmarks/gpu_check.sh --cpu-quick`` runs every step of the GPU check on the CPU at toy sizes and writes
    its results file; without a GPU and without the flag it refuses in one line (exit code 3)."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "benchmarks" / "gpu_check.sh")
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([script, "--cpu-quick", "--out", str(out)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["form"].startswith("cpu-quick") and res["device"] == "cpu"
    for step in ("gpu_tests", "mnist_lr", "fashion_mnist_lr_side_by_side", "fashion_mnist_lr_precompute_15_epochs",
                 "cnn"):
        assert step in res and "error" not in res[step], (step, res.get(step))
    assert res["gpu_tests"]["exit_code"] == 0 and "3/4 tests collected" in res["gpu_tests"]["summary"]
    for name, lay in res["mnist_lr"]["layouts"].items():
        assert lay["rel_error_vs_reference"] < 1e-5, name
    assert res["fashion_mnist_lr_side_by_side"]["reverse_vs_forward_rel_error"] < 1e-5
    e2e = res["fashion_mnist_lr_precompute_15_epochs"]
    assert e2e["precompute"]["layout"] == "reverse" and e2e["chunks_verified"] >= 1
    assert e2e["max_rel_error_vs_forward"] < 1e-5
    if not torch.cuda.is_available():
        bare = subprocess.run([script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert bare.returncode == 3 and bare.stdout == ""
        assert len(bare.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in bare.stderr
