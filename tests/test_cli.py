"""The CLI end to end on real digits data, and its handling of bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from unlearn_audit.cli import main

SMALL = """
seed = 1
[data]
dataset = "digits"
[training]
epochs = 4
lam = 0.01
lr = 1.5
[unlearning]
forget_fraction = 0.1
requests = 5
[privacy]
epsilon = 2.0
delta = 1e-5
bound = "worst_case"
[audit]
sweep_sigmas = [0.0, 0.1]
pairs = 16
bootstrap = 500
"""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    cfg = d / "small.toml"
    cfg.write_text(SMALL)
    out = d / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "unlearn_audit.cli", "audit", "--config", str(cfg), "--out",
                           str(out), "--quiet", "--no-pdf"], capture_output=True, text=True, env=env, timeout=600)
    return proc, out


def test_audit_end_to_end(small_run):
    proc, out = small_run
    # At (epsilon=2, delta=1e-5) the worst-case certificate (Delta ~ 25) gives sigma ~ 50, which swamps the model:
    # the release question fails (a vacuous certificate), exit code 1. (Before the per-example verdict, the two
    # releases shared one noise draw and this run passed.)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in ("config.toml", "results.json", "report.html"):
        assert (out / name).is_file()
    r = json.loads((out / "results.json").read_text())
    assert r["schema_version"] == "2.0"
    assert r["data"]["dataset"] == "digits" and r["data"]["n_train"] > 0
    assert {"original", "retrain", "hfocu"} <= set(r["methods"])
    hf = r["methods"]["hfocu"]
    assert hf["distance_to_retrain"] < r["methods"]["original"]["distance_to_retrain"]
    assert hf["seconds_per_request"] > 0
    cert = r["certificate"]
    assert cert["epsilon"] == 2.0 and cert["delta"] == 1e-5 and cert["sigma"] > 0 and cert["sensitivity"] > 0
    for a in r["attacks"]:
        auc = a["auc"]
        assert auc["ci_low"] <= auc["auc"] <= auc["ci_high"]
        assert a["n_members"] == r["forget_set"]["n"] and a["n_nonmembers"] == r["data"]["n_population"]
    # 4 epochs at η0 = 1.5: the worst-case certificate's noise takes the release to chance: never a pass
    v = r["verdict"]
    assert v["status"] == "fail" and "release" in v["failed_questions"] and proc.returncode == 1
    assert "vacuous certificate" in v["release"]["reasons"][0]
    assert r["per_example"]["n_pairs"] == 16 and r["per_example"]["n_records"] == r["forget_set"]["n"]
    assert "verdict:" in proc.stdout
    # the resolved config round-trips
    from unlearn_audit.config import load_config

    assert load_config(out / "config.toml").training.epochs == 4


def test_report_rerenders_without_recomputing(small_run, tmp_path):
    _, out = small_run
    before = (out / "results.json").read_text()
    res = CliRunner().invoke(main, ["report", str(out), "--no-pdf"])
    assert res.exit_code == 0, res.output
    assert (out / "results.json").read_text() == before
    assert "Verdict" in (out / "report.html").read_text()


def _run(args):
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("toml_text, expected", [
    ('[data]\ndataset = "nope"\n', "data.dataset: unknown dataset 'nope'"),
    ("[privacy]\nepsilon = -1.0\n", "privacy.epsilon"),
    ("[training\nepochs = 3\n", "malformed TOML"),
    ("[training]\nepochs = 'many'\n", "training.epochs"),
    ("colour = 'blue'\n", "colour: unknown key"),
])
def test_bad_config_exits_2_with_one_line(tmp_path, toml_text, expected):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml_text)
    out = tmp_path / "out"
    res = _run(["audit", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert len(lines) == 1 and expected in lines[0], res.output
    assert not out.exists()


def test_non_empty_out_dir_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    res = _run(["audit", "--out", str(out), "--quiet"])
    assert res.exit_code == 2
    assert "not empty" in res.output and "--force" in res.output
    assert (out / "keep.txt").read_text() == "precious"


def test_calibrate_prints_sigma():
    res = _run(["calibrate", "--epsilon", "1", "--delta", "1e-5", "--sensitivity", "1"])
    assert res.exit_code == 0 and abs(float(res.output) - 3.731) < 1e-3
    res = _run(["calibrate", "--epsilon", "0", "--delta", "1e-5", "--sensitivity", "1"])
    assert res.exit_code == 2 and "epsilon" in res.output


def test_unexpected_error_is_exit_4_with_one_line_and_a_saved_traceback(monkeypatch):
    """A bug (an exception no command maps) must not look like "audit failed" (exit 1) or dump a traceback."""
    import unlearn_audit.certify as certify

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(certify, "calibrate", broken)
    res = CliRunner().invoke(main, ["calibrate", "--epsilon", "1", "--delta", "1e-5", "--sensitivity", "1"])
    assert res.exit_code == 4
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("internal error: RuntimeError: simulated bug second line")
    path = lines[0].split("traceback in ")[1].split(";")[0]
    with open(path, encoding="utf-8") as f:
        saved = f.read()
    os.unlink(path)
    assert "Traceback" in saved and "simulated bug" in saved
    monkeypatch.undo()
    ok = CliRunner().invoke(main, ["calibrate", "--epsilon", "0", "--delta", "1e-5", "--sensitivity", "1"])
    assert ok.exit_code == 2                           # input errors keep their own code
