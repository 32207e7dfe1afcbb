"""`forget` certifies a release with the same a-posteriori replay as the audit (issue 14): a trained run keeps the
recorded weight trajectory and the config that rebuilds its training data (checked against a digest, never the data
itself), so the deletion service's Δ equals the unlearner's; without them it falls back to the looser plug-in form
and says why."""

import numpy as np
import pytest

from unlearn_audit.config import config_from_dict
from unlearn_audit.deletion import DurableUnlearner, load_trained_run, save_trained_run
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.inputs import build_inputs


@pytest.fixture(scope="module")
def fitted():
    cfg = config_from_dict({"seed": 3, "training": {"epochs": 6}})
    inp = build_inputs(cfg)
    un = HFOCUUnlearner(inp.model, inp.sgd).fit(inp.x, inp.y, inp.ids)
    return cfg, inp, un


def test_saved_run_replays_the_certificate_like_the_unlearner(fitted, tmp_path):
    cfg, inp, un = fitted
    path = save_trained_run(tmp_path / "run", un, data_config=cfg.model_dump(mode="json"))
    run = load_trained_run(path)
    assert run.trajectory is not None and run.trajectory.shape == (un.schedule_.n_steps, inp.model.dim)
    pos = np.sort(np.random.default_rng(0).choice(len(inp.x), size=6, replace=False))
    mine = run.certificate(pos)
    ref = un.certificate(inp.ids[pos].tolist())
    assert run.replay_unavailable is None and "replay" in mine.bound
    assert mine.sensitivity == pytest.approx(ref.sensitivity, rel=1e-6)
    plug = load_trained_run(save_trained_run(tmp_path / "plain", un)).certificate(pos)        # no data config
    assert "plug-in" in plug.bound and plug.sensitivity > 3 * mine.sensitivity


def test_forget_releases_with_the_replayed_bound(fitted, tmp_path):
    cfg, inp, un = fitted
    path = save_trained_run(tmp_path / "run", un, data_config=cfg.model_dump(mode="json"))
    ids = inp.ids[[4, 9, 17]].tolist()
    with DurableUnlearner.open(path, ledger_path=tmp_path / "ledger.db") as du:
        receipt = du.forget(ids, epsilon=1.0, delta=1e-5, noise_seed=1)
        assert "replay" in receipt.certificate["bound"]
        assert receipt.sensitivity == pytest.approx(un.certificate(ids).sensitivity, rel=1e-6)


def test_changed_data_falls_back_to_the_plug_in_form_and_says_why(fitted, tmp_path):
    cfg, inp, un = fitted
    other = cfg.model_dump(mode="json")
    other["seed"] = 4                                               # another split: not the data it was trained on
    run = load_trained_run(save_trained_run(tmp_path / "run", un, data_config=other))
    cert = run.certificate(np.array([1, 2]))
    assert "plug-in" in cert.bound
    assert "differ from the data this run was trained on" in run.replay_unavailable
    broken = cfg.model_dump(mode="json")
    broken["data"]["dataset"] = "csv"                                # needs a path: cannot be rebuilt
    run = load_trained_run(save_trained_run(tmp_path / "run2", un, data_config=broken))
    assert "plug-in" in run.certificate(np.array([1])).bound
    assert run.replay_unavailable.startswith("the training data could not be rebuilt")


def test_a_plugin_model_is_never_imported_to_serve_a_deletion(fitted, tmp_path):
    cfg, inp, un = fitted
    plugged = cfg.model_dump(mode="json")
    plugged["model"]["factory"] = "nowhere_to_be_found:factory"         # importing it would fail loudly
    run = load_trained_run(save_trained_run(tmp_path / "run", un, data_config=plugged))
    assert "plug-in" in run.certificate(np.array([3])).bound
    assert "never imports plugin code" in run.replay_unavailable
