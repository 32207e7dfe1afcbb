"""Bring your own model, data and unlearning method (issue 18): the worked example through the command line, a
plugin judged exactly like the built-in it wraps, weights unlearned outside the tool (a single model: can fail,
never pass), the single-model test's calibration, and what a plugin's provenance records. Bad plugins are in the
bad-input table (tests/test_hostile_input.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from unlearn_audit.cli import main
from unlearn_audit.stats.per_example import single_model_test

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _run(args: list[str]):
    res = CliRunner().invoke(main, args)
    assert res.exit_code in (0, 1, 3), (res.exit_code, res.stderr, repr(res.exception))
    return res


def test_example_plugin_audit_end_to_end(tmp_path, monkeypatch):
    """examples/plugin/audit.toml, as the README runs it: the custom architecture and the custom method, judged by
    the per-example test; the exit code is the verdict's; the provenance of both is recorded."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    res = _run(["audit", "--config", "examples/plugin/audit.toml", "--out", str(out), "--no-pdf", "--quiet"])
    r = json.loads((out / "results.json").read_text())
    assert res.exit_code == r["verdict"]["exit_code"]
    name = "my_unlearning:GradientAscent"
    assert r["verdict"]["method"] == name == r["primary_method"]
    sha = hashlib.sha256((ROOT / "examples/plugin/my_unlearning.py").read_bytes()).hexdigest()
    assert r["model"]["kind"] == "custom"
    assert r["model"]["plugin"] == {**r["model"]["plugin"], "spec": "my_unlearning:tanh_mlp", "sha256": sha,
                                    "version": "1.0", "module": "my_unlearning"}
    assert r["methods"][name]["plugin"]["sha256"] == sha
    assert sha in r["model"]["description"]
    # judged like a built-in: distance to retrain, accuracy, the attack, and a per-example group over the pairs
    m = r["methods"][name]
    assert m["distance_to_retrain"] > 0 and 0 <= m["accuracy"]["test"] <= 1
    groups = {(g["name"], g["state"]): g for g in r["per_example"]["groups"]}
    assert (name, "noiseless") in groups and ("identity", "noiseless") in groups
    assert "vs_null" in groups[(name, "noiseless")]["signals"]["confidence"]
    assert any(a["target"] == name for a in r["attacks"] if "target" in a) or \
        any(name in json.dumps(a) for a in r["attacks"])
    spec = json.loads((out / "trained_run" / "spec.json").read_text())
    assert spec["model"]["factory"] == "my_unlearning:tanh_mlp" and spec["model"]["plugin"]["sha256"] == sha
    assert not list((ROOT / "examples" / "plugin").glob("__pycache__"))   # importing wrote nothing there


WRAP = '''
from unlearn_audit.audit.methods import NegGrad


class Wrapped(NegGrad):
    """The built-in neggrad, as a plugin."""
'''


def test_plugin_is_judged_exactly_like_the_builtin_it_wraps(tmp_path, monkeypatch):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "h18_wrapped_neggrad.py").write_text(WRAP)
    cfg = tmp_path / "c.toml"
    cfg.write_text('seed = 2\n[training]\nepochs = 3\n[unlearning]\nmode = "candidates"\n'
                   'methods = ["neggrad", "h18_wrapped_neggrad:Wrapped"]\n[audit]\npairs = 8\nattacks = ["loss"]\n'
                   'bootstrap = 200\n')
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    _run(["audit", "--config", str(cfg), "--out", str(out), "--no-pdf", "--quiet", "--plugin-path",
          str(tmp_path / "plug")])
    r = json.loads((out / "results.json").read_text())
    a, b = r["methods"]["neggrad"], r["methods"]["h18_wrapped_neggrad:Wrapped"]
    assert a["distance_to_retrain"] == b["distance_to_retrain"] and a["accuracy"] == b["accuracy"]
    groups = {(g["name"], g["state"]): g for g in r["per_example"]["groups"]}
    ga = groups[("neggrad", "noiseless")]["signals"]["confidence"]["vs_null"]
    gb = groups[("h18_wrapped_neggrad:Wrapped", "noiseless")]["signals"]["confidence"]["vs_null"]
    assert ga["method_advantage"] == gb["method_advantage"] and ga["decision"] == gb["decision"]
    w_a = np.load(out / "artefacts" / "weights_neggrad_internal.npy")
    w_b = np.load(out / "artefacts" / "weights_h18_wrapped_neggrad:Wrapped_internal.npy")
    np.testing.assert_array_equal(w_a, w_b)
    assert "plugin" in b and "plugin" not in a


def _external_audit(tmp_path, name: str, weights: str, *extra: str) -> dict:
    out = tmp_path / name
    _run(["audit", "--config", str(tmp_path / "ext.toml"), "--out", str(out), "--no-pdf", "--quiet",
          "--unlearned-weights", str(tmp_path / weights), *extra])
    return json.loads((out / "results.json").read_text())


def test_weights_unlearned_elsewhere_can_fail_but_never_pass(tmp_path, monkeypatch):
    """The exported trained run (precompute), unlearned outside the tool: doing nothing fails (the single-model
    test has power against it); exact retraining (the best any method can do) is inconclusive, never a pass."""
    from unlearn_audit.config import load_config
    from unlearn_audit.inputs import build_inputs
    from unlearn_audit.training import Schedule, retrain_without

    monkeypatch.setenv("UNLEARN_AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "ext.toml").write_text(
        'seed = 4\n[training]\nepochs = 10\n[unlearning]\nmode = "candidates"\nmethods = ["identity"]\n'
        f'forget_file = "{tmp_path / "forget.txt"}"\n[audit]\npairs = 32\nattacks = ["loss"]\nbootstrap = 200\n')
    inp = build_inputs(load_config(None).model_copy(update={"seed": 4}))
    forget = [str(inp.ids[i]) for i in range(3, 500, 33)]
    (tmp_path / "forget.txt").write_text("\n".join(forget) + "\n")
    res = CliRunner().invoke(main, ["precompute", "--config", str(tmp_path / "ext.toml"), "--out",
                                    str(tmp_path / "pre")])
    assert res.exit_code == 0, res.stderr
    pre = tmp_path / "pre"
    np.save(tmp_path / "nothing.npy", np.load(pre / "weights.npy"))     # "unlearned" by doing nothing
    # "unlearned" exactly, outside the audit: the trained run's schedule replayed without the forget set
    cfg = load_config(tmp_path / "ext.toml")
    inp = build_inputs(cfg)
    sgd = inp.sgd
    sched = Schedule.make(len(inp.x), sgd.epochs, sgd.batch_size, sgd.lr, sgd.decay, sgd.seed)
    assert sched.digest() == json.loads((pre / "spec.json").read_text())["schedule_digest"]
    pos = np.asarray([list(inp.ids).index(r) for r in forget])
    w_re = retrain_without(inp.model, inp.x, inp.y, sgd, sched, pos)
    np.save(tmp_path / "retrained.npy", w_re.numpy())             # "unlearned" exactly

    r = _external_audit(tmp_path, "nothing", "nothing.npy", "--trained-run", str(pre))
    assert r["verdict"]["method"] == "external" and r["verdict"]["status"] == "fail"
    assert r["methods"]["external"]["external"]["trained_run_checked"] is True
    # the audit here trains on 1 thread, precompute on all cores: the same model up to float32 round-off
    assert r["methods"]["external"]["external"]["base_relative_difference"] < 1e-4
    single = r["per_example"]["single_model"]["external"]
    assert single["p_value"] < 0.05 and single["control_power"] > 0.5
    assert r["methods"]["external"]["distance_to_retrain"] == pytest.approx(
        r["methods"]["original"]["distance_to_retrain"], rel=1e-6)

    r = _external_audit(tmp_path, "exact", "retrained.npy", "--trained-run", str(pre))
    assert r["methods"]["external"]["distance_to_retrain"] < 1e-5
    assert r["verdict"]["status"] == "inconclusive" and r["verdict"]["exit_code"] == 3
    assert any("never" in s or "not its absence" in s for s in r["verdict"]["forgetting"]["reasons"])
    assert not any(g["name"] == "external" for g in r["per_example"]["groups"])    # no fake paired evidence


def test_external_weights_from_another_model_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "a.toml").write_text('seed = 5\n[training]\nepochs = 2\n')
    res = CliRunner().invoke(main, ["precompute", "--config", str(tmp_path / "a.toml"), "--out", str(tmp_path / "pre")])
    assert res.exit_code == 0, res.stderr
    from unlearn_audit.config import load_config
    from unlearn_audit.inputs import build_inputs

    ids = build_inputs(load_config(None).model_copy(update={"seed": 6})).ids
    (tmp_path / "forget.txt").write_text(f"{ids[0]}\n{ids[1]}\n")
    (tmp_path / "b.toml").write_text(f'seed = 6\n[training]\nepochs = 2\n[unlearning]\nmode = "candidates"\n'
                                     f'forget_file = "{tmp_path / "forget.txt"}"\n')
    np.save(tmp_path / "w.npy", np.load(tmp_path / "pre" / "weights.npy"))
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["audit", "--config", str(tmp_path / "b.toml"), "--out", str(out), "--no-pdf",
                                    "--quiet", "--unlearned-weights", str(tmp_path / "w.npy"), "--trained-run",
                                    str(tmp_path / "pre")])
    assert res.exit_code == 2 and "holds another model" in res.stderr and len(res.stderr.splitlines()) == 1
    assert not out.exists()
    w = np.load(tmp_path / "pre" / "weights.npy")
    np.save(tmp_path / "pre" / "weights.npy", w * np.float32(1.00001))     # tampered with: hash no longer matches
    res = CliRunner().invoke(main, ["audit", "--config", str(tmp_path / "b.toml"), "--out", str(out), "--no-pdf",
                                    "--quiet", "--unlearned-weights", str(tmp_path / "w.npy"), "--trained-run",
                                    str(tmp_path / "pre")])
    assert res.exit_code == 2 and "does not match its spec.json" in res.stderr, res.stderr
    assert not out.exists()


def test_single_model_test_is_calibrated_and_has_power():
    """Exchangeability makes p = (1 + #{null ≥ stat})/(N + 1) exact: a model drawn like the null models is
    flagged at most about α of the time; a shifted one (a trace) nearly always."""
    rng = np.random.default_rng(0)
    n_rec, n = 20, 39
    flagged = shifted = 0
    trials = 200
    for _ in range(trials):
        ref = rng.normal(size=(n, n_rec))
        null = rng.normal(size=(n, n_rec))
        model = rng.normal(size=n_rec)
        flagged += single_model_test(model, null, ref, alpha=0.05).decision() == "different"
        shifted += single_model_test(model + 1.0, null, ref, alpha=0.05).decision() == "different"
    assert flagged / trials <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / trials)
    assert shifted / trials > 0.9
    t = single_model_test(rng.normal(size=n_rec) + 1, rng.normal(size=(n, n_rec)), rng.normal(size=(n, n_rec)),
                          control=rng.normal(size=(n, n_rec)) + 1, alpha=0.05)
    assert t.control_power is not None and t.control_power > 0.8 and t.p_value == pytest.approx(1 / (n + 1))
