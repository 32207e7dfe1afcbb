"""HF-OCU unlearner: a fit / delete / release facade over training, the approximator recursion and certification.

    unlearner = HFOCUUnlearner(model, SGDConfig(...)).fit(x, y, ids)
    unlearner.delete(["digits:17", "digits:302"])      # milliseconds: a vector addition
    w_released, cert, sigma = unlearner.release(epsilon=1.0, delta=1e-5, seed=7)

The noiseless internal state w̄ = w_T + Σ_{u deleted} a_u never leaves the object except through ``release``,
which draws fresh Gaussian noise calibrated to the sensitivity of ALL deletions so far (DESIGN §2.4).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
import torch

from unlearn_audit.certify import (
    BOUNDS,
    CertificateConstants,
    SensitivityCertificate,
    calibrate,
    certificate_from_constants,
    release,
)
from unlearn_audit.common import check_record_ids
from unlearn_audit.hfocu.constants import TrajectoryProbe, run_constants
from unlearn_audit.hfocu.layouts import Layout, Replay, make_layout
from unlearn_audit.hfocu.recursion import Order
from unlearn_audit.hfocu.replay import (
    BoundCache,
    MeasuredCache,
    WeightTrajectory,
    certificate_replay_terms,
    replay_supported,
)
from unlearn_audit.models import FunctionalModel
from unlearn_audit.models.functional import weights_hash
from unlearn_audit.training import SGDConfig, TrainResult, resolve_device, train_sgd

if TYPE_CHECKING:
    from unlearn_audit.hfocu.store import ApproximatorStore

Mode = Literal["all", "candidates", "replay"]
LayoutName = Literal["auto", "time_outer", "chunk_outer", "reverse"]
LAYOUT_NAMES = ("auto", "time_outer", "chunk_outer", "reverse")


Bound = Literal["a_posteriori", "worst_case"]


class UnlearningError(ValueError):
    """A deletion request that cannot be applied (unknown id, already deleted, no approximator)."""


@dataclass
class DeletionReceipt:
    record_ids: list[str]
    seconds: float


class HFOCUUnlearner:
    """Hessian-free online certified unlearning (Qiao et al., ICLR 2025) for a model trained here by SGD.

    Args:
        model: a :class:`~unlearn_audit.models.FunctionalModel`.
        sgd: training hyper-parameters (the update map the approximators linearise).
        mode: ``all`` keeps an approximator per training record; ``candidates`` only for ``candidates`` (ids);
            ``replay`` keeps the weight trajectory and computes each request by one recursion (T HVPs).
        layout: ``chunk_outer`` (softmax regression without clipping: a tiny trajectory during training, then
            cache-sized chunks of records through all steps), ``time_outer`` (all vectors advance together during
            training; any model), ``reverse`` (the backward walk over the recorded trajectory, d row products per
            step instead of one HVP per record: linear in n, fastest when d < n; any model), or ``auto`` (a cost
            model picks; ``layout_choice_`` says which and why: :func:`~unlearn_audit.hfocu.layouts.choose_layout`).
        device: ``cpu``, ``cuda`` or ``auto``.
        store_path: keep the approximators in a file-backed store (memory-mapped chunks with checksums, see
            :mod:`unlearn_audit.hfocu.store`) instead of memory; with the chunk-outer layout each finished chunk
            streams to disk, so n·d may exceed RAM. ``store_dtype``: ``float32`` or ``bfloat16``.
        curvature: ``exact`` (Hessian) or ``gauss-newton`` (named as such in results).
        order: ``propagate_first`` (the derivation) or ``inject_first`` (the paper's public code, for comparison).
        dtype: dtype of training weights and approximators.
        bound: the certificate's sensitivity bound, ``a_posteriori`` (DESIGN §2.4b; the default for softmax
            regression with the derivation's order: the fit then keeps the weight trajectory, T·d floats) or
            ``worst_case`` (§2.4). Other models use the worst-case recursion with measured constants either way.
    """

    capacity_budget_: dict | None = None
    """The release's σ budget (set by the audit's capacity step; kept in the trained run for ``forget``)."""

    def __init__(self, model: FunctionalModel, sgd: SGDConfig, *, mode: Mode = "all",
                 candidates: list[str] | None = None, curvature: str = "exact", order: Order = "propagate_first",
                 dtype: torch.dtype = torch.float32, chunk_size: int = 256, layout: LayoutName = "auto",
                 device: str = "cpu", store_path: str | None = None, store_dtype: str = "float32",
                 bound: Bound | None = None):
        if mode not in ("all", "candidates", "replay"):
            raise ValueError(f"mode must be 'all', 'candidates' or 'replay', got '{mode}'")
        if layout not in LAYOUT_NAMES:
            raise ValueError(f"layout must be one of {', '.join(repr(n) for n in LAYOUT_NAMES)}, got '{layout}'")
        if mode == "candidates" and not candidates:
            raise ValueError("mode 'candidates' needs a non-empty list of candidate record ids")
        self.model, self.sgd, self.mode = model, sgd, mode
        self.candidates = candidates
        self.curvature, self.order, self.dtype, self.chunk_size = curvature, order, dtype, chunk_size
        self.layout, self.device = layout, resolve_device(device)
        self.store_path, self.store_dtype = store_path, store_dtype
        self.store_: ApproximatorStore | None = None
        if bound is None:     # the a-posteriori bound certifies the derivation's order only
            bound = "a_posteriori" if order == "propagate_first" else "worst_case"
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {', '.join(BOUNDS)}, got '{bound}'")
        if bound == "a_posteriori" and order != "propagate_first" and model.kind == "softmax":
            raise ValueError("bound 'a_posteriori' certifies the derivation's order (propagate, then inject); "
                             "with order 'inject_first' use bound 'worst_case'")
        self.bound = bound

    # -- training ---------------------------------------------------------------------------------------------
    def fit(self, x: torch.Tensor, y: torch.Tensor, ids, *, progress: Callable[[int, int], None] | None = None):
        """Train on (x, y) while keeping approximators; ``ids`` are the records' stable ids (str).

        Fitted attributes: ``weights_`` (w_T), ``schedule_``, ``layout_`` (the layout used), ``layout_choice_``
        (:class:`~unlearn_audit.hfocu.layouts.LayoutChoice`: the layout and why ``auto`` chose it), ``approximators_``
        ((m, d) in memory, or None with a store or in replay mode), ``store_`` (the file-backed store, if any),
        ``tracked_positions_``/``row_of_`` (which training positions have an approximator, in which row),
        ``hvp_count_``, ``curvature_name_``, ``fit_seconds_``, ``state_`` (the noiseless internal state)."""
        self.ids_ = np.asarray(ids).astype(str)
        if len(self.ids_) != len(x) or len(np.unique(self.ids_)) != len(self.ids_):
            raise UnlearningError("ids must be unique and one per training record")
        self.position_of_ = {rid: i for i, rid in enumerate(self.ids_)}
        self.deleted_: list[str] = []
        tracked = None
        if self.mode == "candidates":
            tracked = self._positions(self.candidates, check_deleted=False)
        x, y = x.to(self.device), y.to(self.device)
        self.x_, self.y_ = x, y
        layout: Layout = make_layout("replay" if self.mode == "replay" else self.layout, self.model, self.sgd,
                                     len(x), tracked, curvature=self.curvature, order=self.order, dtype=self.dtype,
                                     chunk_sizes={"time_outer": self.chunk_size}, device=self.device)
        self.layout_ = layout.name
        self.layout_choice_ = layout.choice
        self.tracked_positions_, self.row_of_ = layout.tracked_positions, layout.row_of
        self.curvature_name_ = layout.curvature_name
        self.probe_ = TrajectoryProbe.for_run(len(x), self.sgd)
        hooks = ([] if self.model.kind == "softmax" else [self.probe_]) + layout.hooks()
        self.bound_cache_: BoundCache | MeasuredCache | None = None
        self.weight_trajectory_ = None
        if self.bound == "a_posteriori" and not isinstance(layout, Replay) and self._replay_certifiable(len(x)):
            self.weight_trajectory_ = WeightTrajectory()        # w_t for the a-posteriori certificate's replay
            hooks.append(self.weight_trajectory_)
        start = time.perf_counter()
        result: TrainResult = train_sgd(self.model, x, y, self.sgd, hooks=hooks, dtype=self.dtype, progress=progress)
        if not (math.isfinite(result.max_weight_norm) and bool(torch.isfinite(result.weights).all())):
            raise UnlearningError(f"training diverged: the weights of {self.model.kind} model became NaN or inf "
                                  f"(lr {self.sgd.lr:g}); lower training.lr, or check the model's initialisation")
        self.approximators_ = None
        if self.store_path and layout.keeps_approximators:
            writer = self._store_writer(result)
            self.hvp_count_ = layout.stream(x, y, writer)
            writer.finalise()
            from unlearn_audit.hfocu.store import ApproximatorStore

            self.store_ = ApproximatorStore.open(self.store_path, expected_model_hash=weights_hash(result.weights),
                                                 expected_schedule_digest=result.schedule.digest())
        else:
            self.approximators_, self.hvp_count_ = layout.finish(x, y)
        self.replay_ = layout if isinstance(layout, Replay) else None     # the trajectory replay mode needs
        self.fit_seconds_ = time.perf_counter() - start
        self.train_result_ = result
        self.weights_ = result.weights
        self.schedule_ = result.schedule
        self.state_ = result.weights.clone()          # noiseless internal state
        return self

    def _store_writer(self, result: TrainResult):
        from unlearn_audit.hfocu.store import ApproximatorStore

        tracked = self.tracked_positions_
        return ApproximatorStore.create(self.store_path, len(tracked), self.model.dim, self.store_dtype,
                                        model_hash=weights_hash(result.weights),
                                        schedule_digest=result.schedule.digest(),
                                        ids=self.ids_[tracked].tolist(), positions=tracked, overwrite=True,
                                        extra={"curvature": self.curvature_name_, "order": self.order,
                                               "layout": self.layout_, "layout_reason": self.layout_reason})

    @property
    def layout_reason(self) -> str:
        """Why the fitted layout was used (``asked for``, or the cost comparison of ``auto``)."""
        choice = getattr(self, "layout_choice_", None)
        return "" if choice is None else choice.reason

    def _rows_sum(self, rows: np.ndarray) -> torch.Tensor:
        """Σ of the approximators in the given rows (memory or store)."""
        if self.store_ is not None:
            return self.store_.sum_rows(rows, dtype=torch.float64).to(self.state_.dtype)
        if self.approximators_ is None:
            raise UnlearningError("this unlearner keeps no approximators (replay mode)")
        return self.approximators_[torch.as_tensor(rows)].sum(0).to(self.state_.dtype)

    def storage_bytes(self) -> int:
        """Bytes held for approximators (store on disk, or memory; 0 in replay mode)."""
        if self.store_ is not None:
            return int(self.store_.nbytes)
        a = self.approximators_
        return 0 if a is None else int(a.element_size() * a.numel())

    # -- deletion ---------------------------------------------------------------------------------------------
    def _positions(self, record_ids, *, check_deleted: bool = True) -> np.ndarray:
        record_ids = check_record_ids([str(r) for r in record_ids], UnlearningError)
        unknown = [r for r in record_ids if r not in self.position_of_]
        if unknown:
            raise UnlearningError(f"unknown record id '{unknown[0]}' (not in the training set)")
        if check_deleted:
            done = set(self.deleted_)
            again = [r for r in record_ids if r in done]
            if again:
                raise UnlearningError(f"record id '{again[0]}' was already deleted")
        return np.array([self.position_of_[r] for r in record_ids], dtype=np.int64)

    def _rows(self, pos: np.ndarray) -> np.ndarray:
        rows = self.row_of_[pos]
        if (rows < 0).any():
            raise UnlearningError(f"record id '{self.ids_[pos[rows < 0][0]]}' has no approximator "
                                  "(not among the declared candidates)")
        return rows

    def approximator_sum(self, record_ids) -> torch.Tensor:
        """Σ_u a_u for the given ids (does not change the state)."""
        pos = self._positions(record_ids, check_deleted=False)
        if self.replay_ is not None:
            return self.replay_.approximator_sum(self.x_, self.y_, self.schedule_, pos).to(self.state_.dtype)
        return self._rows_sum(self._rows(pos))

    def delete(self, record_ids) -> DeletionReceipt:
        """Apply one deletion request to the internal noiseless state: w̄ ← w̄ + Σ_u a_u."""
        start = time.perf_counter()
        pos = self._positions(record_ids)
        if self.replay_ is not None:
            self.state_ += self.replay_.approximator_sum(self.x_, self.y_, self.schedule_, pos).to(self.state_.dtype)
        else:
            self.state_ += self._rows_sum(self._rows(pos))
        self.deleted_ += [str(r) for r in record_ids]
        return DeletionReceipt([str(r) for r in record_ids], time.perf_counter() - start)

    def deleted_positions(self) -> np.ndarray:
        return np.array([self.position_of_[r] for r in self.deleted_], dtype=np.int64)

    # -- certification ----------------------------------------------------------------------------------------
    def certificate_constants(self) -> CertificateConstants:
        """The constants of this run's sensitivity bound, with their provenance (:func:`~unlearn_audit.hfocu.
        constants.run_constants`: analytic for softmax regression, measured otherwise, computed once). They do not
        depend on the forget set; a trained run saves them (:mod:`unlearn_audit.deletion`)."""
        if getattr(self, "constants_", None) is None:
            self.constants_ = run_constants(self.model, self.sgd, self.curvature, self.x_, self.y_,
                                            self.train_result_, self.probe_)
        return self.constants_

    def certificate(self, record_ids=None, *, bound: Bound | None = None) -> SensitivityCertificate:
        """Sensitivity bound Δ on ‖w̄^{−U} − w^{−U}‖ for U = ``record_ids`` (default: everything deleted so far),
        by :func:`~unlearn_audit.certify.certificate_from_constants` (the trained run's path too).

        ``bound`` (default: the unlearner's ``bound``): ``a_posteriori`` (DESIGN §2.4b, softmax regression, replayed
        along this fit's recorded trajectory; raises :class:`~unlearn_audit.certify.NotCertifiable` when its
        recursion blows up) or ``worst_case`` (§2.4). Other models use the first-order recursion with measured
        constants either way."""
        pos = self.deleted_positions() if record_ids is None else self._positions(record_ids, check_deleted=False)
        if len(pos) == 0:
            raise UnlearningError("nothing deleted yet: no certificate to compute")
        bound = self.bound if bound is None else bound
        whole_state = record_ids is None
        replay = None
        if bound == "a_posteriori" and self._recorded_weights() is not None:
            replay = lambda p: self._replay_terms(p, whole_state)          # noqa: E731
        return certificate_from_constants(self.schedule_, pos, self.certificate_constants(), order=self.order,
                                          bound=bound, replay=replay)

    def _recorded_weights(self) -> list | None:
        """w_0..w_{T-1} as recorded during training (None when this fit kept no trajectory)."""
        for traj in (getattr(self, "weight_trajectory_", None),
                     getattr(getattr(self, "replay_", None), "trajectory", None)):
            if traj is not None and len(getattr(traj, "weights", ())) == self.schedule_.n_steps:
                return traj.weights
        return None

    #: recorded weights kept for the measured a-posteriori certificate of models without analytic constants, at most
    #: this many bytes (T·d float32); larger runs get the worst-case bound with measured constants
    TRAJECTORY_BUDGET_BYTES = 1 << 30

    def _replay_certifiable(self, n_train: int) -> bool:
        """Whether this fit keeps the trajectory for the a-posteriori replay (:func:`~unlearn_audit.hfocu.replay.
        replay_supported`; models other than softmax regression within the memory budget). Otherwise the
        certificate is the worst-case recursion with measured constants."""
        if not replay_supported(self.model, self.sgd):
            return False
        if self.model.kind == "softmax":
            return True
        steps = self.sgd.epochs * -(-int(n_train) // self.sgd.batch_size)
        return steps * self.model.dim * 4 <= self.TRAJECTORY_BUDGET_BYTES

    def _replay_terms(self, pos: np.ndarray, whole_state: bool):
        """The a-posteriori certificate's replay of U = ``pos`` along the recorded trajectory (float64), with the
        gap to what was actually added to the state (the whole state, or the approximator sum of ``pos``)."""
        if whole_state:
            stored = self.state_.detach().double() - self.weights_.detach().double()
        else:
            stored = self.approximator_sum(self.ids_[pos].tolist()).double()
        terms, self.bound_cache_ = certificate_replay_terms(
            self.model, self.sgd, self.x_, self.y_, self.schedule_, self._recorded_weights(), self.weights_, pos,
            stored_sum=stored, cache=self.bound_cache_, train_dtype=str(self.dtype))
        return terms

    def release(self, *, epsilon: float, delta: float, seed: int, mechanism: str = "analytic"
                ) -> tuple[torch.Tensor, SensitivityCertificate, float]:
        """Noised copy of the internal state: w̄ + N(0, σ²I), σ calibrated to Δ of all deletions so far (the state
        holds every one of them, so no subset may set σ)."""
        cert = self.certificate()
        sigma = calibrate(epsilon, delta, cert.sensitivity, mechanism)
        return release(self.state_, sigma, seed), cert, sigma
