"""Reverse-mode HF-OCU accumulation (DESIGN §9 "Reverse mode"): cost linear in n when d < n.

With J_t = ∂w_{t+1}/∂w_t (I − η_t H_t for plain SGD) and c_t(u) the linearised injection of record u at step t
(η_t/|B_t| · ∇ℓ(w_t; z_u), clipping and projection linearised as the forward recursion does), the forward recursion
(:mod:`unlearn_audit.hfocu.recursion`, propagate then inject) gives

    a_u(T) = Σ_{t: u∈B_t} P_{t} c_t(u),     P_t = J_{T−1} ··· J_{t+1}         (inject_first: P_t = J_{T−1} ··· J_t)

so the approximators are accumulated by walking the recorded trajectory backwards with one d × d matrix P (start at
I): at step t add P c_t(u) to a_u for u ∈ B_t, then P ← P J_t (inject_first: update P first). Every row of P evolves on
its own (row ← row J_t = (J_tᵀ rowᵀ)ᵀ; for plain SGD H_t is symmetric, so a row is propagated exactly like a forward
vector), so a cache-sized block of P's rows — a block of coordinates — walks through every step before the next
block, and produces that block's coordinates of every approximator: a column slab (m, k) handed to a column sink
(the store's :meth:`~unlearn_audit.hfocu.store.StoreWriter.write_columns`); n·d is never held in memory.

Cost: d row-vector products per step instead of one HVP per live approximator: d·T against ≈ m·T, linear in the
number m of tracked records. The walk stops at the first step at which any tracked record is injected.

* Softmax regression without clipping or projection (:func:`softmax_reverse`): the closed form on the recorded
  :class:`~unlearn_audit.hfocu.chunked.SoftmaxTrajectory`; the injections reuse S = P_block X̃_Bᵀ, which the
  propagation computes anyway (∇ℓ(w_t; z_u) = (p_u − e_y) ⊗ x̃_u + λ w_t, so P ∇ℓ = Σ_c (p_u − e_y)_c S_{·c,u} + λ P w_t;
  only P w_t is one extra product per step).
* Any other model or setting (:func:`generic_reverse`): vmapped Hessian-vector products (or vector-Jacobian products
  of the exact update map with clipping or projection) on rows of P, through the forward recursion's own step
  functions (:class:`~unlearn_audit.hfocu.recursion.ApproximatorRecursion`), on the recorded
  :class:`~unlearn_audit.hfocu.replay.WeightTrajectory`.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Callable, TypeVar, cast

import numpy as np
import torch

from unlearn_audit.hfocu.chunked import Order, SoftmaxTrajectory, flat_to_cd
from unlearn_audit.models import FunctionalModel
from unlearn_audit.training.sgd import SGDConfig, StepInfo

__all__ = ["ColumnSink", "first_injection_step", "flush_subnormals", "generic_reverse", "softmax_reverse"]

ColumnSink = Callable[[int, torch.Tensor], None]
"""``sink(col_start, slab)``: ``slab[r, j]`` is coordinate ``col_start + j`` of the approximator of row ``r`` (rows
index ``tracked_positions``; every row is in every slab)."""


def first_injection_step(batches, n_train: int, positions: np.ndarray) -> int:
    """The first step at which any of ``positions`` is in the batch (len(batches) when none is): the backward walk
    stops there."""
    tracked = np.zeros(n_train, dtype=bool)
    tracked[np.asarray(positions, dtype=np.int64)] = True
    for t, pos in enumerate(batches):
        if tracked[np.asarray(pos)].any():
            return t
    return len(batches)


class _SlabBuffer:
    """Collects column slabs (m, k) into a buffer of up to ``max_cols`` columns and hands it to the sink when full
    (fewer, larger column writes into the store), or fills ``out`` (m, d) when there is no sink."""

    def __init__(self, m: int, d: int, dtype, device, sink: ColumnSink | None, max_cols: int):
        self.sink, self.max_cols = sink, max(1, int(max_cols))
        self.out = None if sink is not None else torch.zeros(m, d, dtype=dtype, device=device)
        self.buf = None if sink is None else torch.zeros(m, min(self.max_cols, d), dtype=dtype, device=device)
        self.start, self.fill = 0, 0

    def add(self, col_start: int, slab: torch.Tensor) -> None:
        if self.out is not None:
            self.out[:, col_start:col_start + slab.shape[1]] = slab
            return
        assert self.buf is not None and self.sink is not None
        if self.fill and (self.fill + slab.shape[1] > self.buf.shape[1]):
            self.flush()
        if self.fill == 0:
            self.start = col_start
        self.buf[:, self.fill:self.fill + slab.shape[1]] = slab
        self.fill += slab.shape[1]

    def flush(self) -> None:
        if self.sink is not None and self.buf is not None and self.fill:
            self.sink(self.start, self.buf[:, :self.fill])
            self.fill = 0


def _batch_rows(batches, row_of: np.ndarray, device) -> list:
    """Per step: (slots in the batch that are tracked, their approximator rows, whether that is the whole batch), or
    None when the batch has none."""
    out = []
    for pos in batches:
        rows = row_of[np.asarray(pos)]
        keep = np.flatnonzero(rows >= 0)
        out.append(None if len(keep) == 0 else (torch.as_tensor(keep, device=device),
                                                torch.as_tensor(rows[keep], device=device), len(keep) == len(rows)))
    return out


@contextmanager
def flush_subnormals():
    """Flush float subnormals to zero on the CPU while the recursion runs. With a decaying step size (η_t = η0 γ^t)
    the products η_t·(…) of a long run pass through float32's subnormal range (below 1.2e-38), where every GEMM
    element takes a slow microcode path: measured 288 ms instead of 4.3 ms per block-step (256 rows, d = 7,850) —
    at γ = 0.995 over 15 epochs of full Fashion-MNIST, ~3,300 of the 28,125 steps. Values that small are far below
    float32 rounding of the O(1) entries they are added to. The previous mode is not readable in torch; it is set
    back to off afterwards."""
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


F = TypeVar("F", bound=Callable[..., Any])


def _subnormals_flushed(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with flush_subnormals():
            return fn(*args, **kwargs)

    return cast(F, wrapper)


def _column_range(columns: tuple[int, int] | None, d: int) -> tuple[int, int]:
    lo, hi = (0, d) if columns is None else (int(columns[0]), int(columns[1]))
    if not 0 <= lo <= hi <= d:
        raise ValueError(f"columns must be a range inside 0..{d}, got {columns}")
    return lo, hi


def _default_buffer_cols(m: int, d: int, itemsize: int, buffer_bytes: int) -> int:
    return max(1, min(d, buffer_bytes // max(1, m * itemsize)))


def _walk_setup(m: int, d: int, dtype: torch.dtype, dev, column_sink, buffer_bytes: int,
                columns: tuple[int, int] | None, block_rows: int) -> tuple[_SlabBuffer, list[tuple[int, int]]]:
    """The column-slab buffer and the blocks [c0, c1) of the propagator's rows (= coordinates) one walk covers."""
    buf = _SlabBuffer(m, d, dtype, dev, column_sink,
                      _default_buffer_cols(m, d, torch.empty((), dtype=dtype).element_size(), buffer_bytes))
    lo, hi = _column_range(columns, d)
    step = max(1, int(block_rows))
    return buf, [(c0, min(hi, c0 + step)) for c0 in range(lo, hi, step)]


@_subnormals_flushed
def softmax_reverse(x: torch.Tensor, y: torch.Tensor, n_classes: int, lam: float, traj: SoftmaxTrajectory,
                    positions: np.ndarray, *, block_rows: int = 128, dtype: torch.dtype = torch.float32,
                    order: Order = "propagate_first", column_sink: ColumnSink | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    buffer_bytes: int = 256 * 2 ** 20, columns: tuple[int, int] | None = None
                    ) -> tuple[torch.Tensor | None, int]:
    """Approximators (len(positions), d) of softmax regression (flat layout) by the backward walk, block by block of
    ``block_rows`` coordinates. Returns them (or None with ``column_sink``, which then receives column slabs, buffered
    up to ``buffer_bytes``) and the number of row-vector products applied (d per step walked). ``columns = (lo, hi)``
    computes only those coordinates (one process's share in a column-split precompute; the others stay zero)."""
    if order not in ("propagate_first", "inject_first"):
        raise ValueError(f"order must be 'propagate_first' or 'inject_first', got '{order}'")
    n, D = x.shape[0], int(np.prod(x.shape[1:]))
    C, D1 = n_classes, D + 1
    d = C * D1
    dev = x.device
    positions = np.asarray(positions, dtype=np.int64)
    m = len(positions)
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[positions] = np.arange(m)
    T = traj.n_steps
    t_stop = first_injection_step(traj.positions, n, positions)
    xt = torch.cat([x.reshape(n, D).to(dtype), torch.ones(n, 1, dtype=dtype, device=dev)], dim=1)      # x̃ (n, D+1)
    # Per step, made on the fly (no per-step copies of the batches or of w_t beyond the recorded trajectory):
    # the batch's x̃ (b, D+1), probabilities (b, 1, C), labels (b, 1, 1) and w_t in the (C, D+1) layout.
    batch_pos = [torch.as_tensor(p, device=dev) for p in traj.positions]

    def w_cd(t: int) -> torch.Tensor:
        return flat_to_cd(traj.weights[t].to(dtype), C, D).reshape(d)
    slots = _batch_rows(traj.positions, row_of, dev)
    buf, blocks = _walk_setup(m, d, dtype, dev, column_sink, buffer_bytes, columns, block_rows)
    # Flat coordinate i ↔ (class c, column j) of the (C, D+1) layout: weights c·D + j, then the biases C·D + c.
    flat = np.arange(d)
    cd_index = np.where(flat < C * D, (flat // D) * D1 + flat % D, (flat - C * D) * D1 + D)
    hvps = 0
    for bi, (c0, c1) in enumerate(blocks):
        k = c1 - c0
        # Rows of P in the (C, D+1) layout, kept as s · R with a scalar s that absorbs the (1 − η_t λ) factors
        # (saves one pass over the block per step).
        R = torch.zeros(k, d, dtype=dtype, device=dev)
        R[torch.arange(k, device=dev), torch.as_tensor(cd_index[c0:c1], device=dev)] = 1.0
        R2 = R.view(k * C, D1)
        scale = 1.0
        slab = torch.zeros(m, k, dtype=dtype, device=dev)
        for t in range(T - 1, t_stop - 1, -1):
            lr, pt = traj.lrs[t], batch_pos[t]
            bx, p = xt[pt], traj.probs[t].to(dtype)[:, None, :]
            b = bx.shape[0]
            S = torch.mm(bx, R2.T).view(b, k, C)                         # x̃_iᵀ Pᵀ for the batch records (÷ s)
            pS = p * S
            q = pS.sum(-1, keepdim=True)                                 # pᵀ P x̃_i
            if order == "propagate_first" and slots[t] is not None:
                _inject(slab, S, q, R, slots[t], y[pt].view(-1, 1, 1), w_cd(t), lam, scale * lr / b)
            pS.addcmul_(p, q, value=-1.0)                                # (diag p − p pᵀ) P x̃_i  (÷ s)
            shrink = 1.0 - lr * lam
            if shrink > 0.5:                                             # P ← P (I − η_t H_t), the λ part in s
                R2.addmm_(pS.view(b, k * C).T, bx, alpha=-lr / (b * shrink))
                scale *= shrink
            else:                                                        # large η λ: apply it to the block
                R2.mul_(shrink).addmm_(pS.view(b, k * C).T, bx, alpha=-lr / b)
            if not 1e-20 < abs(scale) < 1e20:
                R2.mul_(scale)
                scale = 1.0
            hvps += k
            if order == "inject_first" and slots[t] is not None:
                S = torch.mm(bx, R2.T).view(b, k, C)
                _inject(slab, S, (p * S).sum(-1, keepdim=True), R, slots[t], y[pt].view(-1, 1, 1), w_cd(t), lam,
                        scale * lr / b)
        buf.add(c0, slab)
        if progress:
            progress(bi + 1, len(blocks))
    buf.flush()
    return buf.out, hvps


def _inject(slab, S, q, R, slot, labels, w, lam, scale) -> None:
    """slab[u] += scale · P ∇ℓ(w_t; z_u) for the tracked batch records. With ∇ℓ = (p_u − e_y) ⊗ x̃_u + λ w_t and
    S (b, k, C) = the batch's x̃_iᵀ Pᵀ, q = Σ_c p_c S_c from the propagation: P ∇ℓ = q − S_y + λ P w_t."""
    sel, rows, whole = slot
    inj = q[..., 0] - torch.gather(S, 2, labels.expand(-1, S.shape[1], 1))[..., 0]            # (b, k)
    if not whole:
        inj = inj[sel]
    inj += lam * torch.mv(R, w)[None, :]
    slab.index_add_(0, rows, inj, alpha=scale)


@_subnormals_flushed
def generic_reverse(model: FunctionalModel, sgd: SGDConfig, x: torch.Tensor, y: torch.Tensor, trajectory,
                    positions: np.ndarray, *, curvature: str = "exact", order: Order = "propagate_first",
                    block_rows: int = 64, dtype: torch.dtype = torch.float32, column_sink: ColumnSink | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    buffer_bytes: int = 256 * 2 ** 20, columns: tuple[int, int] | None = None
                    ) -> tuple[torch.Tensor | None, int]:
    """Approximators (len(positions), d) of any model by the backward walk over the recorded
    :class:`~unlearn_audit.hfocu.replay.WeightTrajectory` (w_t, batch positions, η_t per step). The step functions are
    the forward recursion's: rows are propagated by :meth:`ApproximatorRecursion.propagate_rows` (H_t P-rows, or the
    vector-Jacobian product of the exact update map with clipping or projection) and the injections are
    :meth:`ApproximatorRecursion.injection_vectors` of the per-sample gradients at w_t."""
    from unlearn_audit.hfocu.recursion import ApproximatorRecursion

    n, d = x.shape[0], model.dim
    dev = x.device
    positions = np.asarray(positions, dtype=np.int64)
    m = len(positions)
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[positions] = np.arange(m)
    rec = ApproximatorRecursion(model, sgd, n, np.zeros(0, dtype=np.int64), curvature=curvature, order=order,
                                dtype=dtype, chunk_size=max(1, int(block_rows)), device=dev)
    batches, lrs, weights = trajectory.positions, trajectory.lrs, trajectory.weights
    T = len(weights)
    if len(batches) != T or len(lrs) != T:
        raise ValueError("the weight trajectory lacks the batch positions or step sizes of some steps")
    t_stop = first_injection_step(batches, n, positions)
    slots = _batch_rows(batches, row_of, dev)
    buf, blocks = _walk_setup(m, d, dtype, dev, column_sink, buffer_bytes, columns, block_rows)
    xd = x.to(dtype)
    hvps = 0
    for bi, (c0, c1) in enumerate(blocks):
        k = c1 - c0
        R = torch.zeros(k, d, dtype=dtype, device=dev)
        R[torch.arange(k, device=dev), torch.arange(c0, c1, device=dev)] = 1.0
        slab = torch.zeros(m, k, dtype=dtype, device=dev)
        for t in range(T - 1, t_stop - 1, -1):
            pos = np.asarray(batches[t])
            pt = torch.as_tensor(pos, device=dev)
            w = weights[t].to(dtype)
            info = StepInfo(t, w, pos, xd[pt], y[pt], float(lrs[t]))
            ctx = rec.op.prepare(w, info.x, info.y)
            if order == "propagate_first" and slots[t] is not None:
                _inject_generic(rec, info, ctx, slab, R, slots[t])
            R = rec.propagate_rows(info, ctx, R)
            hvps += k
            if order == "inject_first" and slots[t] is not None:
                _inject_generic(rec, info, ctx, slab, R, slots[t])
        buf.add(c0, slab)
        if progress:
            progress(bi + 1, len(blocks))
    buf.flush()
    return buf.out, hvps


def _inject_generic(rec, info, ctx, slab, R, slot) -> None:
    sel, rows, _ = slot
    g = rec.op.per_sample_grads(ctx)[sel]                                # (b_sel, d) at w_t, λ w_t included
    inj = rec.injection_vectors(info, g).to(R.dtype)                     # η/|B| · c(g), linearised as forward
    slab.index_add_(0, rows, inj @ R.T)
