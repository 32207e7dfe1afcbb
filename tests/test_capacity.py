"""Deletion capacity (issue 14): the search finds the budget boundary, the unlearner's capacity on real data is the
boundary of its own releases' accuracy, and ``forget`` reports the remaining capacity and exits 5 once a retrain is
due (the request is still applied and released, and the ledger row records the capacity)."""

import json
import math
import sqlite3

import pytest
import torch
from click.testing import CliRunner

from unlearn_audit.certify.capacity import (
    CapacityPoint,
    deletion_capacity,
    release_sigma_budget,
    sigma_budget,
    unlearner_capacity,
)
from unlearn_audit.cli import RETRAIN_DUE, main
from unlearn_audit.data import load_dataset, prepare, split_dataset
from unlearn_audit.deletion import save_trained_run
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.models import build_model
from unlearn_audit.training import SGDConfig

torch.set_num_threads(1)


@pytest.mark.parametrize("boundary, length", [(0, 50), (1, 50), (17, 50), (49, 50), (50, 50), (1, 1)])
def test_search_finds_the_boundary_of_a_monotone_budget(boundary, length):
    calls = []

    def evaluate(k):
        calls.append(k)
        return CapacityPoint(k, float(k), float(k), 0.9, 0.9 if k <= boundary else 0.5, k <= boundary)

    cap = deletion_capacity(evaluate, length, epsilon=1.0, delta=1e-5, max_accuracy_loss=0.02)
    assert cap.capacity == boundary
    assert cap.exhausted_stream == (boundary == length)
    assert len(set(calls)) == len(calls) <= 20                  # geometric steps + bisection, no re-evaluation
    assert [p.n_deleted for p in cap.points] == sorted(calls)


def test_sigma_budget_is_the_accuracy_boundary():
    acc = lambda s: 0.9 - 0.5 * s                                # noqa: E731  (monotone in σ)
    s = sigma_budget(acc, 0.9, 0.02)
    assert acc(s) >= 0.88 > acc(s * 1.05)


@pytest.fixture(scope="module")
def digits_fit():
    ds = load_dataset("digits")
    sp = prepare(split_dataset(ds, train_fraction=0.3, test_fraction=0.2, population_fraction=0.5, seed=0),
                 standardize=True, unit_norm=True)
    tr, te = sp.train, sp.test
    x, y = torch.as_tensor(tr.x, dtype=torch.float32), torch.as_tensor(tr.y)
    model = build_model("softmax", tr.feature_shape, ds.n_classes, seed=0)
    un = HFOCUUnlearner(model, SGDConfig(epochs=10, batch_size=32, lr=0.5, decay=0.995, lam=0.15, seed=0)).fit(
        x, y, tr.ids)
    return un, torch.as_tensor(te.x, dtype=torch.float32), torch.as_tensor(te.y), [str(i) for i in tr.ids]


def test_unlearner_capacity_on_digits_is_the_boundary_of_its_releases(digits_fit):
    un, xt, yt, _ = digits_fit
    cap = unlearner_capacity(un, xt, yt, epsilon=1.0, delta=1e-5, max_accuracy_loss=0.02, seed=3)
    assert 1 <= cap.capacity < cap.stream_length
    by_k = {p.n_deleted: p for p in cap.points}
    inside, outside = by_k[cap.capacity], by_k[cap.capacity + 1]
    assert inside.within_budget and inside.released_accuracy >= inside.noiseless_accuracy - 0.02
    assert not outside.within_budget
    assert un.deleted_ == []                                     # the state was not touched
    # a stricter budget serves fewer deletions
    strict = unlearner_capacity(un, xt, yt, epsilon=1.0, delta=1e-5, max_accuracy_loss=0.0, seed=3)
    assert strict.capacity <= cap.capacity


def _run_with_budget(un, tmp, sigma_budget_value):
    un.capacity_budget_ = {"sigma_budget": sigma_budget_value, "max_accuracy_loss": 0.02, "noiseless_accuracy": 0.85,
                           "noise_draws": 8, "n_test": 359}
    save_trained_run(tmp / "trained_run", un)
    del un.capacity_budget_
    return tmp


def test_forget_reports_capacity_and_exits_5_when_a_retrain_is_due(digits_fit, tmp_path):
    un, xt, yt, ids = digits_fit
    budget = release_sigma_budget(un, xt, yt, max_accuracy_loss=0.02)
    assert 0 < budget["sigma_budget"] < 1
    roomy = _run_with_budget(un, tmp_path / "roomy", 1e3)
    req = tmp_path / "one.txt"
    req.write_text(ids[5] + "\n")
    res = CliRunner().invoke(main, ["forget", str(roomy), "--requests", str(req)])
    assert res.exit_code == 0, res.output
    assert "deletion capacity: " in res.output and "more random deletions" in res.output
    con = sqlite3.connect(roomy / "ledger.sqlite")
    cert = json.loads(con.execute("SELECT certificate FROM requests").fetchone()[0])
    con.close()
    assert cert["capacity"]["retrain_due"] is False and cert["capacity"]["remaining_estimate"] >= 1
    # a budget below this release's σ: the request is applied and released, and a retrain is due
    tight = _run_with_budget(un, tmp_path / "tight", cert["sigma"] / 2)
    res = CliRunner().invoke(main, ["forget", str(tight), "--requests", str(req)])
    assert res.exit_code == RETRAIN_DUE == 5, res.output
    assert "capacity SPENT" in res.output and "a retrain is due" in res.output
    assert list((tight / "releases").glob("*.npy"))
    again = CliRunner().invoke(main, ["forget", str(tight), "--requests", str(req)])    # idempotent, still due
    assert again.exit_code == 5 and "already applied" in again.output
    assert math.isfinite(cert["sigma"])
