"""Unlearning methods the audit compares. Each takes the run's :class:`AuditContext` and returns a
:class:`MethodOutcome`; all run on the same trained model and the same forget set (DESIGN §2.5).

To add a method: write ``def run_x(ctx) -> MethodOutcome`` and register it in ``METHODS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from unlearn_audit.audit.context import AuditContext
from unlearn_audit.audit.environment import hash_record_id
from unlearn_audit.certify import NotCertifiable
from unlearn_audit.models.functional import weights_hash


@dataclass
class MethodOutcome:
    """What one unlearning method produced. ``weights`` is the noiseless result; ``released`` what would be
    published (``weights`` plus noise for certified methods, ``weights`` itself otherwise); ``sigma`` the noise
    scale of the release (0 for uncertified methods); the retrained reference is released with the same σ."""

    name: str
    description: str
    weights: torch.Tensor
    released: torch.Tensor
    sigma: float
    certified: bool
    seconds_per_request: float
    precompute_seconds: float
    storage_bytes: int
    certificate: dict | None = None
    requests: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def run_hfocu(ctx: AuditContext) -> MethodOutcome:
    """HF-OCU: the forget set is sent as ``unlearning.requests`` deletion requests, each a vector addition; the
    release adds Gaussian noise calibrated to all deletions."""
    un = ctx.unlearner
    requests = []
    secs: list[float] = []
    chunks = np.array_split(np.array(ctx.forget_ids), min(ctx.cfg.unlearning.requests, len(ctx.forget_ids)))
    for k, chunk in enumerate(chunks):
        before = weights_hash(un.state_)
        receipt = un.delete(list(chunk))
        secs.append(receipt.seconds)
        requests.append({"request_id": f"req-{k + 1:04d}", "n_records": len(chunk),
                         "hashed_record_ids": [hash_record_id(r, ctx.record_id_key) for r in chunk],
                         "applied_at": _now(),
                         "seconds": receipt.seconds, "state_hash_before": before,
                         "state_hash_after": weights_hash(un.state_)})
    pc = ctx.cfg.privacy
    try:
        released, cert, sigma = un.release(epsilon=pc.epsilon, delta=pc.delta, seed=ctx.noise_seed,
                                           mechanism=pc.mechanism)
        cert_dict = cert.to_dict()
    except NotCertifiable as err:
        # the a-posteriori bound blew up: no σ is handed out and nothing is released; the audit judges the noiseless
        # state's forgetting and says the release is not certifiable (the pipeline keeps the verdict from passing)
        sigma, released, certified = 0.0, un.state_.clone(), False
        cert_dict = {"bound": f"{pc.bound} (not certifiable)", "sensitivity": None, "constants": {},
                     "n_forget": len(un.deleted_), "model": un.model.kind, "not_certifiable": str(err)}
    else:
        certified = True
    return MethodOutcome(
        name="hfocu", description="HF-OCU: w_T + sum of the deleted records' approximators, plus Gaussian noise",
        weights=un.state_.clone(), released=released, sigma=sigma, certified=certified,
        seconds_per_request=float(np.mean(secs)), precompute_seconds=un.fit_seconds_,
        storage_bytes=un.storage_bytes(),
        certificate={"epsilon": pc.epsilon, "delta": pc.delta, "mechanism": pc.mechanism, "sigma": sigma,
                     "noise_seed": ctx.noise_seed, **cert_dict},
        requests=requests,
        extra={"latency_seconds": {"p50": float(np.percentile(secs, 50)), "p99": float(np.percentile(secs, 99)),
                                   "n_requests": len(secs)},
               "mode": un.mode, "curvature": un.curvature_name_, "order": ctx.cfg.unlearning.order,
               "layout": un.layout_, "layout_reason": un.layout_reason,
               "hvp_count": int(un.hvp_count_)})


# -- baselines (DESIGN §2.5; unlearn_audit.baselines) ------------------------------------------------------------
def _baseline_requests(ctx: AuditContext, delete: Callable[[np.ndarray], float]) -> list[dict]:
    """Send the forget set as ``unlearning.requests`` requests (the same split as hfocu's) through
    ``delete(training positions) -> seconds``."""
    pos, ids = np.asarray(ctx.forget_positions), ctx.forget_ids
    out = []
    for k, idx in enumerate(np.array_split(np.arange(len(pos)), min(ctx.cfg.unlearning.requests, len(pos)))):
        secs = delete(pos[idx])
        out.append({"request_id": f"req-{k + 1:04d}", "n_records": len(idx),
                    "hashed_record_ids": [hash_record_id(ids[i], ctx.record_id_key) for i in idx], "applied_at": _now(),
                    "seconds": float(secs)})
    return out


def _latency(requests: list[dict]) -> dict:
    secs = [r["seconds"] for r in requests]
    return {"p50": float(np.percentile(secs, 50)), "p99": float(np.percentile(secs, 99)), "n_requests": len(secs)}


def _single_request(ctx: AuditContext, seconds: float) -> list[dict]:
    """Batch methods (finetune, neggrad) take the whole forget set as one request."""
    return [{"request_id": "req-0001", "n_records": len(ctx.forget_ids),
             "hashed_record_ids": [hash_record_id(r, ctx.record_id_key) for r in ctx.forget_ids], "applied_at": _now(),
             "seconds": float(seconds)}]


def _final_lr(ctx: AuditContext) -> float:
    return float(ctx.schedule.lrs[-1])


def _run_second_order(ctx: AuditContext, cls, name: str, description: str) -> MethodOutcome:
    bc = ctx.cfg.baselines
    un = cls(ctx.model, ctx.sgd.lam, solver=bc.solver, exact_max_dim=bc.exact_max_dim, cg_tol=bc.cg_tol,
             cg_maxiter=bc.cg_maxiter, hvp_precision=bc.hvp_precision).fit(ctx.w_original, ctx.x, ctx.y)
    requests = _baseline_requests(ctx, un.delete)
    w = un.state_.to(ctx.w_original.dtype)
    damped = un.any_indefinite()
    if damped:
        description += " [Hessian indefinite: damping added, see 'solves']"
    return MethodOutcome(
        name=name, description=description, weights=w, released=w.clone(), sigma=0.0, certified=False,
        seconds_per_request=float(np.mean([r["seconds"] for r in requests])),
        precompute_seconds=un.precompute_seconds_, storage_bytes=int(un.storage_bytes), requests=requests,
        extra={"latency_seconds": _latency(requests), "solver": un.solver_name, "hessian_indefinite": damped,
               "precompute": un.precompute_info_ or None, "solves": un.solves_,
               "storage_note": "beyond the model and the training data the method needs at request time"})


def run_ns(ctx: AuditContext) -> MethodOutcome:
    """Newton step (Sekhari et al. 2021) on the cumulative forget set; one factor-and-solve per request."""
    from unlearn_audit.baselines import NewtonStep

    return _run_second_order(ctx, NewtonStep, "ns", "Newton step (Sekhari et al. 2021): w + (1/(n-m)) "
                             "H_{S\\U}^-1 sum_u grad l(w; z_u), lambda included; uncertified here")


def run_ij(ctx: AuditContext) -> MethodOutcome:
    """Infinitesimal jackknife: H_S factored in the precompute; triangular solves per request."""
    from unlearn_audit.baselines import InfluenceJackknife

    return _run_second_order(ctx, InfluenceJackknife, "ij", "infinitesimal jackknife: w + (1/n) H_S^-1 "
                             "sum_u grad l(w; z_u), H_S factored before requests; uncertified")


def run_cns(ctx: AuditContext) -> MethodOutcome:
    """Certified Newton step of Zhang et al. (ICML 2024): LiSSA, their bound with measured constants, AGM noise."""
    from unlearn_audit.baselines import CertifiedNewtonStep, DataHessian
    from unlearn_audit.certify import release

    bc, pc = ctx.cfg.baselines, ctx.cfg.privacy
    un = CertifiedNewtonStep(ctx.model, ctx.sgd.lam, damping=bc.cns_damping, chains=bc.cns_chains,
                             depth=bc.cns_depth, hessian_batch=bc.cns_hessian_batch, scale=bc.cns_scale,
                             radius=ctx.sgd.weight_norm_bound, seed=ctx.cfg.seed,
                             hvp_precision=bc.hvp_precision).fit(ctx.w_original, ctx.x, ctx.y)
    requests = _baseline_requests(ctx, un.delete)
    for r, detail in zip(requests, un.requests_):
        r.update({k: v for k, v in detail.items() if k not in ("n_records", "seconds")})
    cert, sigma = un.certificate(pc.epsilon, pc.delta, pc.mechanism)
    cert["noise_seed"] = ctx.noise_seed
    w = un.state_.to(ctx.w_original.dtype)
    last = un.requests_[-1]
    # Audit-only diagnostics (an unlearner never has the retrained model): is the theorem's reference assumption met?
    x_r, y_r = ctx.retain
    grad_re = float(DataHessian(ctx.model, ctx.sgd.lam, ctx.w_retrain, x_r, y_r).gradient().norm())
    mu = last["damping"] + last["lambda_min"]
    dist = float((un.state_ - ctx.w_retrain.double()).norm())
    return MethodOutcome(
        name="cns", description="certified Newton step (Zhang et al. ICML 2024): one Newton step per request on the "
                                "retained data from the previous estimate, inverse by LiSSA, Gaussian noise",
        weights=w, released=release(w, sigma, ctx.noise_seed), sigma=sigma, certified=True,
        seconds_per_request=float(np.mean([r["seconds"] for r in requests])),
        precompute_seconds=un.precompute_seconds_, storage_bytes=0, certificate=cert, requests=requests,
        extra={"latency_seconds": _latency(requests),
               "certificate_seconds_per_request": float(np.mean([r["certificate_seconds"] for r in un.requests_])),
               "lissa": last["lissa"], "lissa_scale_how": un.scale_how_,
               "damping_raised": any(r["damping_note"] for r in un.requests_),
               "storage_note": "no stored statistics; needs the retained training data at request time",
               "audit_diagnostics": {
                   "distance_to_retrain_vs_certified_bound": [dist, cert["sensitivity"]],
                   "retrain_norm_vs_R": [float(ctx.w_retrain.double().norm()), last["R"]],
                   "retrain_gradient_norm_on_retained_objective": grad_re,
                   "stationarity_term_not_in_certificate": grad_re / mu if mu > 0 else None}})


def _one_request_outcome(ctx: AuditContext, name: str, description: str, w: torch.Tensor, seconds: float,
                         **settings) -> MethodOutcome:
    """Outcome of an uncertified method that handles the whole forget set in one request, with no precompute."""
    requests = _single_request(ctx, seconds)
    w = w.to(ctx.w_original.dtype)
    return MethodOutcome(
        name=name, description=description, weights=w, released=w.clone(), sigma=0.0, certified=False,
        seconds_per_request=seconds, precompute_seconds=0.0, storage_bytes=0, requests=requests,
        extra={"latency_seconds": _latency(requests), **settings,
               "batch_method": "the whole forget set in one request"})


def run_finetune(ctx: AuditContext) -> MethodOutcome:
    """Fine-tuning on the retained records from the trained model (uncertified; one request)."""
    from unlearn_audit.baselines import finetune

    bc = ctx.cfg.baselines
    lr = bc.finetune_lr or _final_lr(ctx)
    w, secs = finetune(ctx.model, ctx.sgd, ctx.w_original, *ctx.retain, epochs=bc.finetune_epochs, lr=lr,
                       seed=ctx.cfg.seed + 7)
    return _one_request_outcome(ctx, "finetune", f"fine-tuning: {bc.finetune_epochs} epochs of SGD (lr {lr:.4g}) "
                                "on the retained records from the trained model; uncertified", w, secs,
                                epochs=bc.finetune_epochs, lr=lr)


def run_neggrad(ctx: AuditContext) -> MethodOutcome:
    """Gradient ascent on the forget set from the trained model (uncertified; one request)."""
    from unlearn_audit.baselines import neggrad

    bc = ctx.cfg.baselines
    lr = bc.neggrad_lr or _final_lr(ctx)
    w, secs = neggrad(ctx.model, ctx.w_original, *ctx.forget, steps=bc.neggrad_steps, lr=lr,
                      weight_norm_bound=ctx.sgd.weight_norm_bound)
    return _one_request_outcome(ctx, "neggrad", f"NegGrad: {bc.neggrad_steps} gradient-ascent steps (lr {lr:.4g}) "
                                "on the forget set's cross-entropy from the trained model; uncertified", w, secs,
                                steps=bc.neggrad_steps, lr=lr)


def run_dpsgd(ctx: AuditContext) -> MethodOutcome:
    """A model trained with Opacus DP-SGD at privacy.epsilon: no deletion step (privacy by training)."""
    from unlearn_audit.baselines import train_dpsgd

    bc, pc = ctx.cfg.baselines, ctx.cfg.privacy
    clip = ctx.sgd.clipping_norm() if ctx.sgd.clip == "per_sample" else bc.dpsgd_clip_norm
    res = train_dpsgd(ctx.model, ctx.x, ctx.y, ctx.sgd, epsilon=pc.epsilon, delta=pc.delta, max_grad_norm=clip,
                      accountant=bc.dpsgd_accountant, seed=ctx.cfg.seed + 11)
    w = res.weights.to(ctx.w_original.dtype)
    return MethodOutcome(
        name="dpsgd", description=f"DP-SGD (Opacus, {res.accountant} accountant): a separately trained model, "
                                  f"per-record epsilon {res.epsilon:.3g} at delta {res.delta:g}; no deletion step",
        weights=w, released=w.clone(), sigma=0.0, certified=False, seconds_per_request=0.0,
        precompute_seconds=res.seconds, storage_bytes=0, certificate=res.certificate(len(ctx.forget_positions)),
        requests=[], extra={"privacy_by_training": True, "precompute_is": "DP-SGD training time",
                            "dp_epsilon": res.epsilon, "dp_delta": res.delta,
                            "noise_multiplier": res.noise_multiplier})


def run_identity(ctx: AuditContext) -> MethodOutcome:
    """Do nothing: return the trained model unchanged (a control; the audit must fail it wherever it has power)."""
    return _one_request_outcome(ctx, "identity", "do nothing: the original weights, unchanged (control)",
                                ctx.w_original.clone(), 0.0)


def run_retrain(ctx: AuditContext) -> MethodOutcome:
    """Exact retraining without U audited as if it were a method (a control; passes up to the test's α). In the
    per-example tests its models come from training seeds independent of the reference retrains'."""
    return _one_request_outcome(ctx, "retrain", "exact retraining without the forget set, audited as a method "
                                "(control)", ctx.w_retrain.clone(), ctx.retrain_seconds)


METHODS: dict[str, Callable[[AuditContext], MethodOutcome]] = {
    "hfocu": run_hfocu, "identity": run_identity, "retrain": run_retrain, "cns": run_cns, "ns": run_ns, "ij": run_ij,
    "finetune": run_finetune,
    "neggrad": run_neggrad, "dpsgd": run_dpsgd}


def outcome_summary(ctx: AuditContext, out: MethodOutcome) -> dict:
    """The JSON entry of a method in results.json."""
    d = lambda a, b: float((a.double() - b.double()).norm())                                   # noqa: E731
    entry = {"description": out.description, "certified": out.certified,
             "distance_to_retrain": d(out.weights, ctx.w_retrain), "accuracy": ctx.accuracies(out.weights),
             "accuracy_released": ctx.accuracies(out.released), "sigma": out.sigma,
             "seconds_per_request": out.seconds_per_request, "precompute_seconds": out.precompute_seconds,
             "storage_bytes": out.storage_bytes, "certificate": out.certificate, **out.extra}
    return entry
