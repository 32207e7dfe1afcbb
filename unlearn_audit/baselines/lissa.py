"""LiSSA (Agarwal, Bullins & Hazan 2017): a stochastic estimate of A⁻¹ g for A = H_D + μI, as Zhang et al. (ICML 2024)
use it in their certified Newton step.

With i.i.d. Hessian mini-batches H_j (each the Hessian of the batch objective, λ included) and ``scale`` ≥ ‖H_j + μI‖:

    v_0 = g,   v_j = g + v_{j−1} − (H_j v_{j−1} + μ v_{j−1}) / scale,   j = 1..depth

so v_depth / scale = Σ_{i=0}^{depth} Π (I − (H_j + μI)/scale) g / scale → A⁻¹ g as depth → ∞ (in expectation). The
estimate is the mean over ``chains`` independent recursions. Two errors remain and are reported, never hidden:
the truncation factor (1 − (μ + λ_min)/scale)^depth (the series' tail; with the public code's scale 1000 and depth
1000 this is ≈ 1 and the "inverse" is really depth/scale times the identity, a hidden damping), and the sampling
error, visible in the residual ‖A v − g‖ that the certificate uses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.func import grad, jvp, vmap

from unlearn_audit.models import FunctionalModel

DTYPE = torch.float64


def chain_hvps(model: FunctionalModel, lam: float, w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor,
               V: torch.Tensor, hvp_dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """H_{B_s} V[s] for s chains at once, each with its own mini-batch: xb (s, b, ...), yb (s, b), V (s, d).

    H_B is the Hessian of the batch objective (1/|B|) Σ CE + (λ/2)‖w‖² at w (λ included). Autodiff models compute
    in ``hvp_dtype`` (softmax regression: float64 closed form); the result has V's dtype."""
    if model.kind == "softmax":
        C = model.n_classes
        X = xb.reshape(xb.shape[0], xb.shape[1], -1).to(DTYPE)                      # (s, b, D)
        s, b, D = X.shape
        with torch.no_grad():
            P = torch.softmax(X @ w[:C * D].view(C, D).T + w[C * D:], dim=-1)        # (s, b, C)
            Vw, Vb = V[:, :C * D].reshape(s, C, D), V[:, C * D:]
            vx = torch.bmm(X, Vw.transpose(1, 2)) + Vb[:, None, :]                  # (s, b, C)
            pv = P * vx
            m = pv - P * pv.sum(-1, keepdim=True)
            hw = torch.bmm(m.transpose(1, 2), X).reshape(s, C * D)
            return torch.cat([hw, m.sum(1)], dim=1) / b + lam * V

    def one(v, x, y):
        g = grad(lambda w_: torch.nn.functional.cross_entropy(model.logits(w_, x), y))
        return jvp(g, (w_h,), (v,))[1]

    w_h = w.to(hvp_dtype)
    return vmap(one)(V.to(hvp_dtype), xb.to(hvp_dtype), yb).to(V.dtype) + lam * V


@dataclass
class LissaInfo:
    chains: int
    depth: int
    hessian_batch: int
    scale: float
    damping: float
    truncation_factor: float | None
    hvp_count: int
    diverged: bool = False
    hvp_dtype: str = "float64"

    def to_dict(self) -> dict:
        return asdict(self)


def lissa_solve(model: FunctionalModel, lam: float, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                g: torch.Tensor, *, damping: float, scale: float, chains: int = 10, depth: int = 1000,
                hessian_batch: int = 10, seed: int = 0, mu_lower: float | None = None,
                hvp_dtype: torch.dtype = DTYPE) -> tuple[torch.Tensor, LissaInfo]:
    """Estimate (H_D(w) + damping·I)⁻¹ g by LiSSA over the records (x, y); Hessian mini-batches drawn i.i.d. (with
    replacement) per chain and per step; ``hessian_batch`` ≥ the number of records uses all of them every step (the
    exact Hessian: LiSSA is then the truncated Neumann series). ``mu_lower`` (a lower bound on the smallest
    eigenvalue of H_D + damping·I, when known) gives the truncation factor in the info. ``hvp_dtype``: the
    arithmetic of autodiff HVPs (the recursion itself stays float64)."""
    if scale <= 0 or chains < 1 or depth < 0 or hessian_batch < 1:
        raise ValueError("lissa_solve needs scale > 0, chains ≥ 1, depth ≥ 0, hessian_batch ≥ 1")
    w, g = w.detach().to(DTYPE), g.to(DTYPE)
    x = x.to(DTYPE)
    n = len(x)
    gen = torch.Generator().manual_seed(int(seed))
    V = g.expand(chains, -1).clone()
    diverged = False
    g_norm = float(g.norm())
    for _ in range(int(depth)):
        if hessian_batch >= n:                    # every record: the exact Hessian, a deterministic Neumann series
            idx = torch.arange(n).expand(chains, n)
        else:
            idx = torch.randint(n, (chains, hessian_batch), generator=gen)
        HV = chain_hvps(model, lam, w, x[idx], y[idx], V, hvp_dtype)
        V = g + V - (HV + damping * V) / scale
        if not math.isfinite(float(V.norm())) or float(V.norm()) > 1e12 * max(g_norm, 1e-300):
            diverged = True
            break
    trunc = None
    if mu_lower is not None and mu_lower > 0:
        trunc = float(max(0.0, 1.0 - mu_lower / scale) ** depth)
    info = LissaInfo(chains, int(depth), int(hessian_batch), float(scale), float(damping), trunc,
                     int(depth) * chains, diverged, str(hvp_dtype).removeprefix("torch."))
    return V.mean(0) / scale, info
