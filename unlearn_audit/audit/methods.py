"""Unlearning methods the audit compares. Each takes the run's :class:`AuditContext` and returns a
:class:`MethodOutcome`; all run on the same trained model and the same forget set (DESIGN §2.5).

To add a method: write ``def run_x(ctx) -> MethodOutcome`` and register it in ``METHODS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from unlearn_audit.audit.context import AuditContext
from unlearn_audit.audit.environment import hash_record_id
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
    chunks = np.array_split(np.array(ctx.forget_ids), min(ctx.cfg.unlearning.requests, len(ctx.forget_ids)))
    for k, chunk in enumerate(chunks):
        before = weights_hash(un.state_)
        receipt = un.delete(list(chunk))
        requests.append({"request_id": f"req-{k + 1:04d}", "n_records": len(chunk),
                         "hashed_record_ids": [hash_record_id(r) for r in chunk], "applied_at": _now(),
                         "seconds": receipt.seconds, "state_hash_before": before,
                         "state_hash_after": weights_hash(un.state_)})
    pc = ctx.cfg.privacy
    released, cert, sigma = un.release(epsilon=pc.epsilon, delta=pc.delta, seed=ctx.noise_seed,
                                       mechanism=pc.mechanism)
    secs = [r["seconds"] for r in requests]
    store = un.recursion_.approximators
    return MethodOutcome(
        name="hfocu", description="HF-OCU: w_T + sum of the deleted records' approximators, plus Gaussian noise",
        weights=un.state_.clone(), released=released, sigma=sigma, certified=True,
        seconds_per_request=float(np.mean(secs)), precompute_seconds=un.fit_seconds_,
        storage_bytes=int(store.element_size() * store.numel()),
        certificate={"epsilon": pc.epsilon, "delta": pc.delta, "mechanism": pc.mechanism, "sigma": sigma,
                     "noise_seed": ctx.noise_seed, **cert.to_dict()},
        requests=requests,
        extra={"latency_seconds": {"p50": float(np.percentile(secs, 50)), "p99": float(np.percentile(secs, 99)),
                                   "n_requests": len(secs)},
               "curvature": un.recursion_.curvature_name, "order": ctx.cfg.unlearning.order,
               "hvp_count": int(un.recursion_.hvp_count)})


METHODS: dict[str, Callable[[AuditContext], MethodOutcome]] = {"hfocu": run_hfocu}


def outcome_summary(ctx: AuditContext, out: MethodOutcome) -> dict:
    """The JSON entry of a method in results.json."""
    d = lambda a, b: float((a.double() - b.double()).norm())                                   # noqa: E731
    entry = {"description": out.description, "certified": out.certified,
             "distance_to_retrain": d(out.weights, ctx.w_retrain), "accuracy": ctx.accuracies(out.weights),
             "accuracy_released": ctx.accuracies(out.released), "sigma": out.sigma,
             "seconds_per_request": out.seconds_per_request, "precompute_seconds": out.precompute_seconds,
             "storage_bytes": out.storage_bytes, "certificate": out.certificate, **out.extra}
    return entry


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
