"""Cross-check of the analytic Gaussian calibration against Google's dp_accounting (a dev dependency).

Three independent routes in dp_accounting, δ = 1e-5, Δ = 1, ε in [0.05, 20]:
1. ``gaussian_mechanism.get_sigma_gaussian``: their exact σ solver (Balle & Wang Eq. 6, their own code).
2. ``GaussianPrivacyLoss.get_delta_for_epsilon``: the hockey-stick divergence from the mechanism's privacy-loss
   function (CDFs at the inverse privacy loss); exact, not discretised. Our σ must attain δ there, and a σ 1e-4
   relative smaller/larger must violate/satisfy it, i.e. the σ implied by their δ(ε) lies within 1e-4 of ours.
3. ``PLDAccountant`` with a ``GaussianDpEvent``: a discretised, pessimistic PLD. Its δ(ε) is an upper estimate, but
   for a single Gaussian event its error is far below what a 1e-4 relative change of σ does to δ, so the same
   bracket check applies (a few ε only: large-ε PLDs are slow to build).
"""

import numpy as np
import pytest

# dp_accounting is a dev dependency (pyproject [dev]); imported directly so a missing install fails loudly.
from dp_accounting import GaussianDpEvent, pld
from dp_accounting.gaussian_mechanism import get_sigma_gaussian
from dp_accounting.pld.privacy_loss_mechanism import GaussianPrivacyLoss

from unlearn_audit.certify import analytic_gaussian_sigma

DELTA = 1e-5
EPS_GRID = np.geomspace(0.05, 20.0, 25)


@pytest.mark.parametrize("eps", EPS_GRID)
def test_sigma_matches_dp_accounting_solver(eps):
    ours = analytic_gaussian_sigma(eps, DELTA, 1.0)
    theirs = get_sigma_gaussian(eps, DELTA)
    assert ours == pytest.approx(theirs, rel=1e-4)
    assert abs(ours / theirs - 1) < 1e-9  # in practice they agree to solver precision


@pytest.mark.parametrize("eps", EPS_GRID)
def test_sigma_brackets_privacy_loss_delta(eps):
    s = analytic_gaussian_sigma(eps, DELTA, 1.0)
    assert GaussianPrivacyLoss(s, sensitivity=1.0).get_delta_for_epsilon(eps) == pytest.approx(DELTA, rel=1e-6)
    assert GaussianPrivacyLoss(s * (1 - 1e-4), sensitivity=1.0).get_delta_for_epsilon(eps) > DELTA
    assert GaussianPrivacyLoss(s * (1 + 1e-4), sensitivity=1.0).get_delta_for_epsilon(eps) < DELTA


@pytest.mark.parametrize("eps", [0.05, 0.5, 2.0, 8.0])
def test_sigma_brackets_pld_accountant(eps):
    s = analytic_gaussian_sigma(eps, DELTA, 1.0)

    def pld_delta(sigma):
        acc = pld.PLDAccountant()
        acc.compose(GaussianDpEvent(sigma))
        return acc.get_delta(eps)

    assert pld_delta(s * (1 - 1e-4)) > DELTA
    assert pld_delta(s * (1 + 1e-4)) < DELTA
