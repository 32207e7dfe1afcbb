"""Noise calibration (analytic Gaussian mechanism) and release."""

import math

import numpy as np
import pytest
import torch

from unlearn_audit.certify import (
    CertificationError,
    analytic_gaussian_delta,
    analytic_gaussian_epsilon,
    analytic_gaussian_sigma,
    calibrate,
    classic_gaussian_sigma,
    release,
)


@pytest.mark.parametrize("eps, expected", [(0.1, 30.750), (0.5, 7.032), (1.0, 3.731), (10.0, 0.500)])
def test_known_values(eps, expected):
    assert analytic_gaussian_sigma(eps, 1e-5, 1.0) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("eps", [0.05, 0.3, 1.0, 7.0, 50.0, 200.0])
def test_sigma_attains_delta_and_is_smallest(eps):
    s = analytic_gaussian_sigma(eps, 1e-5)
    assert math.isfinite(s) and s > 0
    assert analytic_gaussian_delta(eps, s) == pytest.approx(1e-5, rel=1e-8)
    assert analytic_gaussian_delta(eps, s * (1 - 1e-6)) > 1e-5  # any smaller σ violates δ
    assert analytic_gaussian_delta(eps, s * (1 + 1e-6)) < 1e-5


def test_no_overflow_at_large_epsilon():
    # e^50 Φ(·) would overflow if formed naively in float arithmetic for slightly larger ε; log space handles it
    for eps in (50.0, 300.0, 700.0, 1000.0):
        s = analytic_gaussian_sigma(eps, 1e-5)
        assert math.isfinite(s) and s > 0
    assert analytic_gaussian_sigma(1000.0, 1e-5) < analytic_gaussian_sigma(50.0, 1e-5)


def test_monotone_in_epsilon_and_delta():
    eps = np.geomspace(0.01, 50, 40)
    sig = [analytic_gaussian_sigma(e, 1e-5) for e in eps]
    assert np.all(np.diff(sig) < 0)
    assert analytic_gaussian_sigma(1.0, 1e-3) < analytic_gaussian_sigma(1.0, 1e-6)


def test_linear_in_sensitivity():
    base = analytic_gaussian_sigma(0.7, 1e-6, 1.0)
    for sens in (1e-6, 0.3, 2.0, 1e4):
        assert analytic_gaussian_sigma(0.7, 1e-6, sens) == pytest.approx(sens * base, rel=1e-10)
    assert analytic_gaussian_sigma(0.7, 1e-6, 0.0) == 0.0
    assert calibrate(0.7, 1e-6, 0.0) == 0.0


def test_epsilon_inverse():
    for eps in (0.05, 0.9, 4.0, 30.0):
        s = analytic_gaussian_sigma(eps, 1e-5, 2.5)
        assert analytic_gaussian_epsilon(s, 1e-5, 2.5) == pytest.approx(eps, rel=1e-8)
    assert analytic_gaussian_epsilon(0.0, 1e-5, 1.0) == math.inf
    assert analytic_gaussian_epsilon(1e6, 1e-5, 1.0) == 0.0


def test_classic():
    eps, delta = 0.5, 1e-5
    assert classic_gaussian_sigma(eps, delta, 2.0) == pytest.approx(2.0 * math.sqrt(2 * math.log(1.25 / delta)) / eps)
    # the classic formula is valid but looser than the analytic one
    assert classic_gaussian_sigma(eps, delta) > analytic_gaussian_sigma(eps, delta)
    assert calibrate(eps, delta, 1.0, mechanism="classic") == classic_gaussian_sigma(eps, delta)
    with pytest.raises(CertificationError, match="only valid for epsilon < 1.*analytic"):
        classic_gaussian_sigma(1.0, delta)
    with pytest.raises(CertificationError, match="only valid for epsilon < 1"):
        calibrate(3.0, delta, 1.0, mechanism="classic")


@pytest.mark.parametrize(
    "kwargs, param",
    [
        (dict(epsilon=0.0, delta=1e-5, sensitivity=1.0), "epsilon"),
        (dict(epsilon=-1.0, delta=1e-5, sensitivity=1.0), "epsilon"),
        (dict(epsilon=float("nan"), delta=1e-5, sensitivity=1.0), "epsilon"),
        (dict(epsilon=float("inf"), delta=1e-5, sensitivity=1.0), "epsilon"),
        (dict(epsilon=1.0, delta=0.0, sensitivity=1.0), "delta"),
        (dict(epsilon=1.0, delta=1.0, sensitivity=1.0), "delta"),
        (dict(epsilon=1.0, delta=-0.1, sensitivity=1.0), "delta"),
        (dict(epsilon=1.0, delta=float("nan"), sensitivity=1.0), "delta"),
        (dict(epsilon=1.0, delta=1e-5, sensitivity=-1.0), "sensitivity"),
        (dict(epsilon=1.0, delta=1e-5, sensitivity=float("inf")), "sensitivity"),
        (dict(epsilon=1.0, delta=1e-5, sensitivity=float("nan")), "sensitivity"),
    ],
)
@pytest.mark.parametrize("fn", [analytic_gaussian_sigma, classic_gaussian_sigma, calibrate])
def test_validation(fn, kwargs, param):
    with pytest.raises(CertificationError, match=param) as info:
        fn(**kwargs)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_unknown_mechanism():
    with pytest.raises(CertificationError, match="mechanism"):
        calibrate(1.0, 1e-5, 1.0, mechanism="laplace")


# ---------------------------------------------------------------------------------------------------------------------
# release
def test_release_numpy_fresh_and_reproducible():
    w = np.linspace(-1, 1, 20000).astype(np.float32)
    w_copy = w.copy()
    r1 = release(w, 0.5, seed=1)
    r2 = release(w, 0.5, seed=1)
    r3 = release(w, 0.5, seed=2)
    assert r1.dtype == np.float32 and r1.shape == w.shape
    np.testing.assert_array_equal(w, w_copy)  # the noiseless state is not touched
    np.testing.assert_array_equal(r1, r2)
    assert not np.array_equal(r1, r3)
    noise = (r1 - w).astype(np.float64)
    assert abs(noise.mean()) < 0.02 and noise.std() == pytest.approx(0.5, rel=0.03)
    # releasing from the noiseless state again gives noise of the same σ (not stacked on r1)
    assert (r3 - w).std() == pytest.approx(0.5, rel=0.03)
    np.testing.assert_array_equal(release(w, 0.0, seed=3), w)


def test_release_torch_matches_dtype_and_seed():
    w64 = torch.randn(50, 30, dtype=torch.float64)
    w32 = w64.float()
    r64 = release(w64, 2.0, seed=7)
    r32 = release(w32, 2.0, seed=7)
    assert isinstance(r64, torch.Tensor) and r64.dtype == torch.float64 and r64.shape == w64.shape
    assert r32.dtype == torch.float32
    torch.testing.assert_close((r32 - w32).double(), r64 - w64, rtol=1e-5, atol=1e-5)
    assert not torch.equal(r64, release(w64, 2.0, seed=8))
    assert float((r64 - w64).std()) == pytest.approx(2.0, rel=0.1)


def test_release_validation():
    w = np.zeros(3)
    with pytest.raises(CertificationError, match="sigma"):
        release(w, -1.0, seed=0)
    with pytest.raises(CertificationError, match="sigma"):
        release(w, float("nan"), seed=0)
    with pytest.raises(CertificationError, match="seed"):
        release(w, 1.0, seed=-1)
    with pytest.raises(CertificationError, match="seed"):
        release(w, 1.0, seed=1.5)
    with pytest.raises(CertificationError, match="floating"):
        release(np.zeros(3, dtype=np.int64), 1.0, seed=0)
    with pytest.raises(CertificationError, match="weights"):
        release([0.0, 1.0], 1.0, seed=0)


def test_release_numpy_and_torch_draw_the_same_noise():
    """One noise source: a seed gives the same draw for a numpy state (the deletion service) and a torch state (the
    in-process unlearner), so their releases can be compared."""
    w = np.linspace(-1, 1, 500)
    r_np = release(w, 3.0, seed=11)
    r_t = release(torch.as_tensor(w), 3.0, seed=11)
    np.testing.assert_array_equal(r_np, r_t.numpy())
    assert np.abs(r_np - w).max() > 1.0                      # real noise, not a no-op
