"""The certificate holds on real data (issue 4): for softmax regression on scikit-learn digits, over ≥ 200 random
(seed, forget set) trials of several sizes, the certified sensitivity Δ(U) is never below the measured distance
‖(w_T + Σ_{u∈U} a_u) − w^{−U}‖ to the exact ``sum``-normalised retrain. Prints the smallest ratio bound / actual."""

import time

import numpy as np
import torch

from unlearn_audit.data import load_dataset, prepare, split_dataset
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.models import build_model
from unlearn_audit.training import SGDConfig, retrain_without

torch.set_num_threads(1)

SEEDS = (0, 1, 2, 3)
# (λ, η_0, γ per step): both λ of the issue, large and small steps, and the degenerate γ = 1.
CONFIGS = ((0.01, 1.5, 1.0), (0.05, 0.5, 0.99), (0.01, 1.0, 0.995))
SIZES = (1, 5, 20, 50)
PER_SIZE = 5


def test_certified_sensitivity_never_below_measured_distance_on_digits():
    start = time.perf_counter()
    ds = load_dataset("digits")
    ratios = []
    for seed in SEEDS:
        sp = prepare(split_dataset(ds, train_fraction=0.6, test_fraction=0.2, population_fraction=0.2, seed=seed,
                                   max_train=600), standardize=True, unit_norm=True)
        tr = sp.train
        x = torch.as_tensor(tr.x, dtype=torch.float64)
        y = torch.as_tensor(tr.y, dtype=torch.int64)
        assert float(x.norm(dim=1).max()) <= 1.0 + 1e-9
        for lam, lr, decay in CONFIGS:
            model = build_model("softmax", tr.feature_shape, ds.n_classes, seed=seed)
            cfg = SGDConfig(epochs=3, batch_size=32, lr=lr, decay=decay, lam=lam, seed=seed)
            u = HFOCUUnlearner(model, cfg, dtype=torch.float64).fit(x, y, tr.ids)   # trained once per seed/config
            assert model.accuracy(u.weights_, x, y) > 0.8                            # it did learn
            rng = np.random.default_rng(1000 + seed)
            for size in SIZES:
                for _ in range(PER_SIZE):
                    pos = rng.choice(len(x), size, replace=False)
                    ids = [str(tr.ids[p]) for p in pos]
                    w_hf = u.weights_ + u.approximator_sum(ids)
                    w_re = retrain_without(model, x, y, cfg, u.schedule_, pos, normalisation="sum",
                                           dtype=torch.float64)
                    actual = float((w_hf - w_re).norm())
                    cert = u.certificate(ids)
                    assert cert.n_forget == size and cert.reference == "sum"
                    ratios.append((cert.sensitivity / actual if actual > 0 else np.inf, cert.sensitivity, actual,
                                   seed, lam, lr, decay, size))
    worst = min(ratios)
    n = len(ratios)
    print(f"\n{n} trials on digits (softmax regression, sum retrain): smallest bound/actual = {worst[0]:.1f} "
          f"(Δ={worst[1]:.4g}, actual={worst[2]:.4g}, seed={worst[3]}, λ={worst[4]}, η0={worst[5]}, γ={worst[6]}, "
          f"|U|={worst[7]}); median ratio {np.median([r[0] for r in ratios]):.1f}; "
          f"{time.perf_counter() - start:.1f} s")
    assert n >= 200
    assert all(r[1] >= r[2] for r in ratios), [r for r in ratios if r[1] < r[2]][:3]
    assert worst[0] >= 1.0
