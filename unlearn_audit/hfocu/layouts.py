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
* :class:`ReverseOuter`: the backward walk (:mod:`unlearn_audit.hfocu.reverse`): training records the trajectory,
  then cache-sized blocks of the d × d propagator's rows walk every step backwards, each producing its coordinates of
  every approximator (a column slab, streamed to the store with ``column_sink``). d row products per step instead of
  one HVP per live approximator: linear in n, the fastest for ``all`` mode when d < n. Any model and setting
  (closed form for plain softmax regression, vmapped HVPs / VJPs otherwise).
* :class:`Replay`: no per-record vectors at all; the weight trajectory is kept and each request is one recursion on
  its summed injection (:func:`~unlearn_audit.hfocu.replay.replay_unlearn`).

``auto`` picks the layout from a cost model (:func:`choose_layout`): forward ≈ m·T·(1 − 1/(2E)) HVPs (records are
first injected uniformly over the first epoch; zero vectors are skipped) against reverse ≈ d·T·(1 + overhead) row
products, when the reverse trajectory fits in memory; the choice and its reason are recorded (``Layout.choice``).
"""

from __future__ import annotations

import abc
import math
import os
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch

from unlearn_audit.hfocu.chunked import SoftmaxTrajectory, softmax_chunk_outer
from unlearn_audit.hfocu.curvature import make_curvature
from unlearn_audit.hfocu.recursion import ApproximatorRecursion, Order
from unlearn_audit.hfocu.replay import WeightTrajectory, replay_unlearn
from unlearn_audit.hfocu.reverse import ColumnSink, generic_reverse, softmax_reverse
from unlearn_audit.models import FunctionalModel
from unlearn_audit.training.schedule import Schedule
from unlearn_audit.training.sgd import SGDConfig, StepInfo

__all__ = ["LAYOUTS", "ChunkOuter", "ColumnSink", "Layout", "LayoutChoice", "Replay", "ReverseOuter", "Sink",
           "TimeOuter", "choose_layout", "make_layout", "resolve_layout"]

LAYOUTS = ("auto", "time_outer", "chunk_outer", "reverse", "replay")
REVERSE_OVERHEAD = {"closed form": 0.1, "autodiff": 0.5}
"""Extra work of a reverse row product over a forward HVP: the closed form's injections reuse S = P X̃_Bᵀ (plus one
P w_t per step); other models recompute the batch's per-sample gradients for every block of rows."""
Sink = Callable[[np.ndarray, torch.Tensor], None]
"""``sink(rows, block)``: ``block[k]`` is the approximator of row ``rows[k]`` (rows index ``tracked_positions``)."""


@dataclass(frozen=True)
class LayoutChoice:
    """Which layout computes the approximators, and why (recorded in results, ``precompute.json`` and the store)."""

    name: str
    reason: str


def is_plain_softmax(model: FunctionalModel, sgd: SGDConfig, curvature: str = "exact") -> bool:
    """Softmax regression trained by plain SGD (no clipping, no projection): the closed forms apply."""
    return (model.kind == "softmax" and sgd.clip == "none" and sgd.weight_norm_bound is None
            and curvature in ("exact", "gauss-newton"))


def _memory_bytes() -> int:
    """Physical memory of this machine (bytes; 0 when unknown)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):                                      # pragma: no cover
        return 0


def choose_layout(layout: str, model: FunctionalModel, sgd: SGDConfig, curvature: str, n_train: int | None = None,
                  n_tracked: int | None = None, *, itemsize: int = 4, memory_bytes: int | None = None
                  ) -> LayoutChoice:
    """The layout for ``layout`` with the reason. Explicit names are checked (``chunk_outer`` needs plain softmax
    regression; ``replay`` plain SGD). ``auto``: with the run's size known (``n_train``, ``n_tracked``), the cost
    model of the module docstring — ``reverse`` when d·T·(1 + overhead) < m·T·(1 − 1/(2E)) and its trajectory
    (T·d floats) takes at most half of ``memory_bytes`` (default: this machine's RAM); else the forward layout:
    ``chunk_outer`` for plain softmax regression, ``time_outer`` otherwise."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    plain = is_plain_softmax(model, sgd, curvature)
    if layout == "chunk_outer" and not plain:
        raise ValueError("layout 'chunk_outer' needs softmax regression without clipping or projection")
    if layout == "replay" and (sgd.clip != "none" or sgd.weight_norm_bound is not None):
        raise ValueError("replay mode supports plain SGD only (no clipping, no projection); use mode 'all'")
    if layout != "auto":
        return LayoutChoice(layout, "asked for")
    forward = "chunk_outer" if plain else "time_outer"
    why_fwd = "plain softmax regression" if plain else "not plain softmax regression (clipping, projection, model)"
    if n_train is None:
        return LayoutChoice(forward, f"{why_fwd}; run size unknown, no cost comparison")
    n = int(n_train)
    m = n if n_tracked is None else int(n_tracked)
    d = model.dim
    epochs = max(1, int(sgd.epochs))
    T = epochs * math.ceil(n / max(1, int(sgd.batch_size)))
    fwd_cost = m * T * (1.0 - 1.0 / (2 * epochs))
    overhead = REVERSE_OVERHEAD["closed form" if plain else "autodiff"]
    rev_cost = d * T * (1.0 + overhead)
    traj_bytes = T * d * int(itemsize)
    mem = _memory_bytes() if memory_bytes is None else int(memory_bytes)
    fits = mem <= 0 or traj_bytes <= mem // 2
    costs = (f"reverse ≈ d·T·{1 + overhead:g} = {rev_cost:.3g} row products vs forward ≈ m·T·(1 − 1/2E) = "
             f"{fwd_cost:.3g} HVPs (d = {d}, m = {m}, T = {T})")
    if rev_cost < fwd_cost and fits:
        return LayoutChoice("reverse", f"{costs}; trajectory {traj_bytes / 2 ** 30:.2f} GiB fits in memory")
    if rev_cost < fwd_cost:
        return LayoutChoice(forward, f"{costs}, but the reverse trajectory ({traj_bytes / 2 ** 30:.2f} GiB) exceeds "
                                     f"half the memory ({mem / 2 ** 30:.1f} GiB): {forward} ({why_fwd})")
    return LayoutChoice(forward, f"{costs}: forward is cheaper; {forward} ({why_fwd})")


def resolve_layout(layout: str, model: FunctionalModel, sgd: SGDConfig, curvature: str, n_train: int | None = None,
                   n_tracked: int | None = None) -> str:
    """The name :func:`choose_layout` picks (ValueError for a layout that does not apply or an unknown name)."""
    return choose_layout(layout, model, sgd, curvature, n_train, n_tracked).name


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
    writes_columns: ClassVar[bool] = False
    """True when :meth:`finish` streams column slabs (``column_sink``) instead of blocks of rows (``sink``)."""
    choice: LayoutChoice | None = None
    """Set by :func:`make_layout`: the layout chosen and why."""

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
               progress: Callable[[int, int], None] | None = None,
               column_sink: ColumnSink | None = None) -> tuple[torch.Tensor | None, int]:
        """After training: the approximators (m, d) in ``tracked_positions`` order and the number of HVPs applied.
        With ``sink`` the rows are handed over block by block (``column_sink``: column slabs, for a layout that
        ``writes_columns``) and ``None`` is returned in their place. The layout keeps no reference to them
        afterwards."""

    def stream(self, x: torch.Tensor, y: torch.Tensor, writer, row_offset: int = 0,
               progress: Callable[[int, int], None] | None = None) -> int:
        """Finish into a store writer (:class:`~unlearn_audit.hfocu.store.StoreWriter` owning this layout's rows
        from ``row_offset`` on): rows or column slabs, whichever the layout produces. Returns the HVP count."""
        if self.writes_columns:
            _, hvps = self.finish(x, y, column_sink=writer.write_columns, progress=progress)
        else:
            _, hvps = self.finish(x, y, sink=lambda rows, block: writer.write_at(row_offset + rows, block),
                                  progress=progress)
        return hvps

    @staticmethod
    def _no_columns(column_sink) -> None:
        if column_sink is not None:
            raise ValueError("this layout streams rows (sink), not column slabs")


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

    def finish(self, x, y, *, sink=None, progress=None, column_sink=None):
        self._no_columns(column_sink)
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

    def finish(self, x, y, *, sink=None, progress=None, column_sink=None):
        self._no_columns(column_sink)
        traj, self.trajectory = self.trajectory, SoftmaxTrajectory()
        return softmax_chunk_outer(x, y, self.model.n_classes, self.sgd.lam, traj, self.tracked_positions,
                                   chunk_size=self.chunk_size or 64, dtype=self.dtype, order=self.order, sink=sink,
                                   progress=progress)


class ReverseOuter(Layout):
    """The backward walk: the trajectory during training, then blocks of the propagator's rows through every step
    backwards (:mod:`unlearn_audit.hfocu.reverse`). ``chunk_size`` is the rows per block (default for the softmax
    closed form 256 on a CPU, 4096 on a GPU; 64 for vmapped HVPs)."""

    name = "reverse"
    writes_columns = True
    columns: tuple[int, int] | None = None
    """Coordinates to compute (default all): one process's share in a column-split precompute."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plain = is_plain_softmax(self.model, self.sgd, self.curvature)
        self.trajectory: SoftmaxTrajectory | WeightTrajectory = (SoftmaxTrajectory() if self.plain
                                                                 else WeightTrajectory())

    def hooks(self) -> list[Callable[[StepInfo], None]]:
        return [self.trajectory]

    def finish(self, x, y, *, sink=None, progress=None, column_sink=None):
        if sink is not None:
            raise ValueError("the reverse layout produces column slabs: pass column_sink (StoreWriter.write_columns)")
        traj = self.trajectory
        self.trajectory = SoftmaxTrajectory() if self.plain else WeightTrajectory()
        if isinstance(traj, SoftmaxTrajectory):
            rows = self.chunk_size or (4096 if self.device.type == "cuda" else 256)     # measured on this CPU
            return softmax_reverse(x, y, self.model.n_classes, self.sgd.lam, traj, self.tracked_positions,
                                   block_rows=rows, dtype=self.dtype, order=self.order,
                                   column_sink=column_sink, progress=progress, columns=self.columns)
        return generic_reverse(self.model, self.sgd, x, y, traj, self.tracked_positions, curvature=self.curvature,
                               order=self.order, block_rows=self.chunk_size or 64, dtype=self.dtype,
                               column_sink=column_sink, progress=progress, columns=self.columns)


class Replay(Layout):
    """No per-record vectors: the weight trajectory is kept, each request costs T HVPs (one recursion)."""

    name = "replay"
    keeps_approximators = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trajectory = WeightTrajectory()

    def hooks(self) -> list[Callable[[StepInfo], None]]:
        return [self.trajectory]

    def finish(self, x, y, *, sink=None, progress=None, column_sink=None):
        return None, 0

    def approximator_sum(self, x: torch.Tensor, y: torch.Tensor, schedule: Schedule, positions) -> torch.Tensor:
        """Σ_{u ∈ positions} a_u by one recursion over the recorded trajectory (flat, model dtype)."""
        return replay_unlearn(self.model, self.sgd, x, y, schedule, self.trajectory, positions,
                              curvature=self.curvature, order=self.order)


_CLASSES: dict[str, type[Layout]] = {c.name: c for c in (TimeOuter, ChunkOuter, ReverseOuter, Replay)}


def make_layout(layout: str, model: FunctionalModel, sgd: SGDConfig, n_train: int, tracked_positions=None,
                **kwargs) -> Layout:
    """The layout strategy for ``layout`` (``auto`` resolved by :func:`choose_layout` from this run's size, the
    choice kept in ``.choice``); keyword arguments as for :class:`Layout`. ``chunk_size`` applies to the chosen
    layout only when given for it (``chunk_sizes={name: size}``), else the layout's default."""
    sizes = kwargs.pop("chunk_sizes", None) or {}
    n_tracked = n_train if tracked_positions is None else len(np.unique(np.asarray(tracked_positions)))
    itemsize = torch.empty((), dtype=kwargs.get("dtype", torch.float32)).element_size()
    choice = choose_layout(layout, model, sgd, kwargs.get("curvature", "exact"), n_train, n_tracked,
                           itemsize=itemsize)
    if choice.name in sizes:
        kwargs["chunk_size"] = sizes[choice.name]
    strategy = _CLASSES[choice.name](model, sgd, n_train, tracked_positions, **kwargs)
    strategy.choice = choice
    return strategy
