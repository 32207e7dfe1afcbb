"""Replay mode (DESIGN §2.3): for a batch U known now, one vector recursion on the summed injection over the
recorded trajectory — T Hessian-vector products, no per-record storage:

    a ← (I − η_t H_t) a;   a ← a + η_t/|B_t| Σ_{u∈U∩B_t} ∇ℓ(w_t; z_u)

It needs the weights w_t of every step (:class:`WeightTrajectory`, a training hook). The result equals the sum of
the per-record approximators of mode ``all`` (the recursion is linear), at a cost of T HVPs per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from unlearn_audit.hfocu.chunked import cd_to_flat, flat_to_cd
from unlearn_audit.hfocu.curvature import SoftmaxClosedForm, make_curvature
from unlearn_audit.models import FunctionalModel
from unlearn_audit.training.sgd import SGDConfig, StepInfo


@dataclass
class WeightTrajectory:
    """Training hook keeping w_t (flat), the batch positions and η_t for every step."""

    weights: list = field(default_factory=list)
    positions: list = field(default_factory=list)
    lrs: list = field(default_factory=list)

    def __call__(self, info: StepInfo) -> None:
        self.weights.append(info.w.detach().clone())
        self.positions.append(np.asarray(info.positions))
        self.lrs.append(float(info.lr))

    def nbytes(self) -> int:
        return int(sum(w.numel() * w.element_size() for w in self.weights)
                   + sum(p.nbytes for p in self.positions) + 8 * len(self.lrs))


def replay_unlearn(model: FunctionalModel, sgd: SGDConfig, x: torch.Tensor, y: torch.Tensor, schedule,
                   trajectory: WeightTrajectory, forget_positions, *, curvature: str = "exact",
                   order: str = "propagate_first") -> torch.Tensor:
    """Σ_{u∈U} a_u computed directly by one recursion over the stored trajectory (flat, model dtype)."""
    if sgd.clip != "none" or sgd.weight_norm_bound is not None:
        raise ValueError("replay mode supports plain SGD only (no clipping, no projection); use mode 'all'")
    op = make_curvature(model, sgd.lam, curvature)
    forget = np.zeros(schedule.n_train, dtype=bool)
    forget[np.asarray(forget_positions, dtype=np.int64)] = True
    w0 = trajectory.weights[0]
    a = torch.zeros(1, model.dim, dtype=w0.dtype, device=w0.device)
    active = False
    for t, (pos, lr) in enumerate(zip(schedule.batches, schedule.lrs)):
        w = trajectory.weights[t]
        pt = torch.as_tensor(pos)
        ctx = op.prepare(w, x[pt].to(w.dtype), y[pt])
        hit = forget[pos]
        inj = None
        if hit.any():
            g = op.per_sample_grads(ctx)[torch.as_tensor(np.nonzero(hit)[0])]
            inj = float(lr) / len(pos) * g.sum(0, keepdim=True)
        if order == "inject_first" and inj is not None:
            a, active = a + inj, True
        if active:
            a = a - float(lr) * op.apply(ctx, a)
        if order == "propagate_first" and inj is not None:
            a, active = a + inj, True
    return a[0]


# ---------------------------------------------------------------------------------------------------------------------
# replay for the a-posteriori certificate (DESIGN §2.4b)
@dataclass
class BoundCache:
    """The U-independent part of the a-posteriori replay, computed once per trained model (float64).

    Per step: the batch context (w_t, x_B, y_B, softmax probabilities), λ_max of the batch's x̃ Gram matrix, an upper
    bound on every batch record's gradient norm, the measured rounding ‖o_t‖ of the recorded step and the retrain
    reference's rounding model s_t (without its ε part)."""

    contexts: list
    gram_top: np.ndarray
    grad_bound: list
    rounding: np.ndarray
    ref_round: np.ndarray
    x2: np.ndarray
    final: torch.Tensor
    u: float
    xt: list = field(default_factory=list)          # per step: x̃_B (b, D+1)
    resid: list = field(default_factory=list)       # per step: p_i − e_{y_i} (b, C)
    w_cd: list = field(default_factory=list)        # per step: w_t in the (C, D+1) layout
    probs_t: list = field(default_factory=list)     # per step: the batch probabilities transposed (C, b), contiguous


def bound_cache(model: FunctionalModel, sgd: SGDConfig, x: torch.Tensor, y: torch.Tensor, schedule, weights,
                final_weights: torch.Tensor, *, train_dtype: str = "float32") -> BoundCache:
    """Precompute the U-independent replay quantities (see :class:`BoundCache`). ``weights[t]`` is w_t as recorded
    (t = 0..T-1), ``final_weights`` is w_T."""
    from unlearn_audit.certify.aposteriori import rounding_gamma, unit_roundoff
    from unlearn_audit.training.sgd import update_map

    if model.kind != "softmax":
        raise ValueError("the a-posteriori replay is implemented for softmax regression (closed-form curvature)")
    dt = torch.float64
    op = make_curvature(model, sgd.lam, "exact")
    n = len(x)
    X = x.detach().reshape(n, -1).to("cpu", dt)
    y = y.detach().cpu()
    x2 = (X * X).sum(1) + 1.0                                        # ‖x̃‖² (bias input 1)
    u = unit_roundoff(train_dtype)
    T = schedule.n_steps
    K, D = model.n_classes, X.shape[1]
    contexts, grad_bound, xts, resids, w_cds = [], [], [], [], []
    gram_top, rounding, ref_round = np.zeros(T), np.zeros(T), np.zeros(T)
    for t, (pos, lr) in enumerate(zip(schedule.batches, schedule.lrs)):
        pt = torch.as_tensor(pos)
        w = weights[t].detach().to("cpu", dt)
        ctx = op.prepare(w, X[pt], y[pt])
        contexts.append(ctx)
        xt = torch.cat([ctx.x, torch.ones(len(pos), 1, dtype=dt)], 1)
        gram_top[t] = float(torch.linalg.eigvalsh(xt @ xt.T)[-1])
        resid = ctx.probs - torch.nn.functional.one_hot(ctx.y, K).to(dt)
        xts.append(xt)
        resids.append(resid)
        w_cds.append(flat_to_cd(w, K, D))
        gb = resid.norm(dim=1) * x2[pt].sqrt() + sgd.lam * w.norm()
        grad_bound.append(gb.numpy())
        w_next = (weights[t + 1] if t + 1 < T else final_weights).detach().to("cpu", dt)
        with torch.no_grad():
            exact = update_map(model, sgd, float(lr), ctx.x, ctx.y, float(len(pos)))(w)
        rounding[t] = float((exact - w_next).norm())
        k = D + len(pos) + K + 4
        ref_round[t] = 2.0 * u * float(w_next.norm()) + rounding_gamma(k, u) * float(lr) * float(gb.mean())
    return BoundCache(contexts, gram_top, grad_bound, rounding, ref_round, x2.numpy(),
                      final_weights.detach().to("cpu", dt), u, xts, resids, w_cds,
                      [c.probs.T.contiguous() for c in contexts])


def replay_bound_terms(model: FunctionalModel, sgd: SGDConfig, schedule, cache: BoundCache, forget_positions, *,
                       stored_sum: torch.Tensor | None = None):
    """Replay U's summed approximator A_t along the recorded trajectory in float64 (T Hessian-vector products on one
    vector, through the engine's curvature operator and, with clipping or projection, the jvp of the exact update
    map) and collect every per-step quantity of the a-posteriori certificate (DESIGN §2.4b) as
    :class:`~unlearn_audit.certify.aposteriori.ReplayTerms`.

    ``stored_sum`` is the approximator sum the unlearner actually added (float32): its distance to the float64 replay
    enters the certificate as the measured state gap. Returns the terms and A_T (flat, float64).
    """
    from unlearn_audit.certify.errors import CertificationError

    if sgd.clip == "batch":
        raise CertificationError("batch-gradient clipping is not covered by the certificate: train with per-sample "
                                 "clipping or none")
    if sgd.clip == "none" and sgd.weight_norm_bound is None:
        return _replay_plain_softmax(model, sgd, schedule, cache, forget_positions, stored_sum)
    return _replay_generic(model, sgd, schedule, cache, forget_positions, stored_sum)


def _replay_generic(model: FunctionalModel, sgd: SGDConfig, schedule, cache: BoundCache, forget_positions,
                    stored_sum: torch.Tensor | None):
    """Any softmax training (clipping, projection) through the engine's recursion step functions (flat layout)."""
    from dataclasses import replace

    from torch.func import jvp

    from unlearn_audit.certify.aposteriori import ReplayTerms
    from unlearn_audit.certify.errors import CertificationError
    from unlearn_audit.hfocu.curvature import BatchContext
    from unlearn_audit.hfocu.recursion import ApproximatorRecursion
    from unlearn_audit.training.sgd import batch_gradient, clip_rows, project_ball

    if sgd.clip == "batch":
        raise CertificationError("batch-gradient clipping is not covered by the certificate: train with per-sample "
                                 "clipping or none")
    dt = torch.float64
    cfg_pre = replace(sgd, weight_norm_bound=None)                  # the projection is handled below
    rec = ApproximatorRecursion(model, cfg_pre, schedule.n_train, np.zeros(0, dtype=np.int64), dtype=dt)
    op = rec.op
    if not isinstance(op, SoftmaxClosedForm):
        raise CertificationError(f"the a-posteriori replay needs softmax regression's closed-form curvature, "
                                 f"not {op.name}")
    forget = np.zeros(schedule.n_train, dtype=bool)
    forget[np.asarray(forget_positions, dtype=np.int64)] = True
    T = schedule.n_steps
    R = sgd.weight_norm_bound
    clip = sgd.clip == "per_sample"
    norm_A, injection, proj_rem = np.zeros(T + 1), np.zeros(T), np.zeros(T)
    rx2, rax, rgn = [], [], []
    A = torch.zeros(1, model.dim, dtype=dt)
    active = False
    for t, (pos, lr) in enumerate(zip(schedule.batches, schedule.lrs)):
        ctx = cache.contexts[t]
        b = float(len(pos))
        hit = forget[pos]
        keep = ~hit
        keep_t = torch.as_tensor(np.nonzero(keep)[0])
        hit_t = torch.as_tensor(np.nonzero(hit)[0])
        a_norm = float(A.norm())
        norm_A[t] = a_norm
        rx2.append(cache.x2[pos[keep]])
        if clip:
            rgn.append(cache.grad_bound[t][keep])
        if active:
            Vw, Vb = op.split(A)
            rax.append((ctx.x[keep_t] @ Vw[0].T + Vb[0]).norm(dim=1).numpy())
        else:
            rax.append(np.zeros(int(keep.sum())))
        info = StepInfo(t, ctx.w, pos, ctx.x, ctx.y, float(lr))
        g_hit = op.per_sample_grads(BatchContext(ctx.w, ctx.x[hit_t], ctx.y[hit_t], ctx.probs[hit_t])) \
            if len(hit_t) else None
        if active and g_hit is not None:                            # (1/|B|) Σ_u D_u ∇²ℓ_u(w_t) A_t
            if clip:
                tot = torch.zeros_like(A[0])
                for j in range(len(hit_t)):
                    cu = BatchContext(ctx.w, ctx.x[hit_t[j:j + 1]], ctx.y[hit_t[j:j + 1]],
                                      ctx.probs[hit_t[j:j + 1]])
                    hv = op.apply(cu, A)[0]
                    c_fn = lambda g: clip_rows(g[None], sgd.clipping_norm())[0]  # noqa: E731
                    tot = tot + jvp(c_fn, (g_hit[j],), (hv,))[1]
                injection[t] = float(tot.norm()) / b
            else:
                cu = BatchContext(ctx.w, ctx.x[hit_t], ctx.y[hit_t], ctx.probs[hit_t])
                injection[t] = float(op.apply(cu, A).norm()) * len(hit_t) / b
        q = rec.propagate_vectors(info, ctx, A) if active else A
        if g_hit is not None:
            q = q + rec.injection_vectors(info, g_hit).sum(0, keepdim=True)
            active = True
        if R is not None and active:
            p = ctx.w - float(lr) * batch_gradient(model, cfg_pre, ctx.w, ctx.x, ctx.y, b)
            proj = lambda v: project_ball(v, R)                                  # noqa: E731
            primal_tangent = jvp(proj, (p,), (q[0],))
            base, jq = primal_tangent[0], primal_tangent[1]
            proj_rem[t] = float((proj(p + q[0]) - base - jq).norm())
            A = jq[None]
        else:
            A = q
    norm_A[T] = float(A.norm())
    gap = None if stored_sum is None else float((A[0] - stored_sum.detach().to("cpu", dt)).norm())
    return ReplayTerms(
        lrs=np.asarray(schedule.lrs, dtype=np.float64), batch_sizes=schedule.batch_sizes().astype(np.float64),
        norm_A=norm_A, injection=injection, gram_top=cache.gram_top, retained_x2=tuple(rx2),
        retained_ax=tuple(rax), retained_gnorm=tuple(rgn) if clip else None, proj_remainder=proj_rem,
        rounding=cache.rounding, ref_round=cache.ref_round, lam=float(sgd.lam),
        clip_norm=sgd.clipping_norm() if clip else None, projection=R is not None, state_gap=gap,
        state_norm=float((cache.final + A[0]).norm()), u=cache.u, n_classes=model.n_classes,
        n_features=int(cache.contexts[0].x.shape[1]) if cache.contexts else 0, max_x2=float(cache.x2.max()),
        source="replay"), A[0]


def _replay_plain_softmax(model: FunctionalModel, sgd: SGDConfig, schedule, cache: BoundCache, forget_positions,
                          stored_sum: torch.Tensor | None):
    """The replay of :func:`replay_bound_terms` for plain SGD (no clipping, no projection), in the (C, D+1) matrix
    layout with the closed-form operator's ``propagate_cd``: a few small matrix products per step (the per-request cost
    of a certified release)."""
    from unlearn_audit.certify.aposteriori import ReplayTerms

    dt = torch.float64
    op = make_curvature(model, sgd.lam, "exact")
    C = model.n_classes
    forget = np.zeros(schedule.n_train, dtype=bool)
    forget[np.asarray(forget_positions, dtype=np.int64)] = True
    T = schedule.n_steps
    D1 = cache.xt[0].shape[1] if T else 1
    sizes = schedule.batch_sizes()
    hits = [forget[pos] for pos in schedule.batches]
    n_hit = np.array([int(h.sum()) for h in hits], dtype=np.int64)
    zero = torch.zeros((), dtype=dt)
    norms: list[torch.Tensor] = []                         # ‖A_t‖, 0-d tensors (no per-step host sync)
    inj: list[torch.Tensor] = []                           # ‖Σ_u ∇²ℓ_u(w_t) A_t‖ (divided by |B_t| below)
    snorm: list[torch.Tensor] = []                         # ‖A_t x̃_i‖ for every batch record
    A = torch.zeros(C, D1, dtype=dt)
    active = False
    lam = float(sgd.lam)
    lrs = [float(v) for v in schedule.lrs]
    for t in range(T):
        lr = lrs[t]
        xt = cache.xt[t]
        nh = int(n_hit[t])
        if active:
            norms.append(torch.linalg.vector_norm(A))
            A_next, st, mt = op.propagate_cd(xt, cache.probs_t[t], A, lr)
            snorm.append(torch.linalg.vector_norm(st, dim=0))
            if nh:
                hi = torch.as_tensor(np.flatnonzero(hits[t]))
                inj.append(torch.linalg.vector_norm(mt[:, hi] @ xt[hi] + (nh * lam) * A))   # same products
            else:
                inj.append(zero)
            A = A_next
        else:
            norms.append(zero)
            snorm.append(torch.zeros(xt.shape[0], dtype=dt))
            inj.append(zero)
        if nh:
            hi = torch.as_tensor(np.flatnonzero(hits[t]))
            A = A + (lr / xt.shape[0]) * (cache.resid[t][hi].T @ xt[hi] + (nh * lam) * cache.w_cd[t])
            active = True
    norms.append(torch.linalg.vector_norm(A))
    norm_A = torch.stack(norms).numpy()
    injection = (torch.stack(inj).numpy() if T else np.zeros(0)) / np.maximum(sizes, 1)
    snorm_np = torch.cat(snorm).numpy() if T else np.zeros(0)
    ends = np.cumsum(sizes)
    rx2 = [cache.x2[pos[~h]] for pos, h in zip(schedule.batches, hits)]
    rax = [snorm_np[e - len(h):e][~h] for e, h in zip(ends, hits)]
    A_flat = cd_to_flat(A[None], C, D1 - 1)[0]
    gap = None if stored_sum is None else float((A_flat - stored_sum.detach().to("cpu", dt)).norm())
    return ReplayTerms(
        lrs=np.asarray(schedule.lrs, dtype=np.float64), batch_sizes=schedule.batch_sizes().astype(np.float64),
        norm_A=norm_A, injection=injection, gram_top=cache.gram_top, retained_x2=tuple(rx2), retained_ax=tuple(rax),
        retained_gnorm=None, proj_remainder=np.zeros(T), rounding=cache.rounding, ref_round=cache.ref_round,
        lam=lam, clip_norm=None, projection=False, state_gap=gap, state_norm=float((cache.final + A_flat).norm()),
        u=cache.u, n_classes=C, n_features=D1 - 1, max_x2=float(cache.x2.max()), source="replay"), A_flat


# ---------------------------------------------------------------------------------------------------------------------
# replay with measured constants, for models without analytic ones (MLP, CNN; DESIGN §2.4b "other models")
@dataclass
class MeasuredCache:
    """The U-independent part of the measured replay (float64, CPU): per step w_t, the Lanczos extremes of the whole
    batch's mean Hessian, the measured rounding ‖o_t‖ of the recorded step and the retrain reference's rounding
    model s_t."""

    weights: list
    extremes: list
    rounding: np.ndarray
    ref_round: np.ndarray
    final: torch.Tensor
    u: float
    lanczos_steps: int


def _lanczos_outwards(op, ctx, dim: int, steps: int, start=None):
    from unlearn_audit.certify import lanczos_extremes

    ex = lanczos_extremes(lambda v: op.apply(ctx, v[None])[0], dim, steps=steps, start=start)
    return ex, ex.lam_min - ex.res_min, ex.lam_max + ex.res_max


def measured_cache(model: FunctionalModel, sgd: SGDConfig, x: torch.Tensor, y: torch.Tensor, schedule, weights,
                   final_weights: torch.Tensor, *, train_dtype: str = "float32", lanczos_steps: int = 8
                   ) -> MeasuredCache:
    """Precompute :class:`MeasuredCache` (``weights[t]`` = w_t as recorded, ``final_weights`` = w_T). Lanczos at
    step t starts from step t − 1's Ritz vector (neighbouring Hessians are close)."""
    from unlearn_audit.certify.aposteriori import rounding_gamma, unit_roundoff
    from unlearn_audit.training.sgd import update_map

    dt = torch.float64
    op = make_curvature(model, sgd.lam, "exact")
    X, Y = x.detach().to("cpu", dt), y.detach().cpu()
    u = unit_roundoff(train_dtype)
    T = schedule.n_steps
    ws, ext = [], []
    rounding, ref_round = np.zeros(T), np.zeros(T)
    start = None
    for t, (pos, lr) in enumerate(zip(schedule.batches, schedule.lrs)):
        pt = torch.as_tensor(pos)
        w = weights[t].detach().to("cpu", dt)
        ctx = op.prepare(w, X[pt], Y[pt])
        ex, lo, hi = _lanczos_outwards(op, ctx, model.dim, lanczos_steps, start)
        start = ex.ritz_min
        ws.append(w)
        ext.append((lo, hi))
        w_next = (weights[t + 1] if t + 1 < T else final_weights).detach().to("cpu", dt)
        with torch.no_grad():
            exact = update_map(model, sgd, float(lr), X[pt], Y[pt], float(len(pos)))(w)
        rounding[t] = float((exact - w_next).norm())
        gbar = float(op.per_sample_grads(ctx).norm(dim=1).mean())
        ref_round[t] = 2.0 * u * float(w_next.norm()) + rounding_gamma(model.dim + len(pos), u) * float(lr) * gbar
    return MeasuredCache(ws, ext, rounding, ref_round, final_weights.detach().to("cpu", dt), u, lanczos_steps)


def replay_measured_terms(model: FunctionalModel, sgd: SGDConfig, x: torch.Tensor, y: torch.Tensor, schedule,
                          cache: MeasuredCache, forget_positions, *, stored_sum: torch.Tensor | None = None,
                          seed: int = 0, probes: int = 32):
    """Replay U's summed approximator along the recorded trajectory in float64 for any model (autodiff Hessian-vector
    products, plain SGD) and measure what the §2.4b recursion needs: ‖A_t‖, the exact injection-step term, the
    norm of the removed records' Hessian at steps U touches (power iteration on them alone; the whole batch's
    extremes come from the cache), and the Hessian-Lipschitz probes M_t at about ``probes`` evenly spread steps.
    Returns (:class:`~unlearn_audit.certify.aposteriori.MeasuredReplayTerms`, A_T)."""
    from unlearn_audit.certify import power_norm
    from unlearn_audit.certify.aposteriori import MeasuredReplayTerms
    from unlearn_audit.certify.errors import CertificationError

    if sgd.clip != "none" or sgd.weight_norm_bound is not None:
        raise CertificationError("the measured a-posteriori replay covers plain SGD (no clipping, no projection)")
    dt = torch.float64
    op = make_curvature(model, sgd.lam, "exact")
    X, Y = x.detach().to("cpu", dt), y.detach().cpu()
    forget = np.zeros(schedule.n_train, dtype=bool)
    forget[np.asarray(forget_positions, dtype=np.int64)] = True
    T, d = schedule.n_steps, model.dim
    gen = torch.Generator().manual_seed(int(seed))
    norm_A, injection, retained, removed = np.zeros(T + 1), np.zeros(T), np.ones(T), np.zeros(T)
    lam_min = np.array([e[0] for e in cache.extremes], dtype=np.float64)
    lam_max = np.array([e[1] for e in cache.extremes], dtype=np.float64)
    M = np.full(T, np.nan)
    hits = [forget[pos] for pos in schedule.batches]
    first = next((t for t, h in enumerate(hits) if h.any()), T)
    stride = max(1, (T - first) // max(int(probes), 1))
    A = torch.zeros(d, dtype=dt)
    active = False
    for t, (pos, lr) in enumerate(zip(schedule.batches, schedule.lrs)):
        lr = float(lr)
        w = cache.weights[t]
        b = len(pos)
        hit = hits[t]
        nh = int(hit.sum())
        retained[t] = (b - nh) / b
        ctx_b = op.prepare(w, X[torch.as_tensor(pos)], Y[torch.as_tensor(pos)])
        ctx_u = op.prepare(w, X[torch.as_tensor(pos[hit])], Y[torch.as_tensor(pos[hit])]) if nh else None
        if ctx_u is not None:                     # ‖(1/|B_t|) Σ_u ∇²ℓ_u(w_t)‖ (mean over U ∩ B_t includes λ)
            removed[t] = nh / b * power_norm(lambda v, c=ctx_u: op.apply(c, v[None])[0], d, iters=4, seed=t)
        if active:
            a_norm = float(A.norm())
            norm_A[t] = a_norm
            HB = op.apply(ctx_b, A[None])[0]                          # mean over B_t, λA included
            if ctx_u is not None:
                HU = op.apply(ctx_u, A[None])[0]                      # mean over U ∩ B_t, λA included
                injection[t] = float((nh * HU).norm()) / b
                HN = (b * HB - nh * HU) / (b - nh) if b > nh else None
            else:
                HN = HB
            if HN is not None and a_norm > 0 and (t - first) % stride == 0:
                keep_pos = torch.as_tensor(pos[~hit])
                r = torch.randn(d, generator=gen, dtype=dt)
                r = r * (a_norm / float(r.norm()))
                probes_t = []
                for direction in (A, r):
                    shifted = op.prepare(w + direction, X[keep_pos], Y[keep_pos])
                    probes_t.append(float((op.apply(shifted, A[None])[0] - HN).norm()) / (a_norm * a_norm))
                M[t] = max(probes_t)
            A = A - lr * HB
        if nh:
            assert ctx_u is not None
            A = A + (lr / b) * op.per_sample_grads(ctx_u).sum(0)
            active = True
    norm_A[T] = float(A.norm())
    gap = None if stored_sum is None else float((A - stored_sum.detach().to("cpu", dt).reshape(-1)).norm())
    return MeasuredReplayTerms(
        lrs=np.asarray(schedule.lrs, dtype=np.float64), batch_sizes=schedule.batch_sizes().astype(np.float64),
        norm_A=norm_A, injection=injection, retained=retained, lam_min=lam_min, lam_max=lam_max,
        removed_norm=removed, hess_lipschitz=M, rounding=cache.rounding, ref_round=cache.ref_round, state_gap=gap,
        state_norm=float((cache.final + A).norm()), u=cache.u, lanczos_steps=cache.lanczos_steps,
        model=model.kind), A


def replay_supported(model: FunctionalModel, sgd: SGDConfig) -> bool:
    """Whether the a-posteriori certificate can replay this training: softmax regression (rigorous, any clipping
    but batch clipping) or a smooth model trained by plain SGD (measured constants). Models with kinks (ReLU,
    max-pool) have no Hessian-Lipschitz constant and keep the worst-case bound."""
    if model.kind == "softmax":
        return True
    return model.smooth and sgd.clip == "none" and sgd.weight_norm_bound is None


def certificate_replay_terms(model: FunctionalModel, sgd: SGDConfig, x: torch.Tensor, y: torch.Tensor, schedule,
                             weights, final_weights: torch.Tensor, positions, *, stored_sum: torch.Tensor | None,
                             cache: BoundCache | MeasuredCache | None = None, train_dtype: str = "float32"):
    """The a-posteriori certificate's replay of U = ``positions`` along a recorded trajectory (``weights[t]`` = w_t,
    t < T): the rigorous softmax replay (:func:`replay_bound_terms`) or the measured one for other smooth models
    (:func:`replay_measured_terms`). ``cache`` is the U-independent part from an earlier call (built when None).
    Returns (terms, cache). One path for the in-process unlearner and for a trained run on disk."""
    if model.kind == "softmax":
        if not isinstance(cache, BoundCache):
            cache = bound_cache(model, sgd, x, y, schedule, weights, final_weights, train_dtype=train_dtype)
        return replay_bound_terms(model, sgd, schedule, cache, positions, stored_sum=stored_sum)[0], cache
    if not isinstance(cache, MeasuredCache):
        cache = measured_cache(model, sgd, x, y, schedule, weights, final_weights, train_dtype=train_dtype)
    return replay_measured_terms(model, sgd, x, y, schedule, cache, positions, stored_sum=stored_sum)[0], cache
