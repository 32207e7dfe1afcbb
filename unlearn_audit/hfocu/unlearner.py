"""HF-OCU unlearner: a fit / delete / release facade over training, the approximator recursion and certification.

    unlearner = HFOCUUnlearner(model, SGDConfig(...)).fit(x, y, ids)
    unlearner.delete(["digits:17", "digits:302"])      # milliseconds: a vector addition
    w_released, cert, sigma = unlearner.release(epsilon=1.0, delta=1e-5, seed=7)

The noiseless internal state w̄ = w_T + Σ_{u deleted} a_u never leaves the object except through ``release``,
which draws fresh Gaussian noise calibrated to the sensitivity of ALL deletions so far (DESIGN §2.4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch

from unlearn_audit.certify import (BATCH_CLIP_REFUSED, CertificateConstants, CertificationError, Constant,
                                   RecursionConstants, SensitivityCertificate, SoftmaxRegressionConstants, calibrate,
                                   certificate_from_constants, power_iteration_rho, release)
from unlearn_audit.hfocu.chunked import SoftmaxTrajectory, softmax_chunk_outer
from unlearn_audit.hfocu.recursion import ApproximatorRecursion, Order
from unlearn_audit.hfocu.replay import WeightTrajectory, replay_unlearn
from unlearn_audit.models import FunctionalModel
from unlearn_audit.models.functional import weights_hash
from unlearn_audit.training import SGDConfig, StepInfo, TrainResult, train_sgd

Mode = Literal["all", "candidates", "replay"]
Layout = Literal["auto", "time_outer", "chunk_outer"]


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (cuda when available, else cpu). Asking for cuda without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use 'auto' or 'cpu'")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got '{device}'")
    return torch.device(device)


def resolve_layout(layout: str, model: FunctionalModel, sgd: SGDConfig, curvature: str) -> str:
    """``chunk_outer`` for softmax regression without clipping or projection (when ``auto``), else ``time_outer``."""
    if layout not in ("auto", "time_outer", "chunk_outer"):
        raise ValueError(f"layout must be 'auto', 'time_outer' or 'chunk_outer', got '{layout}'")
    plain = (model.kind == "softmax" and sgd.clip == "none" and sgd.weight_norm_bound is None
             and curvature in ("exact", "gauss-newton"))
    if layout == "chunk_outer" and not plain:
        raise ValueError("layout 'chunk_outer' needs softmax regression without clipping or projection")
    return "chunk_outer" if (layout == "chunk_outer" or (layout == "auto" and plain)) else "time_outer"


class UnlearningError(ValueError):
    """A deletion request that cannot be applied (unknown id, already deleted, no approximator)."""


@dataclass
class DeletionReceipt:
    record_ids: list[str]
    seconds: float


@dataclass
class _TrajectoryProbe:
    """Training hook that keeps what the certificate needs for models without analytic constants: the largest
    per-sample gradient norm seen, and a few sampled (w_t, batch) pairs for power iteration on I − η_t H_t."""

    every: int
    samples: list = field(default_factory=list)

    def __call__(self, info: StepInfo) -> None:
        if info.t % self.every == 0:
            self.samples.append((info.w.clone(), info.x, info.y, info.lr))


class HFOCUUnlearner:
    """Hessian-free online certified unlearning (Qiao et al., ICLR 2025) for a model trained here by SGD.

    Args:
        model: a :class:`~unlearn_audit.models.FunctionalModel`.
        sgd: training hyper-parameters (the update map the approximators linearise).
        mode: ``all`` keeps an approximator per training record; ``candidates`` only for ``candidates`` (ids);
            ``replay`` keeps the weight trajectory and computes each request by one recursion (T HVPs).
        layout: ``chunk_outer`` (softmax regression without clipping: a tiny trajectory during training, then
            cache-sized chunks of records through all steps — fastest on a CPU), ``time_outer`` (all vectors
            advance together during training; any model), or ``auto``.
        device: ``cpu``, ``cuda`` or ``auto``.
        store_path: keep the approximators in a file-backed store (memory-mapped chunks with checksums, see
            :mod:`unlearn_audit.hfocu.store`) instead of memory; with the chunk-outer layout each finished chunk
            streams to disk, so n·d may exceed RAM. ``store_dtype``: ``float32`` or ``bfloat16``.
        curvature: ``exact`` (Hessian) or ``gauss-newton`` (named as such in results).
        order: ``propagate_first`` (the derivation) or ``inject_first`` (the paper's public code, for comparison).
        dtype: dtype of training weights and approximators.
    """

    def __init__(self, model: FunctionalModel, sgd: SGDConfig, *, mode: Mode = "all",
                 candidates: list[str] | None = None, curvature: str = "exact", order: Order = "propagate_first",
                 dtype: torch.dtype = torch.float32, chunk_size: int = 256, layout: Layout = "auto",
                 device: str = "cpu", store_path: str | None = None, store_dtype: str = "float32"):
        if mode not in ("all", "candidates", "replay"):
            raise ValueError(f"mode must be 'all', 'candidates' or 'replay', got '{mode}'")
        if layout not in ("auto", "time_outer", "chunk_outer"):
            raise ValueError(f"layout must be 'auto', 'time_outer' or 'chunk_outer', got '{layout}'")
        if mode == "candidates" and not candidates:
            raise ValueError("mode 'candidates' needs a non-empty list of candidate record ids")
        self.model, self.sgd, self.mode = model, sgd, mode
        self.candidates = candidates
        self.curvature, self.order, self.dtype, self.chunk_size = curvature, order, dtype, chunk_size
        self.layout, self.device = layout, resolve_device(device)
        self.store_path, self.store_dtype = store_path, store_dtype
        self.store_ = None

    def _resolved_layout(self) -> str:
        return resolve_layout(self.layout, self.model, self.sgd, self.curvature)

    # -- training ---------------------------------------------------------------------------------------------
    def fit(self, x: torch.Tensor, y: torch.Tensor, ids, *, progress: Callable[[int, int], None] | None = None):
        """Train on (x, y) while keeping approximators; ``ids`` are the records' stable ids (str)."""
        self.ids_ = np.asarray(ids).astype(str)
        if len(self.ids_) != len(x) or len(np.unique(self.ids_)) != len(self.ids_):
            raise UnlearningError("ids must be unique and one per training record")
        self.position_of_ = {rid: i for i, rid in enumerate(self.ids_)}
        tracked = None
        if self.mode == "candidates":
            tracked = self._positions(self.candidates, check_deleted=False)
        self.recursion_ = ApproximatorRecursion(self.model, self.sgd, len(x), tracked, curvature=self.curvature,
                                                order=self.order, dtype=self.dtype, chunk_size=self.chunk_size,
                                                device=self.device)
        x, y = x.to(self.device), y.to(self.device)
        self.x_, self.y_ = x, y
        n_steps = self.sgd.epochs * int(np.ceil(len(x) / self.sgd.batch_size))
        self.probe_ = _TrajectoryProbe(every=max(1, n_steps // 8))
        self.layout_ = "replay" if self.mode == "replay" else self._resolved_layout()
        hooks = [] if self.model.kind == "softmax" else [self.probe_]
        if self.layout_ == "replay":
            self.trajectory_ = WeightTrajectory()
            hooks.append(self.trajectory_)
            self.recursion_.approximators = self.recursion_.approximators[:0]
        elif self.layout_ == "chunk_outer":
            self.trajectory_ = SoftmaxTrajectory()
            hooks.append(self.trajectory_)
        else:
            hooks.append(self.recursion_)
        start = time.perf_counter()
        result: TrainResult = train_sgd(self.model, x, y, self.sgd, hooks=hooks, dtype=self.dtype, progress=progress)
        if self.layout_ == "chunk_outer":
            writer = self._store_writer(result) if self.store_path else None

            def write_block(rows, block):
                for r, row in zip(rows, block):
                    writer.write_rows(int(r), row[None])

            sink = write_block if writer is not None else None
            approx, hvps = softmax_chunk_outer(x, y, self.model.n_classes, self.sgd.lam, self.trajectory_,
                                               self.recursion_.tracked_positions, dtype=self.dtype,
                                               order=self.order, sink=sink)
            self.recursion_.approximators = approx if approx is not None else self.recursion_.approximators[:0]
            self.recursion_.hvp_count = hvps
            if writer is not None:
                writer.finalise()
        elif self.store_path and self.layout_ == "time_outer":
            from unlearn_audit.hfocu.store import export_recursion

            export_recursion(self.recursion_, self.store_path, train_ids=self.ids_,
                             model_hash=weights_hash(result.weights), schedule_digest=result.schedule.digest(),
                             dtype=self.store_dtype, overwrite=True)
            self.recursion_.approximators = self.recursion_.approximators[:0]
        if self.store_path and self.layout_ != "replay":
            from unlearn_audit.hfocu.store import ApproximatorStore

            self.store_ = ApproximatorStore.open(self.store_path, expected_model_hash=weights_hash(result.weights),
                                                 expected_schedule_digest=result.schedule.digest())
        self.fit_seconds_ = time.perf_counter() - start
        self.train_result_ = result
        self.weights_ = result.weights
        self.schedule_ = result.schedule
        self.state_ = result.weights.clone()          # noiseless internal state
        self.deleted_: list[str] = []
        return self

    def _store_writer(self, result: TrainResult):
        from unlearn_audit.hfocu.store import ApproximatorStore

        tracked = self.recursion_.tracked_positions
        self.recursion_.approximators = self.recursion_.approximators[:0]        # nothing n×d in memory
        return ApproximatorStore.create(self.store_path, len(tracked), self.model.dim, self.store_dtype,
                                        model_hash=weights_hash(result.weights),
                                        schedule_digest=result.schedule.digest(),
                                        ids=self.ids_[tracked].tolist(), positions=tracked, overwrite=True,
                                        extra={"curvature": self.recursion_.curvature_name, "order": self.order})

    def _rows_sum(self, rows: np.ndarray) -> torch.Tensor:
        """Σ of the approximators in the given rows (memory or store)."""
        if self.store_ is not None:
            return self.store_.sum_rows(rows, dtype=torch.float64).to(self.state_.dtype)
        return self.recursion_.approximators[torch.as_tensor(rows)].sum(0).to(self.state_.dtype)

    def storage_bytes(self) -> int:
        """Bytes held for approximators (store on disk, or memory)."""
        if self.store_ is not None:
            return int(self.store_.nbytes)
        a = self.recursion_.approximators
        return int(a.element_size() * a.numel())

    # -- deletion ---------------------------------------------------------------------------------------------
    def _positions(self, record_ids, *, check_deleted: bool = True) -> np.ndarray:
        record_ids = [str(r) for r in record_ids]
        if not record_ids:
            raise UnlearningError("empty deletion request")
        if len(set(record_ids)) != len(record_ids):
            raise UnlearningError("a deletion request names the same record id twice")
        unknown = [r for r in record_ids if r not in self.position_of_]
        if unknown:
            raise UnlearningError(f"unknown record id '{unknown[0]}' (not in the training set)")
        if check_deleted:
            done = set(self.deleted_)
            again = [r for r in record_ids if r in done]
            if again:
                raise UnlearningError(f"record id '{again[0]}' was already deleted")
        return np.array([self.position_of_[r] for r in record_ids], dtype=np.int64)

    def approximator_sum(self, record_ids) -> torch.Tensor:
        """Σ_u a_u for the given ids (does not change the state)."""
        pos = self._positions(record_ids, check_deleted=False)
        if self.layout_ == "replay":
            return replay_unlearn(self.model, self.sgd, self.x_, self.y_, self.schedule_, self.trajectory_, pos,
                                  curvature=self.curvature, order=self.order).to(self.state_.dtype)
        if (self.recursion_.row_of[pos] < 0).any():
            bad = self.ids_[pos[self.recursion_.row_of[pos] < 0][0]]
            raise UnlearningError(f"record id '{bad}' has no approximator (not among the declared candidates)")
        return self._rows_sum(self.recursion_.row_of[pos])

    def delete(self, record_ids) -> DeletionReceipt:
        """Apply one deletion request to the internal noiseless state: w̄ ← w̄ + Σ_u a_u."""
        start = time.perf_counter()
        pos = self._positions(record_ids)
        if self.layout_ == "replay":
            self.state_ += self.approximator_sum(record_ids)
            self.deleted_ += [str(r) for r in record_ids]
            return DeletionReceipt([str(r) for r in record_ids], time.perf_counter() - start)
        rows = self.recursion_.row_of[pos]
        if (rows < 0).any():
            raise UnlearningError(f"record id '{self.ids_[pos[rows < 0][0]]}' has no approximator "
                                  "(not among the declared candidates)")
        self.state_ += self._rows_sum(rows)
        self.deleted_ += [str(r) for r in record_ids]
        return DeletionReceipt([str(r) for r in record_ids], time.perf_counter() - start)

    def deleted_positions(self) -> np.ndarray:
        return np.array([self.position_of_[r] for r in self.deleted_], dtype=np.int64)

    # -- certification ----------------------------------------------------------------------------------------
    def certificate_constants(self) -> CertificateConstants:
        """The constants of this run's sensitivity bound, with their provenance: analytic for softmax regression,
        measured (power iteration on I − η_t H_t at sampled steps, max per-sample gradient norm) otherwise. They do
        not depend on the forget set; a trained run saves them (:mod:`unlearn_audit.deletion`)."""
        if self.sgd.clip == "batch":
            raise CertificationError(BATCH_CLIP_REFUSED)
        if self.model.kind == "softmax":
            return SoftmaxRegressionConstants(
                lam=float(self.sgd.lam), max_feature_norm=float(self.x_.reshape(len(self.x_), -1).double()
                                                                .norm(dim=1).max()),
                n_classes=int(self.model.n_classes), clip=self.sgd.clip,
                clip_norm=None if self.sgd.clip_norm is None else float(self.sgd.clip_norm),
                weight_norm_bound=self.sgd.weight_norm_bound,
                measured_max_weight_norm=float(self.train_result_.max_weight_norm))
        return self._measured_constants()

    def certificate(self, record_ids=None) -> SensitivityCertificate:
        """Sensitivity bound Δ on ‖w̄^{−U} − w^{−U}‖ for U = ``record_ids`` (default: everything deleted so far)."""
        pos = self.deleted_positions() if record_ids is None else self._positions(record_ids, check_deleted=False)
        if len(pos) == 0:
            raise UnlearningError("nothing deleted yet: no certificate to compute")
        return certificate_from_constants(self.schedule_, pos, self.certificate_constants(), order=self.order)

    def _measured_constants(self) -> RecursionConstants:
        if not hasattr(self, "measured_constants_"):
            from unlearn_audit.hfocu.curvature import AutodiffHessian, GaussNewton

            op = AutodiffHessian(self.model, self.sgd.lam)
            # ρ must bound ‖I − η H‖ for the true retrain (exact Hessian) and for the operator that propagated the
            # approximators (Gauss-Newton when chosen): both are measured and the max taken.
            ops = [op] + ([GaussNewton(self.model, self.sgd.lam)] if self.curvature == "gauss-newton" else [])
            rhos, gmax = [], 0.0
            for w, bx, by, lr in self.probe_.samples:
                for o in ops:
                    ctx = o.prepare(w, bx, by)
                    hvp = lambda v, ctx=ctx, o=o: o.apply(ctx, v[None])[0]          # noqa: E731
                    rhos.append(power_iteration_rho(hvp, self.model.dim, lr, n_iter=30, seed=0, dtype=w.dtype))
            all_x = self.x_
            for w, _, _, _ in self.probe_.samples:
                ctx = op.prepare(w, all_x, self.y_)
                gmax = max(gmax, float(op.per_sample_grads(ctx).norm(dim=1).max()))
            if self.sgd.clip == "per_sample":
                gmax = min(gmax, float(self.sgd.clip_norm))
            k = len(self.probe_.samples)
            self.measured_constants_ = RecursionConstants(
                model=self.model.kind, clip=self.sgd.clip,
                rho=Constant(max(rhos), "measured",
                             f"power iteration on I - eta_t H_t at {k} sampled steps"
                             + (" (exact Hessian and the Gauss-Newton operator used by the approximators)"
                                if self.curvature == "gauss-newton" else "") + ", max taken"),
                G=Constant(gmax, "measured", f"max per-sample gradient norm over all records at {k} sampled steps"))
        return self.measured_constants_

    def release(self, *, epsilon: float, delta: float, seed: int, mechanism: str = "analytic"
                ) -> tuple[torch.Tensor, SensitivityCertificate, float]:
        """Noised copy of the internal state: w̄ + N(0, σ²I), σ calibrated to Δ of all deletions so far (the state
        holds every one of them, so no subset may set σ)."""
        cert = self.certificate()
        sigma = calibrate(epsilon, delta, cert.sensitivity, mechanism)
        return release(self.state_, sigma, seed), cert, sigma
