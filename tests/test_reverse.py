"""Reverse-mode accumulation (DESIGN §9 "Reverse mode", issue 15) against the forward recursion, on real data.

Equality criterion: every record's reverse approximator equals the forward one (time-outer, the recursion as the
derivation writes it) to 1e-5 relative in float32 (‖a_rev − a_fwd‖ ≤ 1e-5 ‖a_fwd‖ per record; measured ~3e-7),
to 1e-10 in float64; for softmax regression (closed form), an MLP (vmapped HVPs), and with clipping and projection
(vector-Jacobian products of the exact update map), in both update orders.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_audit.data import load_dataset
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.hfocu.layouts import ReverseOuter, choose_layout, make_layout
from unlearn_audit.hfocu.reverse import first_injection_step
from unlearn_audit.hfocu.store import ApproximatorStore, StoreError
from unlearn_audit.models import build_model
from unlearn_audit.training import Schedule, SGDConfig, train_sgd

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    x = torch.as_tensor(ds.x[:240], dtype=torch.float32)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x, torch.as_tensor(ds.y[:240]), np.asarray(ds.ids[:240]).astype(str)


def _approximators(layout, kind, sgd, x, y, *, order="propagate_first", dtype=torch.float32, tracked=None,
                   chunk_size=None):
    model = build_model(kind, (64,), 10, seed=0, hidden=8)
    lay = make_layout(layout, model, sgd, len(x), tracked, order=order, dtype=dtype, chunk_size=chunk_size)
    train_sgd(model, x.to(dtype), y, sgd, hooks=lay.hooks(), dtype=dtype)
    approx, hvps = lay.finish(x.to(dtype), y)
    return approx.double(), hvps


def _max_rel(got, ref):
    norms = ref.norm(dim=1)
    assert float(norms.max()) > 0
    live = norms > 0
    assert bool((got[~live] == 0).all())                       # never-injected records stay exactly zero
    return float(((got - ref).norm(dim=1)[live] / norms[live]).max())


SOFTMAX = SGDConfig(epochs=3, batch_size=16, lr=0.5, decay=0.995, lam=0.05, seed=0)
MLP = SGDConfig(epochs=2, batch_size=16, lr=0.3, decay=0.99, lam=0.05, seed=1)
CLIPPED = SGDConfig(epochs=2, batch_size=16, lr=0.3, decay=0.99, lam=0.05, clip="batch", clip_norm=0.3,
                    weight_norm_bound=4.0, seed=2)


@pytest.mark.parametrize("order", ["propagate_first", "inject_first"])
def test_softmax_reverse_equals_forward(digits, order):
    x, y, _ = digits
    ref, _ = _approximators("time_outer", "softmax", SOFTMAX, x, y, order=order)
    chunk, _ = _approximators("chunk_outer", "softmax", SOFTMAX, x, y, order=order)
    rev, hvps = _approximators("reverse", "softmax", SOFTMAX, x, y, order=order, chunk_size=100)   # 7 blocks
    assert _max_rel(chunk, ref) < 1e-5
    assert _max_rel(rev, ref) < 1e-5
    assert hvps == 650 * len(range(0, 3 * 15))                  # d row products per step (15 steps an epoch)
    # and the comparison has teeth: swapping the order changes the answer far beyond the tolerance
    other, _ = _approximators("reverse", "softmax", SOFTMAX, x, y,
                              order="inject_first" if order == "propagate_first" else "propagate_first")
    assert _max_rel(other, ref) > 1e-2


def test_softmax_reverse_float64_and_candidates(digits):
    x, y, _ = digits
    ref, fwd_hvps = _approximators("time_outer", "softmax", SOFTMAX, x, y, dtype=torch.float64)
    rev, _ = _approximators("reverse", "softmax", SOFTMAX, x, y, dtype=torch.float64)
    assert _max_rel(rev, ref) < 1e-10
    # a few tracked records (candidates mode): same rows; the walk stops at their first injection
    sched = Schedule.make(len(x), SOFTMAX.epochs, SOFTMAX.batch_size, SOFTMAX.lr, SOFTMAX.decay, SOFTMAX.seed)
    tracked = np.sort(np.r_[sched.batches[10][:2], sched.batches[12][:1]])
    cand_ref, _ = _approximators("time_outer", "softmax", SOFTMAX, x, y, tracked=tracked)
    cand, hvps = _approximators("reverse", "softmax", SOFTMAX, x, y, tracked=tracked)
    assert cand.shape == (3, 650) and _max_rel(cand, cand_ref) < 1e-5
    assert first_injection_step(sched.batches, len(x), tracked) == 10 and hvps == 650 * (45 - 10)


@pytest.mark.parametrize("sgd", [MLP, CLIPPED], ids=["mlp", "mlp-clip-project"])
def test_mlp_reverse_equals_forward(digits, sgd):
    x, y, _ = digits
    x, y = x[:96], y[:96]
    for order in ("propagate_first", "inject_first"):
        ref, _ = _approximators("time_outer", "mlp", sgd, x, y, order=order)
        rev, _ = _approximators("reverse", "mlp", sgd, x, y, order=order, chunk_size=200)
        assert _max_rel(rev, ref) < 1e-5, order


def test_reverse_streams_column_slabs_into_the_store(digits, tmp_path):
    """The unlearner with the reverse layout and a store: the store's rows are the in-memory approximators, every
    chunk checksummed; deleting through the store moves the state by the approximator sum."""
    x, y, ids = digits
    mem = HFOCUUnlearner(build_model("softmax", (64,), 10, seed=0), SOFTMAX, layout="reverse").fit(x, y, ids)
    fwd = HFOCUUnlearner(build_model("softmax", (64,), 10, seed=0), SOFTMAX, layout="chunk_outer").fit(x, y, ids)
    assert mem.layout_ == "reverse" and mem.layout_reason == "asked for"
    disk = HFOCUUnlearner(build_model("softmax", (64,), 10, seed=0), SOFTMAX, layout="reverse", chunk_size=64,
                          store_path=str(tmp_path / "store")).fit(x, y, ids)
    assert disk.approximators_ is None and disk.store_ is not None
    store = ApproximatorStore.open(tmp_path / "store")
    store.verify_all()
    assert store.manifest["extra"]["layout"] == "reverse"
    got = store.rows(np.arange(len(x))).double()
    assert _max_rel(got, fwd.approximators_.double()) < 1e-5
    assert torch.equal(got, mem.approximators_.double())          # same computation, streamed by column slabs
    delete = [ids[3], ids[77]]
    before = disk.state_.clone()
    disk.delete(delete)
    assert torch.allclose(disk.state_ - before, fwd.approximator_sum(delete), rtol=1e-5, atol=1e-7)  # float32 state


def test_store_column_writes_are_checked(tmp_path):
    w = ApproximatorStore.create(tmp_path / "s", 10, 6, chunk_rows=4, ids=[f"r{i}" for i in range(10)])
    with pytest.raises(StoreError, match=r"expected an array of shape \(10, k\)"):
        w.write_columns(0, np.zeros((9, 2)))
    with pytest.raises(StoreError, match="columns inside 0..5"):
        w.write_columns(5, np.zeros((10, 2)))
    bad = np.zeros((10, 2))
    bad[7, 1] = np.nan
    with pytest.raises(StoreError, match="row 7 holds NaN"):
        w.write_columns(0, bad)
    full = np.arange(60, dtype=np.float32).reshape(10, 6)
    w.write_columns(0, full[:, :4])
    with pytest.raises(StoreError, match="never written"):
        w.finalise()
    w.write_columns(4, full[:, 4:])
    w.finalise()
    s = ApproximatorStore.open(tmp_path / "s")
    assert np.array_equal(s.rows(np.arange(10)).numpy(), full)
    # bfloat16: the quantisation error is measured on whole rows from the column slabs
    b = ApproximatorStore.create(tmp_path / "b", 10, 6, "bfloat16", chunk_rows=4, ids=[f"r{i}" for i in range(10)])
    b.write_columns(0, full[:, :3] + 0.1)
    b.write_columns(3, full[:, 3:] + 0.1)
    q = b.finalise()["quantisation"]
    assert 0 < q["max_row_relative_error"] < 2 ** -8 and 0 < q["max_elementwise_relative_error"] < 2 ** -8


def test_auto_chooses_by_cost_and_says_why():
    """``auto``: reverse when d·T·(1 + overhead) < m·T·(1 − 1/2E) and the trajectory fits in memory."""
    model = build_model("softmax", (64,), 10, seed=0)                 # d = 650
    sgd = SGDConfig(epochs=15, batch_size=32)
    big = choose_layout("auto", model, sgd, "exact", 60000, 60000, memory_bytes=16 * 2 ** 30)
    assert big.name == "reverse" and "d = 650, m = 60000" in big.reason and "fits in memory" in big.reason
    small = choose_layout("auto", model, sgd, "exact", 500, 500)
    assert small.name == "chunk_outer" and "forward is cheaper" in small.reason
    few = choose_layout("auto", model, sgd, "exact", 60000, 40)        # candidates mode: 40 records
    assert few.name == "chunk_outer"
    tight = choose_layout("auto", model, sgd, "exact", 60000, 60000, memory_bytes=2 ** 20)
    assert tight.name == "chunk_outer" and "exceeds half the memory" in tight.reason
    mlp = build_model("mlp", (64,), 10, seed=0, hidden=8)
    assert choose_layout("auto", mlp, sgd, "exact", 60000, 60000).name == "reverse"
    assert choose_layout("auto", mlp, sgd, "exact", 200, 200).name == "time_outer"
    assert choose_layout("reverse", mlp, SGDConfig(clip="per_sample", clip_norm=1.0), "exact").reason == "asked for"
    lay = make_layout("auto", model, sgd, 60000, None)
    assert isinstance(lay, ReverseOuter) and lay.choice is not None and lay.choice.name == "reverse"
    with pytest.raises(ValueError, match="layout must be one of auto, time_outer, chunk_outer, reverse, replay"):
        choose_layout("backwards", model, sgd, "exact")
    with pytest.raises(ValueError, match="layout must be one of"):
        HFOCUUnlearner(model, sgd, layout="backwards")
