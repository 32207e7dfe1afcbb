"""HF-OCU layouts as strategies (DESIGN §2.3, §9): how the approximators of a set of tracked records are computed.

Every layout is used the same way by the in-process unlearner (:class:`~unlearn_audit.hfocu.HFOCUUnlearner`) and by
the sharded precompute (:mod:`unlearn_audit.deletion.precompute`, one shard of records per process):

    layout = make_layout("auto", model, sgd, n_train, tracked_positions, curvature="exact", ...)
    train_sgd(model, x, y, sgd, hooks=layout.hooks())           # what the layout needs during training
    approximators, hvps = layout.finish(x, y)                   # (m, d) rows in ``layout.tracked_positions`` order
    layout.finish(x, y, sink=lambda rows, block: ...)           # or streamed block by block (nothing m x d kept)

* :class:`TimeOuter`: every tracked vector advances one step at every training step
  (:class:`~unlearn_audit.hfocu.recursion.ApproximatorRecursion`); any model, clipping and projection included; the
  m x d block lives in memory during training (best on a GPU).
* :class:`ChunkOuter`: softmax regression without clipping or projection: training records a tiny trajectory, then
  cache-sized chunks of records run through all steps (:func:`~unlearn_audit.hfocu.chunked.softmax_chunk_outer`;
  best on a CPU, and for stores larger than memory: with a sink only one chunk is ever in memory).
* :class:`Replay`: no per-record vectors at all; the weight trajectory is kept and each request is one recursion on
  its summed injection (:func:`~unlearn_audit.hfocu.replay.replay_unlearn`).
"""

from __future__ import annotations

import abc
from typing import Callable, ClassVar

import numpy as np
import torch

from unlearn_audit.hfocu.chunked import SoftmaxTrajectory, softmax_chunk_outer
from unlearn_audit.hfocu.curvature import make_curvature
from unlearn_audit.hfocu.recursion import ApproximatorRecursion, Order
from unlearn_audit.hfocu.replay import WeightTrajectory, replay_unlearn
from unlearn_audit.models import FunctionalModel
from unlearn_audit.training.schedule import Schedule
from unlearn_audit.training.sgd import SGDConfig, StepInfo

__all__ = ["LAYOUTS", "ChunkOuter", "Layout", "Replay", "Sink", "TimeOuter", "make_layout", "resolve_layout"]

LAYOUTS = ("auto", "time_outer", "chunk_outer", "replay")
Sink = Callable[[np.ndarray, torch.Tensor], None]
"""``sink(rows, block)``: ``block[k]`` is the approximator of row ``rows[k]`` (rows index ``tracked_positions``)."""


def resolve_layout(layout: str, model: FunctionalModel, sgd: SGDConfig, curvature: str) -> str:
    """The layout ``auto`` stands for: ``chunk_outer`` for softmax regression without clipping or projection, else
    ``time_outer``. ``chunk_outer`` or ``replay`` where they do not apply, or an unknown name, raise ValueError."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    plain = (model.kind == "softmax" and sgd.clip == "none" and sgd.weight_norm_bound is None
             and curvature in ("exact", "gauss-newton"))
    if layout == "chunk_outer" and not plain:
        raise ValueError("layout 'chunk_outer' needs softmax regression without clipping or projection")
    if layout == "replay" and (sgd.clip != "none" or sgd.weight_norm_bound is not None):
        raise ValueError("replay mode supports plain SGD only (no clipping, no projection); use mode 'all'")
    if layout == "auto":
        return "chunk_outer" if plain else "time_outer"
    return layout


class Layout(abc.ABC):
    """How approximators for ``tracked_positions`` (sorted, unique training positions) are computed.

    Args:
        model, sgd: the model and the training settings whose update map is linearised.
        n_train: training-set size (positions index 0..n_train-1).
        tracked_positions: positions that get an approximator (default: all).
        curvature: ``exact`` or ``gauss-newton``. order: ``propagate_first`` or ``inject_first``.
        dtype: dtype of the approximators. chunk_size: vectors per batched HVP (time-outer) or per chunk
            (chunk-outer, default 64 there). device: where the vectors live.
    """

    name: ClassVar[str]
    keeps_approximators: ClassVar[bool] = True

    def __init__(self, model: FunctionalModel, sgd: SGDConfig, n_train: int, tracked_positions=None, *,
                 curvature: str = "exact", order: Order = "propagate_first", dtype: torch.dtype = torch.float32,
                 chunk_size: int | None = None, device: str | torch.device = "cpu"):
        if order not in ("propagate_first", "inject_first"):
            raise ValueError(f"order must be 'propagate_first' or 'inject_first', got '{order}'")
        self.model, self.sgd, self.n_train = model, sgd, int(n_train)
        self.curvature, self.order, self.dtype = curvature, order, dtype
        self.chunk_size, self.device = chunk_size, torch.device(device)
        tracked = np.arange(n_train) if tracked_positions is None else np.unique(np.asarray(tracked_positions))
        self.tracked_positions = tracked.astype(np.int64)
        self.row_of = np.full(self.n_train, -1, dtype=np.int64)
        self.row_of[self.tracked_positions] = np.arange(len(tracked), dtype=np.int64)
        self.curvature_name = make_curvature(model, sgd.lam, curvature).name

    @abc.abstractmethod
    def hooks(self) -> list[Callable[[StepInfo], None]]:
        """Training hooks that record what this layout needs (attach them to ``train_sgd``)."""

    @abc.abstractmethod
    def finish(self, x: torch.Tensor, y: torch.Tensor, *, sink: Sink | None = None,
               progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor | None, int]:
        """After training: the approximators (m, d) in ``tracked_positions`` order and the number of HVPs applied.
        With ``sink`` the rows are handed over block by block and ``None`` is returned in their place. The layout
        keeps no reference to them afterwards."""


class TimeOuter(Layout):
    """All tracked vectors advance one step at every training step (the recursion is the training hook)."""

    name = "time_outer"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recursion: ApproximatorRecursion | None = None

    def hooks(self) -> list[Callable[[StepInfo], None]]:
        self.recursion = ApproximatorRecursion(self.model, self.sgd, self.n_train, self.tracked_positions,
                                               curvature=self.curvature, order=self.order, dtype=self.dtype,
                                               chunk_size=self.chunk_size or 256, device=self.device)
        return [self.recursion]

    def finish(self, x, y, *, sink=None, progress=None):
        rec, self.recursion = self.recursion, None
        if rec is None:
            raise RuntimeError("TimeOuter.finish before training: attach hooks() to train_sgd first")
        approx, hvps = rec.approximators, int(rec.hvp_count)
        rec.approximators = None                    # the layout and the recursion let go of the m x d block
        if sink is None:
            return approx, hvps
        step = max(1, self.chunk_size or 256)
        for start in range(0, approx.shape[0], step):
            rows = np.arange(start, min(start + step, approx.shape[0]), dtype=np.int64)
            sink(rows, approx[start:start + step])
            if progress:
                progress(int(rows[-1]) + 1, approx.shape[0])
        return None, hvps


class ChunkOuter(Layout):
    """Softmax regression: a tiny trajectory during training, then chunks of records through every step."""

    name = "chunk_outer"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trajectory = SoftmaxTrajectory()

    def hooks(self) -> list[Callable[[StepInfo], None]]:
        return [self.trajectory]

    def finish(self, x, y, *, sink=None, progress=None):
        traj, self.trajectory = self.trajectory, SoftmaxTrajectory()
        return softmax_chunk_outer(x, y, self.model.n_classes, self.sgd.lam, traj, self.tracked_positions,
                                   chunk_size=self.chunk_size or 64, dtype=self.dtype, order=self.order, sink=sink,
                                   progress=progress)


class Replay(Layout):
    """No per-record vectors: the weight trajectory is kept, each request costs T HVPs (one recursion)."""

    name = "replay"
    keeps_approximators = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trajectory = WeightTrajectory()

    def hooks(self) -> list[Callable[[StepInfo], None]]:
        return [self.trajectory]

    def finish(self, x, y, *, sink=None, progress=None):
        return None, 0

    def approximator_sum(self, x: torch.Tensor, y: torch.Tensor, schedule: Schedule, positions) -> torch.Tensor:
        """Σ_{u ∈ positions} a_u by one recursion over the recorded trajectory (flat, model dtype)."""
        return replay_unlearn(self.model, self.sgd, x, y, schedule, self.trajectory, positions,
                              curvature=self.curvature, order=self.order)


_CLASSES: dict[str, type[Layout]] = {c.name: c for c in (TimeOuter, ChunkOuter, Replay)}


def make_layout(layout: str, model: FunctionalModel, sgd: SGDConfig, n_train: int, tracked_positions=None,
                **kwargs) -> Layout:
    """The layout strategy for ``layout`` (``auto`` resolved by :func:`resolve_layout`); keyword arguments as for
    :class:`Layout`."""
    name = resolve_layout(layout, model, sgd, kwargs.get("curvature", "exact"))
    return _CLASSES[name](model, sgd, n_train, tracked_positions, **kwargs)
