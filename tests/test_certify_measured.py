"""The a-posteriori certificate for models without analytic constants (issue 14, DESIGN §2.4b "other models"): the
same recursion with ρ_t (Lanczos on the retained batch's Hessian along the replay) and the Hessian-Lipschitz
constant M (finite-difference probes along the replay) measured. Labelled measured, not rigorous; it must still
cover the actual distance to the exact retrain on real data, be far tighter than the worst-case bound, refuse
regimes where it blows up, and never be used for a model with kinks (ReLU, max-pool), where it is measured wrong."""

import numpy as np
import pytest
import torch

from unlearn_audit.certify import NotCertifiable
from unlearn_audit.data import load_dataset, prepare, split_dataset
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.models import build_model
from unlearn_audit.training import SGDConfig, retrain_without


def _data(name, n, seed, image=False):
    ds = load_dataset(name)
    sp = prepare(split_dataset(ds, train_fraction=0.6, test_fraction=0.2, population_fraction=0.2, seed=seed,
                               max_train=n), standardize=not image, unit_norm=not image)
    tr = sp.train
    return torch.as_tensor(tr.x, dtype=torch.float32), torch.as_tensor(tr.y), np.asarray(tr.ids), tr.feature_shape, \
        ds.n_classes


@pytest.mark.parametrize("name,n,lam,lr,epochs,batch,k", [
    ("wine", 100, 0.005, 0.01, 20, 64, 5),            # the HF-OCU paper's wine MLP setting, shortened
    ("digits", 150, 0.01, 0.1, 3, 32, 3),
    ("breast_cancer", 150, 0.05, 0.3, 3, 32, 8),
])
def test_measured_bound_covers_the_retrain_and_beats_the_worst_case(name, n, lam, lr, epochs, batch, k):
    x, y, ids, shape, n_classes = _data(name, n, 0)
    cfg = SGDConfig(epochs=epochs, batch_size=batch, lr=lr, decay=0.995, lam=lam, seed=3)
    model = build_model("mlp", shape, n_classes, seed=3, hidden=16)
    un = HFOCUUnlearner(model, cfg).fit(x, y, ids)
    forget = np.random.default_rng(5).choice(len(x), size=k, replace=False)
    un.delete(ids[forget].tolist())
    actual = float((un.state_.double() - retrain_without(model, x, y, cfg, un.schedule_, forget).double()).norm())
    cert = un.certificate()
    worst = un.certificate(bound="worst_case")
    assert "MEASURED" in cert.bound and "not rigorous" in cert.bound
    for key in ("rho_max", "M", "lam_min", "eps_T"):
        assert cert.constants[key]["source"] == "measured", key
    assert cert.constants["M"]["value"] > 0
    assert cert.sensitivity >= actual > 0
    assert cert.sensitivity < worst.sensitivity / 20          # measured worst-case bound: ~700x to 2e5x the actual


def test_exploding_measured_regime_is_refused():
    """A large step on a non-convex MLP with many deletions: the measured growth outruns the contraction."""
    x, y, ids, shape, n_classes = _data("digits", 150, 1)
    cfg = SGDConfig(epochs=6, batch_size=16, lr=2.0, decay=1.0, lam=1e-4, seed=1)
    un = HFOCUUnlearner(build_model("mlp", shape, n_classes, seed=1, hidden=16), cfg).fit(x, y, ids)
    un.delete(ids[:40].tolist())
    with pytest.raises(NotCertifiable, match="not certifiable in this regime.*non-convex"):
        un.certificate()
    assert un.certificate(bound="worst_case").sensitivity > 0


def test_models_with_kinks_keep_the_worst_case_bound():
    """The paper's ReLU/max-pool CNN: no Hessian-Lipschitz constant exists, so no trajectory is kept for the
    a-posteriori replay and the certificate is the worst-case recursion with measured constants (which covers the
    actual distance)."""
    x, y, ids, shape, n_classes = _data("mnist5000", 64, 0, image=True)
    cfg = SGDConfig(epochs=1, batch_size=32, lr=0.05, decay=1.0, lam=1e-3, seed=0)
    model = build_model("cnn", shape, n_classes, seed=0)
    assert not model.smooth and build_model("mlp", shape, n_classes).smooth
    un = HFOCUUnlearner(model, cfg, mode="candidates", candidates=ids[:3].tolist()).fit(x, y, ids)
    assert un.weight_trajectory_ is None
    un.delete(ids[:2].tolist())
    cert = un.certificate()
    assert cert.bound.startswith("first-order recursion") and cert.constants["rho_max"]["source"] == "measured"
    actual = float((un.state_.double() - retrain_without(model, x, y, cfg, un.schedule_,
                                                         np.array([0, 1])).double()).norm())
    assert cert.sensitivity >= actual
