"""Issue 17 beyond the bad-input table: nothing lost (the output folder), nothing leaked (the network, the shadow
cache, record ids), and the exit codes of interrupted runs. Each test reproduces a failure the hostile test found."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from unlearn_audit.cli import main

REPO = Path(__file__).resolve().parents[1]
SMALL = "seed = 1\n[training]\nepochs = 2\n[unlearning]\nrequests = 3\n[audit]\nsweep_sigmas = [0.0]\n"


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "UNLEARN_AUDIT_CACHE_DIR": str(tmp_path / "cache")}


def _cli(*args, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unlearn_audit.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------------------------------
# one real audit (digits, small) shared by the tests that read its outputs
@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    base = tmp_path_factory.mktemp("audited")
    (base / "c.toml").write_text(SMALL)
    cache = base / "cache" / "shadows"
    cache.mkdir(parents=True)
    legacy = cache / "lira_pool_0123456789abcdef.txt"          # what earlier versions left in the user-wide cache
    legacy.write_text("digits:1\ndigits:2\n")
    proc = _cli("audit", "--config", "c.toml", "--out", "run", "--quiet", "--no-pdf", cwd=base, env=_env(base))
    assert proc.returncode in (0, 1, 3), proc.stderr
    return base, base / "run"


def test_shadow_cache_holds_no_record_ids(audited):
    base, run = audited
    ids = (run / "artefacts" / "forget_ids.txt").read_text().split()
    assert len(ids) >= 2
    files = [p for p in (base / "cache").rglob("*") if p.is_file()]
    assert files, "the audit used the shadow cache"
    for p in files:
        data = p.read_bytes()
        for rid in ids:
            assert rid.encode() not in data, (p, rid)
    assert not list((base / "cache").rglob("lira_pool_*")), "legacy raw-id files are removed"


def test_compliance_ids_are_keyed_hashes_and_the_key_stays_in_the_run_folder(audited):
    _, run = audited
    key_text = (run / "record_id.key").read_text().strip()
    key = bytes.fromhex(key_text)
    assert len(key) == 32 and oct((run / "record_id.key").stat().st_mode & 0o777) == "0o600"
    ids = (run / "artefacts" / "forget_ids.txt").read_text().split()
    results = json.loads((run / "results.json").read_text())
    shown = [h for q in results["forget_set"]["requests"] for h in q["hashed_record_ids"]]
    assert shown == [hmac.new(key, r.encode(), hashlib.sha256).hexdigest()[:16] for r in ids]
    plain = {hashlib.sha256(r.encode()).hexdigest()[:16] for r in ids}
    assert not plain & set(shown), "not the unkeyed SHA-256 a reader could reproduce by enumeration"
    for name in ("results.json", "report.html", "config.toml"):
        assert key_text not in (run / name).read_text()


def test_force_replaces_a_previous_run_folder_and_nothing_else(audited, tmp_path):
    base, run = audited
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "c.toml").write_text(SMALL)
    proc = _cli("audit", "--config", "c.toml", "--out", "out", "--quiet", "--no-pdf", cwd=wd, env=_env(base))
    assert proc.returncode in (0, 1, 3), proc.stderr
    old_started = json.loads((wd / "out" / "results.json").read_text())["run"]["started"]
    again = _cli("audit", "--config", "c.toml", "--out", "out", "--force", "--quiet", "--no-pdf", cwd=wd,
                 env=_env(base))
    assert again.returncode in (0, 1, 3), again.stderr
    assert json.loads((wd / "out" / "results.json").read_text())["run"]["started"] != old_started
    assert sorted(p.name for p in wd.iterdir()) == ["c.toml", "out"], "no partial or old folder left beside --out"


# ---------------------------------------------------------------------------------------------------------------------
# interrupted runs: SIGINT 130, SIGTERM 143, nothing left; a SIGKILLed run's partial folder removed on the next start
def _start_audit(wd: Path, env: dict) -> subprocess.Popen:
    (wd / "c.toml").write_text("seed = 1\n[training]\nepochs = 5000\n")     # long enough to be interrupted
    return subprocess.Popen([sys.executable, "-m", "unlearn_audit.cli", "audit", "--config", "c.toml", "--out",
                             "out", "--no-pdf", "--quiet"], cwd=wd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_partial(wd: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(wd.glob(".out.partial-*")):
            time.sleep(1.0)
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the audit never created its partial folder")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_audit_exits_128_plus_signal_and_leaves_nothing(tmp_path, sig, code):
    wd = tmp_path / "wd"
    wd.mkdir()
    proc = _start_audit(wd, _env(tmp_path))
    _wait_for_partial(wd, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, (proc.returncode, err)
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in wd.iterdir()) == ["c.toml"], list(wd.iterdir())


def test_a_second_signal_during_the_clean_up_keeps_the_first_exit_code(tmp_path):
    """Ctrl-C pressed twice (or SIGINT then SIGTERM from a supervisor): the first signal decides the exit code and the
    clean-up runs to its end; never a death by signal (returncode -2), which a caller cannot tell from a hard kill."""
    wd = tmp_path / "wd"
    wd.mkdir()
    proc = _start_audit(wd, _env(tmp_path))
    _wait_for_partial(wd, proc)
    proc.send_signal(signal.SIGINT)
    for late in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(late)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err)
    assert err == "error: interrupted (SIGINT); nothing of the interrupted step was kept\n", err
    assert sorted(p.name for p in wd.iterdir()) == ["c.toml"], list(wd.iterdir())


def test_an_in_process_caller_gets_its_signal_handlers_back():
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    assert CliRunner().invoke(main, ["report", "/nonexistent-run-folder"]).exit_code == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_signal_after_the_command_decided_its_exit_code_is_ignored(tmp_path):
    """The console script's process: a signal arriving on the way out (here from an atexit hook, after the command
    finished with exit code 0) must not turn the exit into a death by signal (it gave -15 before)."""
    code = ("import atexit, os, signal, sys\n"
            "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), os.kill(os.getpid(), signal.SIGINT)))\n"
            "sys.argv = ['unlearn-audit', '--version']\n"
            "from unlearn_audit.cli import entry\n"
            "entry()\n")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)


def test_a_sigint_the_parent_ignored_stays_ignored(tmp_path):
    """A background job of a non-interactive shell starts with SIGINT ignored: the audit keeps running through a
    SIGINT, and still stops cleanly on SIGTERM."""
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "c.toml").write_text("seed = 1\n[training]\nepochs = 5000\n")
    proc = subprocess.Popen([sys.executable, "-m", "unlearn_audit.cli", "audit", "--config", "c.toml", "--out", "out",
                             "--no-pdf", "--quiet"], cwd=wd, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    _wait_for_partial(wd, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.5)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.startswith("error: terminated (SIGTERM)"), (proc.returncode, err)
    assert sorted(p.name for p in wd.iterdir()) == ["c.toml"]


def test_partial_folder_of_a_killed_audit_is_removed_on_the_next_start(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    proc = _start_audit(wd, _env(tmp_path))
    _wait_for_partial(wd, proc)
    proc.kill()                                   # SIGKILL: nothing can clean up now
    proc.communicate(timeout=60)
    partials = list(wd.glob(".out.partial-*"))
    assert partials, "SIGKILL leaves the partial folder (mode 0700 while it exists)"
    assert all(oct(p.stat().st_mode & 0o777) == "0o700" for p in partials)
    (wd / "c.toml").write_text("[training\n")                               # the next start fails at once ...
    from unlearn_audit.outputs import OutputFolder

    with OutputFolder(wd / "out") as folder:                                # ... and any start cleans up
        assert not [p for p in wd.glob(".out.partial-*") if p != folder.path]
    assert sorted(p.name for p in wd.iterdir()) == ["c.toml"]


def test_a_running_audits_partial_folder_is_not_touched(tmp_path):
    from unlearn_audit.outputs import OutputFolder, remove_stale_partials

    with OutputFolder(tmp_path / "out") as running:
        (running.path / "x.txt").write_text("in progress")
        assert remove_stale_partials(tmp_path / "out") == []
        assert (running.path / "x.txt").is_file()


# ---------------------------------------------------------------------------------------------------------------------
# the PDF step never reaches the network
class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Recorder.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{httpd.server_address[1]}", _Recorder.hits
    httpd.shutdown()


def _hostile(host: str) -> str:
    return (f'x";}}\n}} h1 {{ background-image: url(http://{host}/css) }} @import "http://{host}/import"; '
            f'<img src="http://{host}/img"><link rel=stylesheet href="http://{host}/link">')


def test_report_pdf_loads_nothing_for_a_hostile_results_file(tmp_path, server):
    host, hits = server
    run = tmp_path / "run"
    run.mkdir()
    bad = _hostile(host)
    (run / "results.json").write_text(json.dumps({
        "schema_version": "2.0", "verdict": {"status": bad, "reasons": [bad]}, "methods": {}, "attacks": [],
        "data": {"dataset": bad}, "run": {"started": bad}, "model": {"description": bad}}))
    res = CliRunner().invoke(main, ["report", str(run)])
    assert res.exit_code == 0, res.output
    assert (run / "report.pdf").stat().st_size > 1000
    assert hits == []
    html = (run / "report.html").read_text()
    style = html[html.index("<style>"):html.index("</style>")]
    assert host not in style, "no value inside <style>"
    assert f'<img src="http://{host}' not in html


def test_pdf_url_fetcher_refuses_everything_but_data_urls(tmp_path, server):
    from unlearn_audit.report.render import render_pdf

    host, hits = server
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not really")
    html = (f'<html><head><link rel="stylesheet" href="http://{host}/a.css"><style>@import url("http://{host}/b");'
            f'p {{ background: url(file://{secret}) }}</style></head><body><p>x</p><img src="http://{host}/c.png">'
            f'<img src="https://{host}/d.png"><img src="file://{secret}"><img src="ftp://{host}/e">'
            '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'
            "</body></html>")
    render_pdf(html, tmp_path / "out.pdf")
    assert (tmp_path / "out.pdf").stat().st_size > 500
    assert hits == []


def test_audit_with_a_hostile_data_file_name_reaches_no_server(tmp_path, server):
    host, hits = server
    wd = tmp_path / "wd"
    wd.mkdir()
    # A file name cannot hold "/", but CSS escapes can: the name closes the @page string and rule and asks for a URL.
    name = 'd"} h1 { background-image: url(http:\\2f\\2f' + host + '\\2f name) } x{ "'
    from sklearn.datasets import load_iris

    iris = load_iris()
    rows = ["a,b,c,d,label"] + [",".join(map(str, x)) + f",{y}" for x, y in zip(iris.data, iris.target)]
    (wd / f"{name}.csv").write_text("\n".join(rows) + "\n")
    (wd / "c.toml").write_text(f'seed = 1\n[data]\ndataset = "csv"\npath = {json.dumps(name + ".csv")}\n'
                               '[training]\nepochs = 2\n[unlearning]\nrequests = 2\n[audit]\nattacks = ["loss"]\n'
                               "sweep_sigmas = [0.0]\n")
    proc = _cli("audit", "--config", "c.toml", "--out", "run", "--quiet", cwd=wd, env=_env(tmp_path))
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert (wd / "run" / "report.pdf").is_file()
    assert hits == []


# ---------------------------------------------------------------------------------------------------------------------
# calibrate: tiny valid (ε, δ) computed correctly; σ beyond the float range refused
def _delta_reference(eps: float, sigma: float) -> float:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 700
    e, s = mpmath.mpf(eps), mpmath.mpf(sigma)
    return float(mpmath.ncdf(1 / (2 * s) - e * s) - mpmath.exp(e) * mpmath.ncdf(-1 / (2 * s) - e * s))


@pytest.mark.parametrize("eps, delta", [(1e-300, 1e-5), (1.0, 1e-320), (1e-300, 1e-320), (1e-8, 1e-12),
                                        (1e-6, 1e-300), (1.0, 1e-5)])
def test_calibrate_tiny_epsilon_and_delta(eps, delta):
    res = CliRunner().invoke(main, ["calibrate", "--epsilon", repr(eps), "--delta", repr(delta),
                                    "--sensitivity", "1"])
    assert res.exit_code == 0, res.stderr
    sigma = float(res.stdout)
    assert math.isfinite(sigma) and sigma > 0
    # the printed σ (6 digits) meets δ, and 0.1% less noise would not: the smallest σ, checked at 700 digits
    assert _delta_reference(eps, sigma) <= delta * (1 + 1e-9)
    assert _delta_reference(eps, sigma * 0.999) > delta


def test_calibrate_refuses_sigma_beyond_float_range():
    from unlearn_audit.certify import CertificationError, calibrate

    assert calibrate(1.0, 1e-5, 1e308) == math.inf                         # the library's vacuous certificate
    with pytest.raises(CertificationError, match="float range"):
        calibrate(1.0, 1e-5, 1e308, finite=True)


# ---------------------------------------------------------------------------------------------------------------------
# forget: release names not recognisable, temporaries of a killed release removed, JSON-lines requests
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    from unlearn_audit.data import load_dataset, prepare, split_dataset
    from unlearn_audit.deletion import save_trained_run
    from unlearn_audit.hfocu import HFOCUUnlearner
    from unlearn_audit.models import build_model
    from unlearn_audit.training import SGDConfig

    torch.set_num_threads(1)
    ds = load_dataset("digits")
    sp = prepare(split_dataset(ds, train_fraction=0.6, test_fraction=0.2, population_fraction=0.2, seed=2,
                               max_train=80), standardize=True, unit_norm=True)
    tr = sp.train
    model = build_model("softmax", tr.feature_shape, ds.n_classes, seed=2)
    u = HFOCUUnlearner(model, SGDConfig(epochs=2, batch_size=16, lr=0.5, lam=0.01, seed=2)).fit(
        torch.as_tensor(tr.x), torch.as_tensor(tr.y, dtype=torch.int64), tr.ids)
    out = tmp_path_factory.mktemp("trained") / "run"
    save_trained_run(out / "trained_run", u)
    return out, [str(r) for r in tr.ids]


@pytest.fixture
def run_dir(trained, tmp_path):
    import shutil

    src, ids = trained
    shutil.copytree(src, tmp_path / "run")
    return tmp_path / "run", ids


def test_release_name_does_not_reveal_the_request(run_dir, tmp_path):
    run, ids = run_dir
    req = tmp_path / "one.txt"
    req.write_text(ids[0] + "\n")
    res = CliRunner().invoke(main, ["forget", str(run), "--requests", str(req)])
    assert res.exit_code == 0, res.output
    names = [p.name for p in (run / "releases").glob("*.npy")]
    assert len(names) == 1
    meta = json.loads((run / "releases" / names[0].replace(".npy", ".json")).read_text())
    assert not any(r in json.dumps(meta) for r in ids), "the release metadata names no record"
    guessable = {hashlib.sha256(f"{r}\n".encode()).hexdigest() for r in ids}
    guessable |= {hashlib.sha256(r.encode()).hexdigest() for r in ids}
    assert not {n.removesuffix(".npy") for n in names} & guessable
    assert all(r not in n for n in names for r in ids)
    again = CliRunner().invoke(main, ["forget", str(run), "--requests", str(req)])
    assert again.exit_code == 0 and "already applied" in again.output       # still idempotent


def test_release_temporaries_of_a_killed_forget_are_removed(run_dir, tmp_path):
    run, ids = run_dir
    (run / "releases").mkdir()
    stale = run / "releases" / ".req-0123.npy.k2j3h4"
    stale.write_bytes(b"half a release")
    req = tmp_path / "one.txt"
    req.write_text(ids[1] + "\n")
    res = CliRunner().invoke(main, ["forget", str(run), "--requests", str(req)])
    assert res.exit_code == 0, res.output
    assert not stale.exists()
    assert not [p.name for p in (run / "releases").iterdir() if p.name.startswith(".")]


def test_jsonl_requests_delete_the_same_records(run_dir, tmp_path):
    run, ids = run_dir
    req = tmp_path / "two.jsonl"
    req.write_text(json.dumps(ids[2]) + "\n\n" + json.dumps(ids[3]) + "\n")
    res = CliRunner().invoke(main, ["forget", str(run), "--requests", str(req)])
    assert res.exit_code == 0, res.output
    from unlearn_audit.deletion import DurableUnlearner

    with DurableUnlearner.open(run) as du:
        assert sorted(du.deleted_ids) == sorted(ids[2:4])
    plain = tmp_path / "two.txt"
    plain.write_text(f"{ids[3]}\n{ids[2]}\n")
    again = CliRunner().invoke(main, ["forget", str(run), "--requests", str(plain)])
    assert again.exit_code == 0 and "already applied" in again.output      # same ids, same keyed request id


def test_dataset_refuses_ids_with_line_breaks_at_load(tmp_path):
    from unlearn_audit.data import DataError, Dataset

    for rid, why in (("a\nb", "line break"), ("a\u2028b", "line break"), ("a\u202eb", "control character"),
                     (" a", "whitespace")):
        with pytest.raises(DataError, match=why):
            Dataset(x=np.zeros((2, 1), np.float32), y=np.array([0, 1]), ids=np.array([rid, "ok"]), name="t",
                    class_names=["0", "1"])


# ---------------------------------------------------------------------------------------------------------------------
# the tamper-evident ledger: crash safety kept
def test_a_commit_whose_anchoring_was_interrupted_is_recovered(run_dir, tmp_path):
    """A kill between the ledger's commit and the anchor's update leaves the anchor one request behind: that is a
    crash, not tampering, so the next open re-anchors (the chain prefix matches) and serves the next request."""
    from unlearn_audit.deletion import DurableUnlearner
    from unlearn_audit.deletion.service import ANCHOR_FILE

    run, ids = run_dir
    for k in (0, 1):
        (tmp_path / f"r{k}.txt").write_text(ids[k] + "\n")
        assert CliRunner().invoke(main, ["forget", str(run), "--requests", str(tmp_path / f"r{k}.txt")]).exit_code == 0
    anchor = run / "trained_run" / ANCHOR_FILE
    a = json.loads(anchor.read_text())
    assert a["n_applied"] == 2
    with DurableUnlearner.open(run) as du:
        first = du.ledger.chain_at(1)
        assert (du.ledger.head() == (2, a["head"]))
    anchor.write_text(json.dumps({**a, "n_applied": 1, "head": first}))        # as if killed before anchoring #2
    (tmp_path / "r2.txt").write_text(ids[2] + "\n")
    res = CliRunner().invoke(main, ["forget", str(run), "--requests", str(tmp_path / "r2.txt")])
    assert res.exit_code == 0, res.output
    assert json.loads(anchor.read_text())["n_applied"] == 3
    meta = sorted((run / "releases").glob("*.json"))
    assert len(meta) == 3 and sorted(json.loads(m.read_text())["applied_seq"] for m in meta) == [1, 2, 3]


def test_chain_covers_every_applied_row(tmp_path):
    from unlearn_audit.deletion import Ledger, LedgerError
    from unlearn_audit.deletion.ledger import chain_link, genesis

    with Ledger(tmp_path / "l.sqlite", base_model_hash="base") as led:
        for k in range(3):
            led.begin(f"r{k}", [f"id{k}"], "hfocu", model_hash_before=f"h{k}")
            led.commit(f"r{k}", model_hash_after=f"h{k + 1}", sigma=1.0, noise_seed=k, certificate={"k": k},
                       latency_ms=1.0)
        prev = genesis("base")
        for e in led.applied():
            prev = chain_link(prev, e)
            assert e.chain == prev
        assert led.head() == (3, prev)
        led.verify()
    con = __import__("sqlite3").connect(tmp_path / "l.sqlite")
    with con:
        con.execute("UPDATE requests SET noise_seed = 7 WHERE applied_seq = 2")
    con.close()
    with Ledger(tmp_path / "l.sqlite", base_model_hash="base") as led:
        with pytest.raises(LedgerError, match="hash chain"):
            led.verify()
