"""Gaussian noise calibration and release for (ε, δ)-certified unlearning (DESIGN §2.4).

Release protocol: the noiseless unlearned state w̄^{-U} stays internal (never written out, never returned to a user);
every release draws *fresh* noise, ``release(w̄, σ, seed)`` = w̄ + N(0, σ² I), from the noiseless state, so two
releases are never stacked noise on noise. The retrained reference an audit compares against must be noised with
the same σ.

Calibration: the analytic Gaussian mechanism (Balle & Wang, ICML 2018, Theorem 8). For a query with L2 sensitivity
Δ, adding N(0, σ² I) is (ε, δ)-DP iff

    δ(ε; σ, Δ) = Φ(Δ/(2σ) − εσ/Δ) − e^ε Φ(−Δ/(2σ) − εσ/Δ) ≤ δ,

and δ(ε; σ, Δ) decreases in σ, so the smallest such σ is found by bracketing and root finding in log σ. The second
term is computed in log space (``log_ndtr``) so that e^ε never overflows (ε = 50 is fine). The classic
σ = Δ·sqrt(2 ln(1.25/δ))/ε (Dwork & Roth, Thm A.1) is offered for comparison only; it is valid only for ε < 1 and is
never the default.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from scipy.optimize import brentq
from scipy.special import erf, log_ndtr, ndtr

from unlearn_audit.certify.errors import CertificationError

__all__ = [
    "MECHANISMS",
    "analytic_gaussian_delta",
    "analytic_gaussian_epsilon",
    "analytic_gaussian_sigma",
    "calibrate",
    "classic_gaussian_sigma",
    "release",
    "sigma_text",
]

MECHANISMS = ("analytic", "classic")
_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------------------------------
# validation
def _check_epsilon(epsilon) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, Real):
        raise CertificationError(f"epsilon must be a real number, got {epsilon!r}")
    eps = float(epsilon)
    if not math.isfinite(eps) or eps <= 0:
        raise CertificationError(f"epsilon must be finite and > 0, got {epsilon!r}")
    return eps


def _check_delta(delta) -> float:
    if isinstance(delta, bool) or not isinstance(delta, Real):
        raise CertificationError(f"delta must be a real number, got {delta!r}")
    d = float(delta)
    if not (0.0 < d < 1.0):  # also rejects NaN
        raise CertificationError(f"delta must lie in the open interval (0, 1), got {delta!r}")
    return d


def _check_finite_nonneg(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise CertificationError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise CertificationError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def _check_sensitivity(sensitivity) -> float:
    return _check_finite_nonneg(sensitivity, "sensitivity")


def _check_sigma(sigma) -> float:
    return _check_finite_nonneg(sigma, "sigma")


def _log_delta_unit(epsilon: float, s: float) -> float:
    """log δ(ε) for sensitivity 1 and noise σ = s > 0; −inf when δ(ε) ≤ 0 numerically.

    δ = Φ(a) − e^ε Φ(b) with a = 1/(2s) − εs, b = −1/(2s) − εs. For a large s and a tiny ε the two terms agree to
    more digits than a float holds (a and b may even round to the same number), so δ is computed there as
    [Φ(a) − Φ(b)] − (e^ε − 1)Φ(b), the first bracket being ∫φ over [m − h, m + h] (m = −εs, h = 1/(2s)) by its
    Taylor series in h, all in log space. Near the centre (|a|, |b| < 1) Φ(a) − Φ(b) comes from erf; elsewhere
    the plain formula in log space (``log_ndtr``; e^ε is never formed)."""
    h, m = 0.5 / s, -epsilon * s
    if h < 1e-4 and abs(m) * h < 1e-4:          # Taylor remainder below h^4 (1 + m^4) relative
        log_central = (math.log(2.0 * h) - 0.5 * m * m - _LOG_SQRT_2PI
                       + math.log1p((m * m - 1.0) * h * h / 6.0))
        log_second = math.log(math.expm1(epsilon)) + float(log_ndtr(m - h)) if epsilon > 0 else -math.inf
        if log_second >= log_central:
            return -math.inf
        return log_central + math.log1p(-math.exp(log_second - log_central))
    a, b = m + h, m - h
    if abs(a) < 1.0 and abs(b) < 1.0:
        d = 0.5 * (float(erf(a / _SQRT2)) - float(erf(b / _SQRT2))) - math.expm1(epsilon) * float(ndtr(b))
        return math.log(d) if d > 0 else -math.inf
    log_first = float(log_ndtr(a))
    log_second = epsilon + float(log_ndtr(b))  # log(e^ε Φ(b)): no exp(ε) is ever formed
    if log_second >= log_first:
        return -math.inf
    return log_first + math.log1p(-math.exp(log_second - log_first))


def analytic_gaussian_delta(epsilon: float, sigma: float, sensitivity: float = 1.0) -> float:
    """Exact δ(ε) of the Gaussian mechanism N(0, σ² I) on a query of L2 sensitivity Δ (Balle & Wang 2018, Thm 8).

    Returns Φ(Δ/(2σ) − εσ/Δ) − e^ε Φ(−Δ/(2σ) − εσ/Δ) (0 when Δ = 0, 1 when σ = 0 < Δ).
    """
    eps = _check_epsilon(epsilon)
    sens = _check_sensitivity(sensitivity)
    sig = _check_sigma(sigma)
    if sens == 0.0:
        return 0.0
    if sig == 0.0:
        return 1.0
    return math.exp(_log_delta_unit(eps, sig / sens))


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """Smallest σ such that adding N(0, σ² I) to a query of L2 sensitivity Δ is (ε, δ)-DP (analytic mechanism).

    Solves Φ(Δ/(2σ) − εσ/Δ) − e^ε Φ(−Δ/(2σ) − εσ/Δ) = δ for σ. The solution scales linearly in Δ, so it is solved
    for Δ = 1 in u = log σ (bracket by doubling/halving, then Brent's method to ~1e-13 relative) and multiplied by Δ.
    Sensitivity 0 gives σ = 0.

    Raises:
        CertificationError: ε ≤ 0 or not finite, δ outside (0, 1), sensitivity < 0 or not finite.
    """
    eps = _check_epsilon(epsilon)
    dlt = _check_delta(delta)
    sens = _check_sensitivity(sensitivity)
    if sens == 0.0:
        return 0.0
    log_target = math.log(dlt)

    def f(u: float) -> float:  # decreasing in u; root is the answer
        ld = _log_delta_unit(eps, math.exp(u))
        return max(ld, -1e300) - log_target  # keep brentq away from -inf

    # bracket: δ(σ) → 1 > δ as σ → 0 and δ(σ) → 0 as σ → ∞. Start from the classic formula's scale, clamped to
    # the float range, and widen geometrically (steps 1, 2, 4, ... in log σ), so that a tiny ε (σ ≈ 1/(δ√(2π)), far
    # from the classic scale 1/ε) or a subnormal δ is bracketed within a few dozen evaluations.
    u_min, u_max = math.log(5e-324), math.log(np.finfo(float).max)
    start = math.sqrt(2.0 * math.log(1.25 / dlt)) / eps
    u0 = min(max(math.log(max(start, 1e-3)) if math.isfinite(start) else u_max, u_min), u_max)
    lo = hi = u0
    step = 1.0
    while f(lo) <= 0:
        if lo <= u_min:  # pragma: no cover - δ(σ) → 1 > δ as σ → 0
            raise CertificationError(f"could not bracket sigma for epsilon={epsilon!r}, delta={delta!r}")
        lo, step = max(lo - step, u_min), step * 2.0
    step = 1.0
    while f(hi) >= 0:
        if hi >= u_max:
            raise CertificationError(f"no finite sigma gives (epsilon={epsilon!r}, delta={delta!r}): the noise "
                                     "needed exceeds the float range")
        hi, step = min(hi + step, u_max), step * 2.0
    u = brentq(f, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500)
    with np.errstate(over="ignore"):
        sigma = float(np.float64(sens) * np.exp(u))
    return sigma


def analytic_gaussian_epsilon(sigma: float, delta: float, sensitivity: float = 1.0) -> float:
    """Smallest ε for which N(0, σ² I) on a query of sensitivity Δ is (ε, δ)-DP (inverts ``analytic_gaussian_sigma``).

    Useful for a privacy-utility sweep over σ. Returns 0.0 when even ε → 0 meets δ, and ``inf`` when σ = 0 < Δ.
    """
    dlt = _check_delta(delta)
    sens = _check_sensitivity(sensitivity)
    sig = _check_sigma(sigma)
    if sens == 0.0:
        return 0.0
    if sig == 0.0:
        return math.inf
    s = sig / sens
    log_target = math.log(dlt)

    def g(eps: float) -> float:  # decreasing in ε
        return max(_log_delta_unit(eps, s), -1e300) - log_target

    if g(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while g(hi) > 0:
        lo, hi = hi, hi * 2.0
        if hi > 1e6:  # pragma: no cover - δ(ε) decays like exp(-ε²σ²/2)
            raise CertificationError(f"could not bracket epsilon for sigma={sigma!r}, delta={delta!r}")
    return float(brentq(g, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500))


def classic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """Classic σ = Δ·sqrt(2 ln(1.25/δ))/ε (Dwork & Roth 2014, Thm A.1). Valid only for 0 < ε < 1; looser than analytic.

    Raises:
        CertificationError: ε ≥ 1 (the classic formula is only valid for ε < 1), or invalid ε, δ, sensitivity.
    """
    eps = _check_epsilon(epsilon)
    dlt = _check_delta(delta)
    sens = _check_sensitivity(sensitivity)
    if eps >= 1.0:
        raise CertificationError(
            f"epsilon={epsilon!r}: the classic Gaussian formula is only valid for epsilon < 1; "
            "use the analytic mechanism (mechanism='analytic')"
        )
    return sens * math.sqrt(2.0 * math.log(1.25 / dlt)) / eps


def calibrate(epsilon: float, delta: float, sensitivity: float, mechanism: str = "analytic", *,
              finite: bool = False) -> float:
    """σ for an (ε, δ) certificate at L2 sensitivity Δ with the named mechanism ('analytic' default, or 'classic').

    A σ beyond the float range comes back as ``inf`` (a vacuous certificate: the audit reports it as such); with
    ``finite=True`` it raises :class:`CertificationError` instead (what a command that prints or releases σ wants)."""
    if mechanism == "analytic":
        sigma = analytic_gaussian_sigma(epsilon, delta, sensitivity)
    elif mechanism == "classic":
        sigma = classic_gaussian_sigma(epsilon, delta, sensitivity)
    else:
        raise CertificationError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    if finite and not math.isfinite(sigma):
        raise CertificationError(f"sigma for sensitivity {sensitivity!r} at (epsilon={epsilon!r}, delta={delta!r}) "
                                 "exceeds the float range: no finite noise certifies it")
    return sigma


def sigma_text(sigma: float, digits: int = 6) -> str:
    """σ as text with ``digits`` significant digits, rounded UP: a printed σ that a user copies must still meet the
    certificate (rounding to nearest can give slightly too little noise)."""
    from decimal import ROUND_CEILING, Decimal

    d = Decimal(float(sigma))
    if not d.is_finite() or d == 0:
        return f"{sigma:g}"
    q = Decimal(1).scaleb(d.adjusted() - digits + 1)
    return f"{float(d.quantize(q, rounding=ROUND_CEILING)):.{digits}g}"


# ---------------------------------------------------------------------------------------------------------------------
# release
def _noise(shape: tuple, seed: int):
    """N(0, I) of ``shape``, float64 on the CPU, from torch's generator seeded with ``seed`` (the one noise source,
    whatever the type of the weights)."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64, device="cpu")


def release(weights_noiseless, sigma: float, seed: int):
    """Return ``weights_noiseless + N(0, σ² I)``, the noise drawn from a generator seeded with ``seed``.

    The input is the noiseless internal state and is NOT modified; keep it internal and call ``release`` again from it
    (with a new seed) for every release, so noise is never stacked on a previously released model. Record ``seed``
    (e.g. in the deletion ledger) so a release can be reproduced. The noise is drawn in float64 on the CPU by torch's
    generator and then cast to the input's dtype and device, so a given seed gives the same noise for numpy and torch,
    float32/float64 and CPU/GPU inputs (the in-process unlearner and the deletion service release alike).

    Args:
        weights_noiseless: ``torch.Tensor`` or ``np.ndarray`` of any shape (floating point).
        sigma: noise standard deviation, finite and >= 0 (0 returns a copy).
        seed: non-negative integer seed.

    Returns:
        Same type, shape, dtype (and device) as the input.
    """
    sig = _check_sigma(sigma)
    if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
        raise CertificationError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    import torch

    if isinstance(weights_noiseless, torch.Tensor):
        w = weights_noiseless.detach()
        if not torch.is_floating_point(w):
            raise CertificationError(f"weights must be floating point, got dtype {w.dtype}")
        return w + (sig * _noise(tuple(w.shape), seed)).to(dtype=w.dtype, device=w.device)
    if isinstance(weights_noiseless, np.ndarray):
        if not np.issubdtype(weights_noiseless.dtype, np.floating):
            raise CertificationError(f"weights must be floating point, got dtype {weights_noiseless.dtype}")
        noise = _noise(weights_noiseless.shape, seed).numpy()
        return (weights_noiseless + sig * noise).astype(weights_noiseless.dtype, copy=False)
    raise CertificationError(
        f"weights must be a torch.Tensor or numpy.ndarray, got {type(weights_noiseless).__name__}"
    )
