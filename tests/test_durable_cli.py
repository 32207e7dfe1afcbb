"""``unlearn-audit forget`` and ``unlearn-audit calibrate``: output, idempotency, and the bad-input table (exit 2, one
line, ledger unchanged)."""

import hashlib
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from unlearn_audit.cli import main
from unlearn_audit.data import load_dataset, prepare, split_dataset
from unlearn_audit.deletion import DurableUnlearner, save_trained_run
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.models import build_model
from unlearn_audit.training import SGDConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    ds = load_dataset("digits")
    sp = prepare(split_dataset(ds, train_fraction=0.6, test_fraction=0.2, population_fraction=0.2, seed=1,
                               max_train=150), standardize=True, unit_norm=True)
    tr = sp.train
    x, y = torch.as_tensor(tr.x), torch.as_tensor(tr.y, dtype=torch.int64)
    model = build_model("softmax", tr.feature_shape, ds.n_classes, seed=1)
    u = HFOCUUnlearner(model, SGDConfig(epochs=2, batch_size=32, lr=0.5, lam=0.01, seed=1)).fit(x, y, tr.ids)
    out = tmp_path_factory.mktemp("audit_run")
    save_trained_run(out / "trained_run", u)
    return out, [str(r) for r in tr.ids]


@pytest.fixture
def run(template, tmp_path):
    src, ids = template
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst, ids


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write_ids(path, ids):
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


def ledger_rows(run_dir):
    con = sqlite3.connect(run_dir / "ledger.sqlite")
    try:
        return (con.execute("SELECT * FROM requests ORDER BY seq").fetchall(),
                con.execute("SELECT * FROM request_records ORDER BY record_id").fetchall())
    finally:
        con.close()


def test_forget_prints_certificate_writes_release_and_is_idempotent(run, tmp_path):
    run_dir, ids = run
    req = write_ids(tmp_path / "erase.txt", ids[:3])
    res = invoke("forget", run_dir, "--requests", req, "--epsilon", "1", "--delta", "1e-5")
    assert res.exit_code == 0, res.output
    from unlearn_audit.pseudonyms import read_or_create_key, request_pseudonym

    rid = request_pseudonym(ids[:3], read_or_create_key(run_dir))     # keyed: not the file's recognisable SHA-256
    assert rid != hashlib.sha256(req.read_bytes()).hexdigest()
    for word in ("epsilon=1", "delta=1e-05", "Delta=", "sigma=", "bound: a-posteriori linearisation-error recursion",
                 "constants:", "latency:", rid):
        assert word in res.output, (word, res.output)
    release = run_dir / "releases" / f"{rid}.npy"
    w = np.load(release, allow_pickle=False)
    with DurableUnlearner.open(run_dir) as du:
        assert du.n_applied == 1 and sorted(du.deleted_ids) == sorted(ids[:3])
        assert w.shape == du.run.weights.shape and w.dtype == du.run.weights.dtype
        assert np.array_equal(w, du.release_of(rid))
    rows = ledger_rows(run_dir)
    # re-sent: applied once, the same release, exit 0
    release.unlink()
    again = invoke("forget", run_dir, "--requests", req)
    assert again.exit_code == 0 and "already applied" in again.output
    assert ledger_rows(run_dir) == rows
    assert np.array_equal(np.load(release, allow_pickle=False), w)  # reproduced from the ledger
    # an explicit request id
    req2 = write_ids(tmp_path / "erase2.txt", ids[3:4])
    res2 = invoke("forget", run_dir, "--requests", req2, "--request-id", "ticket-42", "--epsilon", "0.5")
    assert res2.exit_code == 0, res2.output
    assert (run_dir / "releases" / "ticket-42.npy").is_file()
    assert "records deleted so far: 4 in 2 request(s)" in res2.output


def test_forget_help_has_example():
    res = invoke("forget", "--help")
    assert res.exit_code == 0 and "Example" in res.output and "--requests" in res.output


def _tamper_approximators(run_dir):
    f = run_dir / "trained_run" / "store" / "shard-00000" / "chunk-000000.npy"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))


BAD = [
    # name, request-file ids (indices into the training ids or literal strings), extra args, tamper, message words
    ("unknown id", ["no-such-record"], [], None, "unknown record id 'no-such-record'"),
    ("already deleted id", [0], [], None, "already deleted"),
    ("mismatched hash", [5], [], _tamper_approximators, "is corrupted: SHA-256 does not match"),
    ("epsilon 0", [5], ["--epsilon", "0"], None, "epsilon"),
    ("delta 1", [5], ["--delta", "1"], None, "delta"),
    ("delta 0", [5], ["--delta", "0"], None, "delta"),
    ("classic epsilon 2", [5], ["--mechanism", "classic", "--epsilon", "2"], None, "classic"),
    ("duplicate id", [5, 5], [], None, "twice"),
    ("empty file", [], [], None, "names no record ids"),
    ("bad request id", [5], ["--request-id", "../../etc"], None, "request id"),
    ("missing file", None, [], None, "cannot read"),
    ("not a run", [5], [], lambda d: shutil.rmtree(d / "trained_run"), "not a trained run"),
]


@pytest.mark.parametrize("name, which, extra, tamper, words", BAD, ids=[b[0] for b in BAD])
def test_forget_bad_input_exit_2_one_line_ledger_unchanged(run, tmp_path, name, which, extra, tamper, words):
    run_dir, ids = run
    first = invoke("forget", run_dir, "--requests", write_ids(tmp_path / "first.txt", ids[:2]))
    assert first.exit_code == 0, first.output
    before = ledger_rows(run_dir)
    releases_before = sorted(p.name for p in (run_dir / "releases").iterdir())
    if tamper:
        tamper(run_dir)
    if which is None:
        req = tmp_path / "does-not-exist.txt"
    else:
        req = tmp_path / "bad.txt"
        req.write_text("".join(f"{ids[i] if isinstance(i, int) else i}\n" for i in which), encoding="utf-8")
    res = invoke("forget", run_dir, "--requests", req, *extra)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in res.output, res.output
    assert words in err, err
    assert ledger_rows(run_dir) == before
    assert sorted(p.name for p in (run_dir / "releases").iterdir()) == releases_before


def test_calibrate_cli():
    res = invoke("calibrate", "--epsilon", "1", "--delta", "1e-5", "--sensitivity", "1")
    assert res.exit_code == 0 and res.output.strip().startswith("3.73")
    assert float(res.output) == pytest.approx(3.731, abs=5e-4)
    bad = invoke("calibrate", "--mechanism", "classic", "--epsilon", "2", "--delta", "1e-5", "--sensitivity", "1")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
