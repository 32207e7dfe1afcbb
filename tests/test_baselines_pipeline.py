"""Every baseline runs through the audit pipeline on a tiny digits config and appears in the results with all fields."""

from __future__ import annotations

import json

import pytest
import torch

from unlearn_audit.audit.methods import METHODS, resolve_method, run_method
from unlearn_audit.audit.pipeline import run_audit
from unlearn_audit.config import ConfigError, config_from_dict

torch.set_num_threads(1)
ALL = ["hfocu", "ns", "ij", "cns", "finetune", "neggrad", "dpsgd"]


@pytest.fixture(scope="module")
def audit():
    cfg = config_from_dict({
        "seed": 0, "model": {"kind": "softmax"},
        "training": {"epochs": 3, "batch_size": 32, "lr": 0.5},
        "unlearning": {"methods": ALL, "requests": 3, "forget_fraction": 0.05},
        "baselines": {"cns_depth": 200},
        "audit": {"attacks": ["loss"], "sweep_sigmas": [0.0], "pairs": 8, "bootstrap": 200}})
    results, _ = run_audit(cfg)
    return cfg, results


def test_config_accepts_the_baselines():
    assert set(ALL) <= set(METHODS)
    with pytest.raises(ConfigError, match="unlearning.methods"):
        config_from_dict({"unlearning": {"methods": ["newton"]}})
    with pytest.raises(ConfigError, match="baselines.solver"):
        config_from_dict({"baselines": {"solver": "lu"}})


def test_every_method_reported_with_all_fields(audit):
    cfg, res = audit
    json.dumps(res, allow_nan=False)
    for name in ALL:
        m = res["methods"][name]
        for key in ("distance_to_retrain", "accuracy", "sigma", "seconds_per_request", "precompute_seconds",
                    "storage_bytes", "certified", "certificate", "description"):
            assert key in m, (name, key)
        assert set(m["accuracy"]) == {"test", "forget", "retain"}
        assert m["distance_to_retrain"] >= 0 and m["precompute_seconds"] >= 0 and m["storage_bytes"] >= 0
        targets = {(a["target"], a["state"]) for a in res["attacks"]}
        assert (name, "noiseless") in targets
        assert any(e["method"] == name for e in res["equivalence"])
    for name in ("ns", "ij", "cns"):
        assert res["methods"][name]["latency_seconds"]["n_requests"] == cfg.unlearning.requests
    assert res["methods"]["ns"]["sigma"] == 0 and res["methods"]["ns"]["solver"].startswith("cholesky")
    assert res["methods"]["ij"]["storage_bytes"] == 650 * 650 * 8


def test_cns_certificate_in_results(audit):
    cfg, res = audit
    m = res["methods"]["cns"]
    cert = m["certificate"]
    assert m["certified"] and m["sigma"] == pytest.approx(cert["sigma"]) and m["sigma"] > 0
    assert cert["epsilon"] == cfg.privacy.epsilon and cert["delta"] == cfg.privacy.delta
    assert cert["sensitivity"] > 0 and cert["constants_kind"] == "measured constants"
    assert {"R", "M", "lambda_min", "lambda", "lissa_residual"} <= set(cert["constants"])
    assert ("cns", "released") in {(a["target"], a["state"]) for a in res["attacks"]}


def test_dpsgd_epsilon_in_results(audit):
    cfg, res = audit
    m = res["methods"]["dpsgd"]
    assert m["seconds_per_request"] == 0 and m["sigma"] == 0 and not m["certified"]
    assert 0 < m["certificate"]["epsilon"] <= cfg.privacy.epsilon + 1e-3
    assert m["dp_epsilon"] == m["certificate"]["epsilon"]


def test_candidates_mode_keeps_only_the_forget_set_and_unlearns_identically():
    """unlearning.mode = candidates (the forget set declared before training) stores |U| vectors instead of n, and
    gives the same unlearned model as mode all: approximators do not depend on which others are kept."""
    from unlearn_audit.audit.pipeline import prepare_context

    base = {"seed": 3, "training": {"epochs": 2, "batch_size": 32, "lr": 0.5},
            "unlearning": {"forget_fraction": 0.05}}
    ctx = {mode: prepare_context(config_from_dict({**base, "unlearning": {**base["unlearning"], "mode": mode}}),
                                 lambda *_: None) for mode in ("all", "candidates")}
    a, c = ctx["all"], ctx["candidates"]
    assert a.forget_ids == c.forget_ids and torch.equal(a.w_original, c.w_original)
    assert c.unlearner.storage_bytes() * 10 < a.unlearner.storage_bytes()
    out = {mode: run_method(resolve_method("hfocu"), ctx[mode]) for mode in ctx}
    assert out["candidates"].extra["mode"] == "candidates"
    gap = float((out["all"].weights - out["candidates"].weights).norm())
    assert gap < 1e-6 * float(out["all"].weights.norm())
    with pytest.raises(Exception, match="not among the declared candidates"):
        c.unlearner.delete([str(c.train_ids[i]) for i in range(len(c.train_ids))
                            if str(c.train_ids[i]) not in set(c.forget_ids)][:1])


def test_mean_normalisation_keeps_the_certificates_sum_reference_for_the_epsilon_check():
    """With unlearning.normalisation = mean the attacks compare with the mean retrain, but the empirical-ε check of
    the certificate must use the sum retrain, the model the certified bound Δ is about."""
    from unlearn_audit.training import retrain_without

    cfg = config_from_dict({"seed": 1, "training": {"epochs": 3, "batch_size": 32, "lr": 0.5},
                            "unlearning": {"normalisation": "mean", "forget_fraction": 0.1},
                            "audit": {"attacks": ["loss"], "sweep_sigmas": [0.0], "pairs": 8, "bootstrap": 200}})
    results, art = run_audit(cfg)
    ctx = art.context
    emp = results["empirical_epsilon"]
    assert emp["reference"].startswith("exact retrain, sum normalisation")
    w_sum = retrain_without(ctx.model, ctx.x, ctx.y, ctx.sgd, ctx.schedule, ctx.forget_positions,
                            normalisation="sum", dtype=ctx.unlearner.dtype)
    hf = results["methods"]["hfocu"]
    assert emp["distance"] == pytest.approx(float((art.context.unlearner.state_.double() - w_sum.double()).norm()))
    assert emp["distance"] != pytest.approx(hf["distance_to_retrain"])      # the attacks' reference is the mean one
    assert emp["distance"] <= results["certificate"]["sensitivity"]
