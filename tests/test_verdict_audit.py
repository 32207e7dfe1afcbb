"""The verdict on real data (digits, pinned seeds): it can fail, and it fails what it must (issue 13).

The per-example tests run the audit's own code path (``evidence.collect`` → ``verdict.decide``) on the default
digits split and forget set; identity is also run through the command line for its exit code.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unlearn_audit.audit import evidence
from unlearn_audit.audit.methods import resolve_method
from unlearn_audit.audit.pipeline import prepare_context
from unlearn_audit.audit.verdict import decide_forgetting
from unlearn_audit.config import config_from_dict

# Where the HF-OCU linearisation error is small against the seed-to-seed spread of retraining (small λ and η0).
ACCURATE = {"lr": 0.05, "decay": 0.998, "epochs": 20, "lam": 0.01}


def forgetting(methods: list[str], training: dict | None = None, pairs: int = 128,
               unlearning: dict | None = None):
    cfg = config_from_dict({"training": training or {}, "unlearning": {"methods": methods, **(unlearning or {})},
                            "audit": {"pairs": pairs}})
    ctx = prepare_context(cfg, lambda *_: None)
    res = evidence.collect(ctx, {m: resolve_method(m) for m in methods}, {}, n_pairs=pairs, margin=0.05, alpha=0.05,
                           delta=1e-5, n_bootstrap=1000)
    control = res.group(evidence.CONTROL).comparison
    return {m: decide_forgetting(res.group(m).comparison, control, alpha=0.05, margin=0.05) for m in methods}, res


@pytest.fixture(scope="module")
def default():
    """The default audit's data, training and forget set (digits, 11 forget records), 128 pairs."""
    return forgetting(["hfocu", "retrain", "identity", "neggrad"])


def test_exact_retraining_as_a_method_passes(default):
    answers, res = default
    assert answers["retrain"].status == "pass", answers["retrain"].reasons
    # the null is not flagged record by record either
    assert res.group("retrain").evidence["confidence"].flagged_fraction <= 0.05


def test_do_nothing_and_neggrad_fail(default):
    answers, res = default
    assert answers["identity"].status == "fail"
    assert answers["neggrad"].status != "pass"
    assert res.group("identity").evidence["confidence"].flagged_fraction > 0.5


def test_hfocu_at_the_certifiable_default_leaves_a_detectable_trace(default):
    """Measured, and reported as a finding: at the default (λ = 0.15, chosen so that the certified release keeps
    its accuracy) retraining from different seeds lands in nearly the same place, and HF-OCU's first-order error is
    larger than that spread: the per-example test tells its noiseless state from retraining. The release, not the
    noiseless state, is what the certificate covers."""
    answers, _ = default
    assert answers["hfocu"].status == "fail", answers["hfocu"].reasons


def test_hfocu_noiseless_passes_where_its_linearisation_is_accurate():
    answers, _ = forgetting(["hfocu"], ACCURATE, pairs=64, unlearning={"forget_fraction": 0.1})
    assert answers["hfocu"].status == "pass", answers["hfocu"].reasons


def test_identity_fails_through_the_command_line(tmp_path):
    cfg = tmp_path / "identity.toml"
    cfg.write_text('[unlearning]\nmethods = ["identity"]\n'
                   '[audit]\nattacks = ["loss"]\nsweep_sigmas = [0.0]\npairs = 32\nbootstrap = 500\n')
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "unlearn_audit.cli", "audit", "--config", str(cfg), "--out",
                           str(out), "--quiet", "--no-pdf"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    v = json.loads((out / "results.json").read_text())["verdict"]
    assert v["method"] == "identity" and v["failed_questions"] == ["forgetting"]
