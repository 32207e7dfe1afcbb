"""The certificate constants of a training run (DESIGN §2.4), computed the same way wherever the run was trained
(in process by :class:`~unlearn_audit.hfocu.HFOCUUnlearner`, or by the sharded precompute): analytic for softmax
regression, measured otherwise (power iteration on I − η_t H_t at steps sampled by :class:`TrajectoryProbe`, and the
largest per-sample gradient norm over all records at those steps)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from unlearn_audit.certify import (
    BATCH_CLIP_REFUSED,
    CertificateConstants,
    CertificationError,
    Constant,
    RecursionConstants,
    SoftmaxRegressionConstants,
    power_iteration_rho,
)
from unlearn_audit.models import FunctionalModel
from unlearn_audit.training import SGDConfig, StepInfo, TrainResult

__all__ = ["TrajectoryProbe", "measured_constants", "run_constants", "softmax_constants"]


@dataclass
class TrajectoryProbe:
    """Training hook that keeps what the certificate needs for models without analytic constants: a few sampled
    (w_t, batch, η_t) of the trajectory, every ``every`` steps (about 8 in all by default)."""

    every: int
    samples: list = field(default_factory=list)

    @classmethod
    def for_run(cls, n_train: int, sgd: SGDConfig, samples: int = 8) -> "TrajectoryProbe":
        n_steps = sgd.epochs * -(-int(n_train) // sgd.batch_size)
        return cls(every=max(1, n_steps // samples))

    def __call__(self, info: StepInfo) -> None:
        if info.t % self.every == 0:
            self.samples.append((info.w.clone(), info.x, info.y, info.lr))


def softmax_constants(model: FunctionalModel, sgd: SGDConfig, x: torch.Tensor,
                      result: TrainResult) -> SoftmaxRegressionConstants:
    """Analytic constants of softmax regression: λ, max ‖x‖ over the training set, K, clipping/projection settings
    and the largest weight norm seen in training."""
    return SoftmaxRegressionConstants(
        lam=float(sgd.lam), max_feature_norm=float(x.reshape(len(x), -1).double().norm(dim=1).max()),
        n_classes=int(model.n_classes), clip=sgd.clip,
        clip_norm=None if sgd.clip_norm is None else float(sgd.clip_norm),
        weight_norm_bound=sgd.weight_norm_bound, measured_max_weight_norm=float(result.max_weight_norm),
        train_dtype=str(result.weights.dtype).replace("torch.", ""), n_features=int(x[0].numel()))


def measured_constants(model: FunctionalModel, sgd: SGDConfig, curvature: str, x: torch.Tensor, y: torch.Tensor,
                       probe: TrajectoryProbe) -> RecursionConstants:
    """ρ by power iteration (30 iterations) on I − η_t H_t at the probed steps — on the exact Hessian and, with the
    Gauss-Newton curvature, also on the operator that propagated the approximators — max taken; G the largest
    per-sample gradient norm over all records at those steps (capped by per-sample clipping)."""
    from unlearn_audit.hfocu.curvature import AutodiffHessian, GaussNewton

    op = AutodiffHessian(model, sgd.lam)
    ops = [op] + ([GaussNewton(model, sgd.lam)] if curvature == "gauss-newton" else [])
    rhos, gmax = [], 0.0
    for w, bx, by, lr in probe.samples:
        for o in ops:
            ctx = o.prepare(w, bx, by)
            hvp = lambda v, ctx=ctx, o=o: o.apply(ctx, v[None])[0]          # noqa: E731
            rhos.append(power_iteration_rho(hvp, model.dim, lr, n_iter=30, seed=0, dtype=w.dtype))
    for w, _, _, _ in probe.samples:
        ctx = op.prepare(w, x, y)
        gmax = max(gmax, float(op.per_sample_grads(ctx).norm(dim=1).max()))
    if sgd.clip == "per_sample" and sgd.clip_norm is not None:          # SGDConfig requires the norm with clipping
        gmax = min(gmax, float(sgd.clip_norm))
    k = len(probe.samples)
    return RecursionConstants(
        model=model.kind, clip=sgd.clip,
        rho=Constant(max(rhos), "measured",
                     f"power iteration on I - eta_t H_t at {k} sampled steps"
                     + (" (exact Hessian and the Gauss-Newton operator used by the approximators)"
                        if curvature == "gauss-newton" else "") + ", max taken"),
        G=Constant(gmax, "measured", f"max per-sample gradient norm over all records at {k} sampled steps"))


def run_constants(model: FunctionalModel, sgd: SGDConfig, curvature: str, x: torch.Tensor, y: torch.Tensor,
                  result: TrainResult, probe: TrajectoryProbe | None) -> CertificateConstants:
    """The constants of a finished run: :func:`softmax_constants` for softmax regression, else
    :func:`measured_constants` (needs the probe that watched training). Batch-gradient clipping is refused."""
    if sgd.clip == "batch":
        raise CertificationError(BATCH_CLIP_REFUSED)
    if model.kind == "softmax":
        return softmax_constants(model, sgd, x, result)
    if probe is None or not probe.samples:
        raise CertificationError("measured constants need the trajectory probe that watched training")
    return measured_constants(model, sgd, curvature, x, y, probe)
