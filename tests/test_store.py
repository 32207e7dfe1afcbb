"""File-backed approximator store: round trip, checksums, hashes, bfloat16 error, chunk-selective reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearn_audit.hfocu.store import ApproximatorStore, StoreError, ids_digest, split_rows

torch.set_num_threads(1)

N, D, CHUNK = 53, 19, 10
IDS = [f"rec:{i}" for i in range(N)]


@pytest.fixture
def data() -> np.ndarray:
    a = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
    a[7] = 0.0                                       # a record never seen: its approximator is still zero
    return a


def write(path, a, dtype="float32", **kw) -> dict:
    w = ApproximatorStore.create(path, N, D, dtype, CHUNK, "model-h", "sched-h", IDS, **kw)
    w.write_rows(0, a[:25])                          # spans chunk boundaries on purpose
    w.write_rows(25, torch.from_numpy(a[25:]))
    return w.finalise()


def test_round_trip_float32(tmp_path, data):
    m = write(tmp_path / "s", data)
    assert m["n"] == N and m["d"] == D and m["dtype"] == "float32" and m["chunk_rows"] == CHUNK
    assert m["model_hash"] == "model-h" and m["schedule_digest"] == "sched-h" and m["ids_digest"] == ids_digest(IDS)
    assert len(m["shards"][0]["chunks"]) == 6 and all(len(c["sha256"]) == 64 for c in m["shards"][0]["chunks"])
    assert "created" in m and m["complete"] is True
    s = ApproximatorStore.open(tmp_path / "s", expected_model_hash="model-h", expected_schedule_digest="sched-h")
    assert s.nbytes == N * D * 4 and s.bytes_per_record == D * 4
    pos = [52, 0, 7, 31, 9]
    got = s.rows(pos)
    assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(data[pos]))
    assert torch.equal(s.rows(np.arange(N)), torch.from_numpy(data))
    ref = data[[3, 44, 45]].astype(np.float64).sum(0)
    assert np.allclose(s.sum_rows([3, 44, 45]).numpy(), ref, rtol=1e-6, atol=1e-6)
    assert list(s.rows_of(["rec:3", "rec:44"])) == [3, 44]
    with pytest.raises(StoreError, match="rec:999"):
        s.rows_of(["rec:999"])
    with pytest.raises(StoreError, match="out of range"):
        s.rows([N])


def test_corrupted_chunk_is_named_and_only_read_chunks_are_checked(tmp_path, data):
    m = write(tmp_path / "s", data)
    bad = m["shards"][0]["chunks"][2]
    f = tmp_path / "s" / bad["file"]
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0x40                                  # flip one bit of one float in rows 20..29
    f.write_bytes(bytes(raw))
    s = ApproximatorStore.open(tmp_path / "s")
    s.rows([0, 15, 35])                              # chunks 0, 1, 3: the bad one is never touched
    assert s.chunks_read == {0, 1, 3}
    with pytest.raises(StoreError) as err:
        s.rows([21])
    msg = str(err.value)
    assert "chunk 2" in msg and bad["file"] in msg and "corrupted" in msg and "\n" not in msg
    with pytest.raises(StoreError, match="chunk 2"):
        ApproximatorStore.open(tmp_path / "s").verify_all()


def test_subset_reads_only_needed_chunks(tmp_path, data):
    write(tmp_path / "s", data)
    s = ApproximatorStore.open(tmp_path / "s")
    s.sum_rows([41, 49, 40])
    assert s.chunks_read == {4}
    assert s.bytes_verified < 2 * CHUNK * D * 4      # one chunk file (data + .npy header)
    s.rows([41, 12])
    assert s.chunks_read == {1, 4}


def test_model_or_schedule_mismatch_refused(tmp_path, data):
    write(tmp_path / "s", data)
    with pytest.raises(StoreError, match="model hash mismatch"):
        ApproximatorStore.open(tmp_path / "s", expected_model_hash="other-model")
    with pytest.raises(StoreError, match="schedule digest mismatch"):
        ApproximatorStore.open(tmp_path / "s", expected_schedule_digest="other-schedule")
    ids = json.loads((tmp_path / "s" / "ids.json").read_text())
    ids[3] = "rec:x"
    (tmp_path / "s" / "ids.json").write_text(json.dumps(ids))
    with pytest.raises(StoreError, match="ids digest"):
        ApproximatorStore.open(tmp_path / "s")


def test_bfloat16_error_reported(tmp_path, data):
    m = write(tmp_path / "b", data, dtype="bfloat16")
    q = m["quantisation"]
    s = ApproximatorStore.open(tmp_path / "b")
    assert s.nbytes == N * D * 2 and s.bytes_per_record == 2 * D
    got = s.rows(np.arange(N))
    want = torch.from_numpy(data).to(torch.bfloat16).to(torch.float32)
    assert torch.equal(got, want)                    # round to nearest even, bit patterns kept exactly
    a, g = data.astype(np.float64), got.double().numpy()
    nz = np.linalg.norm(a, axis=1) > 0
    row_err = (np.linalg.norm(g - a, axis=1)[nz] / np.linalg.norm(a, axis=1)[nz]).max()
    assert q["max_row_relative_error"] == pytest.approx(row_err, rel=1e-9)
    assert 0 < q["max_row_relative_error"] <= 2.0 ** -8
    assert 0 < q["max_elementwise_relative_error"] <= 2.0 ** -8


def test_refuses_incomplete_and_bad_writes(tmp_path, data):
    w = ApproximatorStore.create(tmp_path / "s", N, D, "float32", CHUNK, "m", "s", IDS)
    w.write_rows(0, data[:30])
    with pytest.raises(StoreError, match="row 30 was never written"):
        w.finalise()
    with pytest.raises(StoreError, match="no manifest"):
        ApproximatorStore.open(tmp_path / "s")
    with pytest.raises(StoreError, match="not inside"):
        w.write_rows(50, data[:5])
    bad = data[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(StoreError, match="row 31"):
        w.write_rows(30, bad)
    with pytest.raises(StoreError, match="unique"):
        ApproximatorStore.create(tmp_path / "t", 2, D, ids=["a", "a"])
    write(tmp_path / "u", data)
    with pytest.raises(StoreError, match="already holds a store"):
        write(tmp_path / "u", data)
    write(tmp_path / "u", data * 2, overwrite=True)
    assert torch.equal(ApproximatorStore.open(tmp_path / "u").rows([5]), torch.from_numpy(data[[5]] * 2))


def test_shards_written_separately_then_assembled(tmp_path, data):
    bounds = split_rows(N, 3)
    for k in (2, 0):                                 # out of order on purpose; shard 1 still missing
        w = ApproximatorStore.create(tmp_path / "s", N, D, "float32", CHUNK, "m", "s", IDS, shards=bounds,
                                     shard_index=k)
        lo, hi = bounds[k]
        w.write_rows(lo, data[lo:hi])
        w.finalise()
    with pytest.raises(StoreError, match="shard 1 of 3"):
        ApproximatorStore.assemble(tmp_path / "s", ids=IDS)
    w = ApproximatorStore.create(tmp_path / "s", N, D, "float32", CHUNK, "m", "s", IDS, shards=bounds, shard_index=1)
    w.write_rows(bounds[1][0], data[bounds[1][0]:bounds[1][1]])
    w.finalise()
    m = ApproximatorStore.assemble(tmp_path / "s", ids=IDS)
    assert [(sh["start"], sh["stop"]) for sh in m["shards"]] == bounds
    s = ApproximatorStore.open(tmp_path / "s")
    assert torch.equal(s.rows(np.arange(N)), torch.from_numpy(data))
    s2 = ApproximatorStore.open(tmp_path / "s")
    s2.sum_rows([bounds[2][0], N - 1])
    assert s2.shards_read == {2}                     # a deletion reads only the shard holding its records


def test_store_backed_candidates_and_delete_from_store(tmp_path):
    from unlearn_audit.data import load_dataset
    from unlearn_audit.hfocu import HFOCUUnlearner
    from unlearn_audit.models import build_model
    from unlearn_audit.models.functional import weights_hash
    from unlearn_audit.training import SGDConfig

    ds = load_dataset("digits")
    x = torch.as_tensor(ds.x[:120], dtype=torch.float32)
    y = torch.as_tensor(ds.y[:120], dtype=torch.int64)
    ids = [str(i) for i in ds.ids[:120]]
    cand = ids[10:40]
    cfg = SGDConfig(epochs=2, batch_size=16, lr=0.2, lam=0.01)
    u = HFOCUUnlearner(build_model("softmax", ds.feature_shape, ds.n_classes, seed=0), cfg, mode="candidates",
                       candidates=cand).fit(x, y, ids)
    on_disk = HFOCUUnlearner(build_model("softmax", ds.feature_shape, ds.n_classes, seed=0), cfg, mode="candidates",
                             candidates=cand, store_path=str(tmp_path / "s")).fit(x, y, ids)
    assert on_disk.approximators_ is None and on_disk.storage_bytes() == 30 * u.model.dim * 4
    s = ApproximatorStore.open(tmp_path / "s", expected_model_hash=weights_hash(u.weights_),
                               expected_schedule_digest=u.schedule_.digest())
    assert s.n == 30 and s.manifest["extra"]["curvature"].startswith("exact")
    assert s.ids == cand and list(s.positions) == list(range(10, 40))
    assert torch.equal(s.rows(np.arange(30)), u.approximators_)
    forget = [cand[3], cand[20]]
    via_store = u.weights_ + s.sum_rows(s.rows_of(forget))
    u.delete(forget)
    assert torch.allclose(via_store, u.state_, rtol=0, atol=1e-6)


def test_write_at_accepts_rows_in_any_order(tmp_path):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((23, 5)).astype(np.float32)
    w = ApproximatorStore.create(tmp_path / "s", 23, 5, chunk_rows=4, ids=[f"r{i}" for i in range(23)])
    perm = rng.permutation(23)
    w.write_at(perm[:11], A[perm[:11]])
    w.write_at(torch.as_tensor(perm[11:]).numpy(), torch.as_tensor(A[perm[11:]]))
    w.finalise()
    assert np.array_equal(ApproximatorStore.open(tmp_path / "s").rows(np.arange(23)).numpy(), A)
    with pytest.raises(StoreError, match="row numbers"):
        ApproximatorStore.create(tmp_path / "t", 3, 5, ids=["a", "b", "c"]).write_at([0, 1], A[:3])
