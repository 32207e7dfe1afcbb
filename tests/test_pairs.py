"""The paired models behind the per-example evidence (DESIGN §4b): the closed form for softmax regression computes
the same originals, HF-OCU approximators and exact retrains as the vmapped jvp of the update map, and the originals
and retrains are the models single-model training gives for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_audit.audit import pairs
from unlearn_audit.models import build_model
from unlearn_audit.training import Schedule, SGDConfig, retrain_without, train_sgd
from unlearn_audit.training.sgd import starting_point


def _setting(digits_train, normalisation, batch_size):
    x, y, _ = digits_train
    x, y = x[:300].double(), y[:300]
    model = build_model("softmax", (64,), 10, seed=0)
    sgd = SGDConfig(epochs=3, batch_size=batch_size, lr=0.5, decay=0.99, lam=0.15, seed=0)
    seeds = np.array([11, 12, 13])
    schedules = [Schedule.make(len(x), sgd.epochs, sgd.batch_size, sgd.lr, sgd.decay, int(s)) for s in seeds]
    w0 = torch.stack([starting_point(model, sgd, build_model("softmax", (64,), 10, seed=int(s)).initial_weights(),
                                     torch.float64) for s in seeds])
    forget = torch.zeros(len(x), dtype=torch.float64)
    # whole batches of the first model's schedule (its `mean` retrain skips them: an emptied batch) and some records
    for t in (0, 3, 7):
        forget[torch.as_tensor(schedules[0].batches[t])] = 1.0
    forget[torch.arange(100, 160, 4)] = 1.0
    emptied = sum(bool(forget[torch.as_tensor(b)].all()) for b in schedules[0].batches)
    assert emptied >= 3
    return model, x, y, sgd, schedules, w0, forget, seeds


@pytest.mark.parametrize("normalisation, batch_size", [("sum", 32), ("mean", 32), ("mean", 4), ("sum", 4)])
def test_softmax_closed_form_equals_the_vmapped_jvp(digits_train, normalisation, batch_size):
    model, x, y, sgd, schedules, w0, forget, _ = _setting(digits_train, normalisation, batch_size)
    fast = pairs._softmax_closed_form(model, x, y, sgd, schedules, w0, forget, normalisation, True, None)
    slow = pairs._vmapped_jvp(model, x, y, sgd, schedules, w0, forget, normalisation, True, None)
    for name, a, b in zip(("original", "approximator", "retrain"), fast, slow):
        assert a is not None and b is not None
        scale = float(b.abs().max())
        assert scale > 0.01, name                                   # a real model and a real approximator
        assert float((a - b).abs().max()) <= 1e-10 * max(scale, 1.0), (name, float((a - b).abs().max()))
    reference_only = pairs._softmax_closed_form(model, x, y, sgd, schedules, w0, forget, normalisation, False, None)
    assert reference_only[0] is None and reference_only[1] is None
    torch.testing.assert_close(reference_only[2], fast[2], rtol=0, atol=0)


@pytest.mark.parametrize("normalisation, batch_size", [("sum", 32), ("mean", 4)])
def test_paired_models_are_the_single_models_of_their_seeds(digits_train, normalisation, batch_size):
    """Model i of the batch is the model train_sgd gives for seed i, and its retrain the one retrain_without gives
    (``mean``: emptied batches skipped, computed there independently); HF-OCU's unlearned model is closer to the
    ``sum`` retrain than the original is (a first-order approximation of it)."""
    model, x, y, sgd, schedules, w0, forget, seeds = _setting(digits_train, normalisation, batch_size)
    init = lambda s: build_model("softmax", (64,), 10, seed=int(s)).initial_weights()            # noqa: E731
    positions = np.nonzero(forget.numpy())[0]
    got = pairs.train_paired(model, x, y, sgd, positions, seeds, init, normalisation=normalisation,
                             dtype=torch.float64)
    for i, s in enumerate(seeds):
        cfg = SGDConfig(**{**sgd.__dict__, "seed": int(s)})
        single = build_model("softmax", (64,), 10, seed=int(s))
        trained = train_sgd(single, x, y, cfg, dtype=torch.float64)
        assert trained.schedule.digest() == got.schedules[i].digest()
        torch.testing.assert_close(got.original[i], trained.weights, rtol=1e-9, atol=1e-10)
        retrained = retrain_without(single, x, y, cfg, trained.schedule, positions, normalisation=normalisation,
                                    dtype=torch.float64)
        torch.testing.assert_close(got.retrain[i], retrained, rtol=1e-9, atol=1e-10)
        if normalisation == "sum":                    # the retrain HF-OCU approximates (DESIGN §2.3)
            gap_original = float((got.original[i] - got.retrain[i]).norm())
            gap_hfocu = float((got.hfocu[i] - got.retrain[i]).norm())
            assert gap_hfocu < 0.5 * gap_original, (gap_hfocu, gap_original)     # 0.28 with 30% of records forgotten
