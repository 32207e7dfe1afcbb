"""Curvature operators: Hessian-vector products of the batch objective, batched over many vectors.

F_B(w) = (1/|B|) Σ_{i∈B} CE(f_w(x_i), y_i) + (λ/2)‖w‖², so H_B = ∇²F_B(w) includes λI.

Every operator works in two phases so the batch-dependent work is done once per step:
``ctx = op.prepare(w, x, y)`` then ``op.apply(ctx, V)`` for a (k, d) block of vectors, returning H_B V (k, d).
``op.per_sample_grads(ctx)`` gives ∇ℓ(w; z_i) for the batch records, (|B|, d), λw included.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch.func import functional_call, grad, jvp, vmap

from unlearn_audit.models import FunctionalModel


@dataclass
class BatchContext:
    w: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    probs: torch.Tensor | None = None  # (b, C) softmax probabilities at w, when the operator needs them


class CurvatureOperator(abc.ABC):
    """Base class. ``name`` goes into results so a Gauss-Newton run is never mistaken for the exact Hessian."""

    name = "abstract"

    def __init__(self, model: FunctionalModel, lam: float):
        self.model = model
        self.lam = float(lam)

    def prepare(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> BatchContext:
        return BatchContext(w, x, y)

    @abc.abstractmethod
    def apply(self, ctx: BatchContext, V: torch.Tensor) -> torch.Tensor:
        """H V for a block of vectors V (k, d) at the batch of ``ctx`` (λ V included)."""

    def per_sample_grads(self, ctx: BatchContext) -> torch.Tensor:
        model = self.model

        def loss_one(w, xi, yi):
            return torch.nn.functional.cross_entropy(model.logits(w, xi[None]), yi[None])

        g = vmap(grad(loss_one), in_dims=(None, 0, 0))(ctx.w, ctx.x, ctx.y)
        return g + self.lam * ctx.w


class SoftmaxClosedForm(CurvatureOperator):
    """Exact Hessian of softmax regression as matrix products over all vectors at once.

    With x̃ = [x, 1] and W = [weight | bias]: H V = (1/|B|) Σ_i [(diag p_i − p_i p_iᵀ)(V x̃_i)] x̃_iᵀ + λ V.
    """

    name = "exact-hessian (softmax closed form)"

    def __init__(self, model: FunctionalModel, lam: float):
        if model.kind != "softmax":
            raise ValueError("SoftmaxClosedForm needs a softmax regression model")
        super().__init__(model, lam)
        self.n_classes = model.n_classes
        self.n_features = model.dim // self.n_classes - 1

    def prepare(self, w, x, y):
        x = x.reshape(len(x), -1).to(w.dtype)
        with torch.no_grad():
            probs = torch.softmax(self.model.logits(w, x), dim=1)
        return BatchContext(w, x, y, probs)

    def split(self, V: torch.Tensor):
        C, D = self.n_classes, self.n_features
        return V[:, : C * D].reshape(-1, C, D), V[:, C * D:]

    def apply(self, ctx, V):
        C, D = self.n_classes, self.n_features
        k, b = V.shape[0], ctx.x.shape[0]
        Vw, Vb = self.split(V)
        vx = torch.einsum("kcd,bd->kbc", Vw, ctx.x) + Vb[:, None, :]          # (k, b, C): V x̃_i
        p = ctx.probs[None]                                                    # (1, b, C)
        m = p * vx - p * (p * vx).sum(-1, keepdim=True)                        # (diag p − p pᵀ) V x̃_i
        hw = torch.einsum("kbc,bd->kcd", m, ctx.x).reshape(k, C * D)
        hb = m.sum(1)
        return torch.cat([hw, hb], dim=1) / b + self.lam * V

    def propagate_cd(self, xt: torch.Tensor, probs_t: torch.Tensor, A: torch.Tensor, lr: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One propagation (I − η H) A of ONE vector in the (C, D+1) matrix layout (weight columns, then the bias
        column), with x̃ = [x, 1] (b, D+1) and the batch probabilities transposed (C, b) given. Returns
        ((I − η H) A, Sᵀ, mᵀ): Sᵀ = A X̃ᵀ (C, b) holds the logit directions A x̃_i and mᵀ the per-record curvature
        columns m_i = (diag p_i − p_i p_iᵀ) A x̃_i, so H_i A = m_i ⊗ x̃_i + λA for any subset of the batch without a
        second product (the a-posteriori certificate needs both). Two small GEMMs in the class-major order, the
        second fused with the update: the fast path of the certificate's per-request replay."""
        st = A @ xt.T                                                          # (C, b): A x̃_i
        mt = probs_t * st
        mt = mt - probs_t * mt.sum(0, keepdim=True)                            # (diag p − p pᵀ) A x̃_i
        out = torch.addmm(A, mt, xt, beta=1.0 - lr * self.lam, alpha=-lr / xt.shape[0])
        return out, st, mt

    def per_sample_grads(self, ctx):
        onehot = torch.nn.functional.one_hot(ctx.y, self.n_classes).to(ctx.w.dtype)
        r = ctx.probs - onehot                                                 # (b, C)
        gw = (r[:, :, None] * ctx.x[:, None, :]).reshape(len(r), -1)
        return torch.cat([gw, r], dim=1) + self.lam * ctx.w


class AutodiffHessian(CurvatureOperator):
    """Exact Hessian-vector products for any model: forward-over-reverse (jvp of grad), vmapped over a chunk of
    vectors. ``chunk_size`` bounds memory: each chunk costs about chunk_size × (activations of one batch)."""

    name = "exact-hessian (autodiff)"

    def __init__(self, model: FunctionalModel, lam: float, chunk_size: int = 64):
        super().__init__(model, lam)
        self.chunk_size = int(chunk_size)

    def _batch_objective(self, x, y):
        model = self.model

        def objective(w):
            return torch.nn.functional.cross_entropy(model.logits(w, x), y)

        return objective

    def apply(self, ctx, V):
        g = grad(self._batch_objective(ctx.x, ctx.y))

        def hvp_one(v):
            return jvp(g, (ctx.w,), (v,))[1]

        out = [vmap(hvp_one)(V[i:i + self.chunk_size]) for i in range(0, len(V), self.chunk_size)]
        return torch.cat(out) + self.lam * V if out else V.clone()


class GaussNewton(CurvatureOperator):
    """Generalised Gauss-Newton curvature Jᵀ (diag p − ppᵀ) J + λI: positive semi-definite and cheaper than the
    Hessian for deep models, but an approximation. Results name it as such."""

    name = "gauss-newton"

    def __init__(self, model: FunctionalModel, lam: float, chunk_size: int = 64):
        super().__init__(model, lam)
        self.chunk_size = int(chunk_size)

    def prepare(self, w, x, y):
        with torch.no_grad():
            probs = torch.softmax(self.model.logits(w, x), dim=1)
        return BatchContext(w, x, y, probs)

    def apply(self, ctx, V):
        model, b = self.model, len(ctx.x)

        def f(w):
            return model.logits(w, ctx.x)

        def ggn_one(v):
            _, jv = jvp(f, (ctx.w,), (v,))                                   # (b, C)
            p = ctx.probs
            m = (p * jv - p * (p * jv).sum(-1, keepdim=True)) / b
            _, vjp_fn = torch.func.vjp(f, ctx.w)
            return vjp_fn(m)[0]

        out = [vmap(ggn_one)(V[i:i + self.chunk_size]) for i in range(0, len(V), self.chunk_size)]
        return torch.cat(out) + self.lam * V if out else V.clone()


CURVATURES = {"exact": "exact Hessian (closed form for softmax, autodiff otherwise)",
              "gauss-newton": "generalised Gauss-Newton (PSD approximation)"}


def make_curvature(model: FunctionalModel, lam: float, curvature: str = "exact", chunk_size: int = 64):
    """The operator for a model: softmax + exact → closed form; other models → autodiff."""
    if curvature == "exact":
        if model.kind == "softmax":
            return SoftmaxClosedForm(model, lam)
        return AutodiffHessian(model, lam, chunk_size)
    if curvature == "gauss-newton":
        return GaussNewton(model, lam, chunk_size)
    raise ValueError(f"unknown curvature '{curvature}'; choose one of: {', '.join(CURVATURES)}")


def reference_hvp(model: FunctionalModel, lam: float, w, x, y, v) -> torch.Tensor:
    """One double-backward per vector (the reference approach; used by tests and benchmarks)."""
    w = w.detach().clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model.logits(w, x), y)
    (g,) = torch.autograd.grad(loss, w, create_graph=True)
    (hv,) = torch.autograd.grad(g, w, grad_outputs=v)
    return hv + lam * v


__all__ = ["BatchContext", "CurvatureOperator", "SoftmaxClosedForm", "AutodiffHessian", "GaussNewton",
           "make_curvature", "reference_hvp", "CURVATURES", "functional_call"]
