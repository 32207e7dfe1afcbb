"""Shadow models of the audit's LiRA and MIA-U attacks (DESIGN §3): built once per run, cached on disk, checked
for fit against the target, then used to score every target model of the run.

Labels everywhere: 1 = forget-set record (trained on by the target, then deleted), 0 = record the target never
trained on (population split). Higher score = more likely member / deleted.

Records are addressed by **pool positions** in one array (:func:`audit_pool`): the training split first
(``0 .. n_train-1``, the forget set among them), then the population split, then the test split.

LiRA (Carlini et al. 2022, online). Query records: the forget set (label 1), the population (label 0, the
evaluation non-members) and the test split (label 0, calibration non-members for TPR at low FPR, disjoint from
the evaluation). Each is IN for exactly half of the shadows and OUT for the others (balanced keep masks over a
shadow pool made of the query records, topped up with retained training records so that a shadow trains on
about as many records as the target). Shadows: :func:`attacks.shadows.train_ensemble` with the target's model
kind, epochs, batch size and λ (as weight decay); the ensemble trainer has no step-size decay, so it runs at the
mean step size of the target's schedule, and it neither clips nor projects (recorded in ``summary``).

MIA-U (Chen et al. 2021). Shadow part = retained training records only: never the forget set, the population
(evaluation non-members) or the test split (calibration non-members). Each shadow trains an original model on a
subset of the shadow part with the target's HF-OCU unlearner (same SGD hyper-parameters, curvature and order;
``candidates`` mode, so only the deleted records carry approximators), deletes the same fraction of its records
as the target deleted, and answers posteriors of its deleted records (label 1) and as many records it never saw
(label 0). For a target released with Gaussian noise of scale σ, the shadows' unlearned models get noise of the
same σ and a separate attack is fitted. Target pair = (original model's posteriors, target model's posteriors)
on the forget set and the population; the attack refuses records it was fitted on (ids are pool positions).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from attacks import LiRA, ShadowFitError, ShadowPair, ShadowProtocol, UnlearningAttack, draw_keep_masks, signals
from attacks import shadows as ash
from attacks.errors import InvalidInputError
from unlearn_audit.audit.context import AuditContext
from unlearn_audit.certify import release
from unlearn_audit.common import atomic_write
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.inputs import model_from_config

CODE_VERSION = "unlearn_audit.shadow_models/1"
MIA_U_TRAIN_FRACTION = 0.8
"""Share of the MIA-U shadow part each shadow trains on (the rest supplies its never-seen records)."""


class _TrainSettings(TypedDict):
    """Keyword arguments that ``attacks.shadows.train_ensemble`` and ``train_functional_ensemble`` share."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int


class _EnsembleSettings(_TrainSettings):
    """Keyword arguments of ``attacks.shadows.train_ensemble`` (softmax regression's batched ensemble)."""

    hidden: int
    dtype: str


# ------------------------------------------------------------------------------------------------- the pool
@dataclass
class AuditPool:
    """All records of a run in one array, addressed by pool position (train, then population, then test)."""

    x: torch.Tensor
    y: torch.Tensor
    train: np.ndarray
    forget: np.ndarray
    retain: np.ndarray
    population: np.ndarray
    test: np.ndarray
    record_ids: np.ndarray

    def flat_x(self, positions: np.ndarray) -> np.ndarray:
        return self.x[torch.as_tensor(positions)].reshape(len(positions), -1).numpy()


def audit_pool(ctx: AuditContext) -> AuditPool:
    """The run's records as one pool (cached in ``ctx.extra["audit_pool"]``)."""
    if "audit_pool" in ctx.extra:
        return ctx.extra["audit_pool"]
    n_tr, n_pop, n_te = len(ctx.x), len(ctx.x_pop), len(ctx.x_test)
    x = torch.cat([ctx.x.float(), ctx.x_pop.float(), ctx.x_test.float()])
    y = torch.cat([ctx.y, ctx.y_pop, ctx.y_test])
    splits = ctx.extra.get("splits")
    if splits is not None:
        ids = np.concatenate([np.asarray(ctx.train_ids).astype(str), np.asarray(splits.population.ids).astype(str),
                              np.asarray(splits.test.ids).astype(str)])
    else:
        ids = np.concatenate([np.asarray(ctx.train_ids).astype(str), [f"population:{i}" for i in range(n_pop)],
                              [f"test:{i}" for i in range(n_te)]])
    forget = np.sort(np.asarray(ctx.forget_positions, dtype=np.int64))
    pool = AuditPool(x=x, y=y, train=np.arange(n_tr), forget=forget,
                     retain=np.setdiff1d(np.arange(n_tr), forget),
                     population=np.arange(n_tr, n_tr + n_pop), test=np.arange(n_tr + n_pop, n_tr + n_pop + n_te),
                     record_ids=ids)
    ctx.extra["audit_pool"] = pool
    return pool


def _forget_in_order(ctx: AuditContext) -> np.ndarray:
    """Forget-set positions in the order every attack reports its members (the context's order)."""
    return np.asarray(ctx.forget_positions, dtype=np.int64)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """The shadow cache used when ``audit.shadow_cache_dir`` is unset: $UNLEARN_AUDIT_CACHE_DIR/shadows, else
    ($XDG_CACHE_HOME or ~/.cache)/unlearn-audit/shadows."""
    root = os.environ.get("UNLEARN_AUDIT_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "shadows"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "unlearn-audit" / "shadows"


def _cache_dir(ctx: AuditContext) -> Path | None:
    d = ctx.cfg.audit.shadow_cache_dir
    if d == "":
        return None
    path = default_cache_dir() if d is None else Path(d).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    # Earlier versions kept LiRA's shadow-pool record ids here (lira_pool_<16 hex>.txt): raw ids in a user-wide
    # folder. Remove them.
    for legacy in path.glob("lira_pool_*.txt"):
        if len(legacy.stem) == len("lira_pool_") + 16:
            legacy.unlink(missing_ok=True)
    return path.resolve()


def target_accuracies(ctx: AuditContext) -> tuple[float, float]:
    """The target's (original model's) train and test accuracy, the reference of every shadow fit check."""
    m = ctx.model
    return m.accuracy(ctx.w_original, ctx.x, ctx.y), m.accuracy(ctx.w_original, ctx.x_test, ctx.y_test)


def _fit_summary(train_acc, test_acc, ctx: AuditContext) -> tuple[dict, str | None]:
    """(summary, refusal or None): the shadows' accuracies next to the target's and the fit-check outcome."""
    gap = ctx.cfg.audit.shadow_fit_gap
    t_train, t_test = target_accuracies(ctx)
    tr, te = np.asarray(train_acc, np.float64), np.asarray(test_acc, np.float64)
    summary = {"n_shadows": int(tr.size), "shadow_train_acc_mean": float(tr.mean()),
               "shadow_train_acc_min": float(tr.min()),
               "shadow_test_acc_mean": float(np.nanmean(te)) if np.isfinite(te).any() else None,
               "target_train_acc": t_train, "target_test_acc": t_test, "max_gap": gap,
               "rule": "refuse when the mean shadow train accuracy is more than max_gap below the target's, or the "
                       "mean shadow test accuracy differs from the target's by more than max_gap"}
    try:
        ash.check_fit(tr, te, t_train, t_test, max_gap=gap, max_test_gap=gap)
    except ShadowFitError as err:
        summary["fit_check"] = "failed"
        return summary, str(err)
    summary["fit_check"] = "passed"
    return summary, None


# --------------------------------------------------------------------------------------------------- LiRA
@dataclass
class LiRAShadows:
    """LiRA's shadow ensemble reduced to what scoring needs. ``keep[i, j]``: shadow i trained on query j."""

    query: np.ndarray
    n_members: int
    n_nonmembers: int
    n_calibration: int
    keep: np.ndarray
    shadow_conf: np.ndarray
    summary: dict
    refused: str | None = None


def _mean_lr(ctx: AuditContext) -> float:
    return float(np.mean(ctx.schedule.lrs))


def lira_shadows(ctx: AuditContext) -> LiRAShadows:
    """Build (or load from ``ctx.extra`` / the disk cache) the LiRA shadows of this run."""
    if "lira_shadows" in ctx.extra:
        return ctx.extra["lira_shadows"]
    start = time.perf_counter()
    cfg, sgd = ctx.cfg, ctx.sgd
    pool = audit_pool(ctx)
    query = np.concatenate([_forget_in_order(ctx), pool.population, pool.test])
    want = 2 * len(pool.train) - len(query)               # a shadow keeps half the pool: ~ as many as the target
    rng = np.random.default_rng([cfg.seed, 0x11A, 1])
    filler = np.sort(rng.choice(pool.retain, size=min(max(want, 0), len(pool.retain)), replace=False))
    shadow_pool = np.concatenate([query, filler])
    k = cfg.audit.lira_shadows
    masks = draw_keep_masks(k, len(shadow_pool), seed=cfg.seed)
    x_pool, y_pool = pool.flat_x(shadow_pool), pool.y[torch.as_tensor(shadow_pool)].numpy()
    train_settings: _TrainSettings = {"epochs": sgd.epochs, "batch_size": sgd.batch_size, "lr": _mean_lr(ctx),
                                      "weight_decay": sgd.lam, "seed": cfg.seed}
    ensemble_settings: _EnsembleSettings = {**train_settings, "hidden": cfg.model.hidden, "dtype": "float32"}
    kind = ctx.model.kind
    # Softmax regression: the built-in batched-matmul ensemble (the same model). Every other architecture: the
    # target's own network as forward(w, x), k copies trained at once with torch.func.vmap.
    functional = kind != "softmax"
    if functional:
        init = torch.stack([model_from_config(cfg, ctx.model.input_shape, ctx.model.n_classes,
                                              int(np.random.default_rng([cfg.seed, 0x11A, 2, i]).integers(2 ** 31))
                                              ).initial_weights() for i in range(k)])
        forward = ctx.model.logits
        key = hashlib.sha256(json.dumps({
            "ensemble": ash.cache_key(f"functional:{kind}", x_pool, y_pool, masks, ctx.model.n_classes,
                                      **train_settings),
            "model": ctx.model.describe(), "init": _digest(init.numpy()),
            "code_version": CODE_VERSION}, sort_keys=True, default=str).encode()).hexdigest()
    else:
        forward = None
        key = ash.cache_key(kind, x_pool, y_pool, masks, ctx.model.n_classes, **ensemble_settings)
    cache_dir = _cache_dir(ctx)
    ens = None
    if cache_dir is not None:
        cache = ash.ShadowCache(cache_dir)
        ens = cache.load(key, forward=forward)
    if ens is None:
        if forward is not None:                 # every architecture but softmax regression
            ens = ash.train_functional_ensemble(forward, init, pool.x[torch.as_tensor(shadow_pool)], y_pool, masks,
                                                ctx.model.n_classes, **train_settings)
        else:
            ens = ash.train_ensemble(kind, x_pool, y_pool, masks, ctx.model.n_classes, **ensemble_settings)
        ens.key = key
        if cache_dir is not None:
            cache.save(key, ens)
    masks_info = {"sha256": _digest(masks), "shape": list(masks.shape),
                  "columns": "shadow-pool records: forget set, population, test split, then retained filler"}
    # The shadow pool's record ids are not written anywhere outside the run folder: the cache is user-wide, and raw
    # ids (the forget set first) must not outlive the run there. Their digest identifies the columns.
    masks_info["record_ids_sha256"] = hashlib.sha256(
        ("\n".join(pool.record_ids[shadow_pool]) + "\n").encode("utf-8")).hexdigest()
    if cache_dir is not None:
        mpath = cache_dir / f"lira_keep_{key[:16]}.npy"
        if not mpath.exists():
            atomic_write(mpath, lambda f: np.save(f, masks, allow_pickle=False))
        masks_info.update(path=str(mpath))
    logits = ens.predict_logits(pool.x[torch.as_tensor(query)] if functional
                                else pool.flat_x(query)).double().numpy()            # (k, m, C)
    conf = signals.logit_scaled_confidence(pool.y[torch.as_tensor(query)].numpy(), logits=logits)
    fit, refused = _fit_summary(ens.train_acc, ens.test_acc, ctx)
    summary = {**fit, "trainer": ("attacks.shadows.train_functional_ensemble (the target's architecture, vmapped)"
                                  if functional else "attacks.shadows.train_ensemble"), "model_kind": kind,
               "hyperparameters": train_settings if functional else ensemble_settings,
               "not_replicated": [s for s, on in (
                   ("step-size decay (constant mean step size instead)", sgd.decay != 1.0),
                   ("gradient clipping", sgd.clip != "none"), ("weight-norm projection", sgd.weight_norm_bound))
                   if on],
               "shadow_pool_size": int(len(shadow_pool)), "shadow_train_size": int(masks.sum(1).mean()),
               "target_train_size": int(len(pool.train)), "keep_masks": masks_info, "cache_key": key,
               "from_cache": bool(ens.from_cache), "seconds": time.perf_counter() - start}
    sh = LiRAShadows(query=query, n_members=len(pool.forget), n_nonmembers=len(pool.population),
                     n_calibration=len(pool.test), keep=masks[:, :len(query)], shadow_conf=conf, summary=summary,
                     refused=refused)
    ctx.extra["lira_shadows"] = sh
    return sh


def lira_scores(ctx: AuditContext, sh: LiRAShadows, w: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Online LiRA scores of target weights ``w``: (members, non-members, calibration non-members, fit info)."""
    pool = audit_pool(ctx)
    q = torch.as_tensor(sh.query)
    with torch.no_grad():
        logits = ctx.model.logits(w.double(), pool.x[q].double()).numpy()
    conf = signals.logit_scaled_confidence(pool.y[q].numpy(), logits=logits)
    scores, info = LiRA("online", fixed_variance=ctx.cfg.audit.lira_fixed_variance).score(sh.shadow_conf, sh.keep,
                                                                                          conf)
    a, b = sh.n_members, sh.n_members + sh.n_nonmembers
    return scores[:a], scores[a:b], scores[b:], info


# -------------------------------------------------------------------------------------------------- MIA-U
@dataclass
class MIAUShadows:
    """MIA-U's shadow pairs (weights kept, so noise of any σ can be added) and the attacks fitted per σ."""

    queries: list[np.ndarray]
    labels: list[np.ndarray]
    w_original: torch.Tensor
    w_unlearned: torch.Tensor
    shadow_part: np.ndarray
    summary: dict
    refused: str | None = None
    attacks: dict[float, UnlearningAttack] = field(default_factory=dict)
    _po: list[np.ndarray] = field(default_factory=list)

    def posteriors(self, ctx: AuditContext, w: torch.Tensor, positions: np.ndarray) -> np.ndarray:
        pool = audit_pool(ctx)
        return ctx.model.predict_proba(w.double(), pool.x[torch.as_tensor(positions)].double()).numpy()

    def pairs(self, ctx: AuditContext, sigma: float) -> list[ShadowPair]:
        """Shadow training data; the unlearned shadows released with noise ``sigma`` (0: noiseless)."""
        if not self._po:
            self._po = [self.posteriors(ctx, self.w_original[s], q) for s, q in enumerate(self.queries)]
        out = []
        for s, q in enumerate(self.queries):
            wu = self.w_unlearned[s]
            if sigma > 0:
                wu = release(wu, sigma, int(np.random.default_rng([ctx.cfg.seed, 0x5E, s]).integers(2 ** 31)))
            out.append(ShadowPair(self._po[s], self.posteriors(ctx, wu, q), self.labels[s], q.copy()))
        return out

    def attack(self, ctx: AuditContext, sigma: float) -> UnlearningAttack:
        """The MIA-U attack (with its original-only baseline) fitted on shadows released at noise ``sigma``."""
        sigma = float(sigma)
        if sigma not in self.attacks:
            a = ctx.cfg.audit
            self.attacks[sigma] = UnlearningAttack(a.mia_u_classifier, a.mia_u_feature,
                                                   random_state=ctx.cfg.seed).fit(self.pairs(ctx, sigma))
        return self.attacks[sigma]


def _mia_u_key(ctx: AuditContext, pool: AuditPool, shadow_part: np.ndarray, k: int, deletions: int) -> str:
    desc = {"code_version": CODE_VERSION, "torch": ".".join(torch.__version__.split(".")[:2]),
            "data": _digest(pool.x.numpy(), pool.y.numpy()), "shadow_part": _digest(shadow_part),
            "test": _digest(ctx.x_test.numpy(), ctx.y_test.numpy()),
            "model": {"kind": ctx.model.kind, "hidden": ctx.cfg.model.hidden, "input_shape": ctx.model.input_shape,
                      "n_classes": ctx.model.n_classes, "description": ctx.model.describe()},
            "sgd": dataclasses.asdict(ctx.sgd), "curvature": ctx.cfg.unlearning.curvature,
            "order": ctx.cfg.unlearning.order, "dtype": str(ctx.unlearner.dtype), "seed": ctx.cfg.seed,
            "n_shadows": k, "deletions": deletions, "train_fraction": MIA_U_TRAIN_FRACTION}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


def mia_u_shadows(ctx: AuditContext) -> MIAUShadows:
    """Build (or load) the MIA-U shadows of this run via :class:`attacks.ShadowProtocol`."""
    if "mia_u_shadows" in ctx.extra:
        return ctx.extra["mia_u_shadows"]
    start = time.perf_counter()
    cfg = ctx.cfg
    pool = audit_pool(ctx)
    k = cfg.audit.mia_u_shadows
    shadow_part = pool.retain
    n_sh_train = int(round(MIA_U_TRAIN_FRACTION * len(shadow_part)))
    deletions = int(round(len(pool.forget) / len(pool.train) * n_sh_train))
    deletions = max(1, min(deletions, n_sh_train, len(shadow_part) - n_sh_train))
    key = _mia_u_key(ctx, pool, shadow_part, k, deletions)
    cache_dir = _cache_dir(ctx)
    cached = None
    cpath = cache_dir / f"mia_u_{key}.npz" if cache_dir is not None else None
    if cpath is not None and cpath.exists():
        with np.load(cpath, allow_pickle=False) as z:
            cached = {n: z[n].copy() for n in z.files}
    w_o: list[torch.Tensor] = []
    w_u: list[torch.Tensor] = []
    tr_acc: list[float] = []
    te_acc: list[float] = []
    shape, n_classes = ctx.model.input_shape, ctx.model.n_classes

    def factory(train: np.ndarray, deleted: np.ndarray, query: np.ndarray):
        s = len(w_o)
        if cached is not None:
            wo, wu = torch.from_numpy(cached["w_original"][s]), torch.from_numpy(cached["w_unlearned"][s])
            tr_acc.append(float(cached["train_acc"][s]))
            te_acc.append(float(cached["test_acc"][s]))
        else:
            seed_s = int(np.random.default_rng([cfg.seed, 0xA11, s]).integers(2 ** 31))
            model_s = model_from_config(cfg, shape, n_classes, seed_s)
            ids = [str(p) for p in train]
            un = HFOCUUnlearner(model_s, dataclasses.replace(ctx.sgd, seed=seed_s), mode="candidates",
                                candidates=[str(p) for p in deleted], curvature=cfg.unlearning.curvature,
                                order=cfg.unlearning.order, dtype=ctx.unlearner.dtype)
            tt = torch.as_tensor(train)
            un.fit(pool.x[tt], pool.y[tt], ids)
            un.delete([str(p) for p in deleted])
            wo, wu = un.weights_.clone(), un.state_.clone()
            tr_acc.append(ctx.model.accuracy(wo, pool.x[tt], pool.y[tt]))
            te_acc.append(ctx.model.accuracy(wo, ctx.x_test, ctx.y_test))
        w_o.append(wo)
        w_u.append(wu)
        q = torch.as_tensor(query)
        p = lambda w: ctx.model.predict_proba(w.double(), pool.x[q].double()).numpy()     # noqa: E731
        return p(wo), p(wu)

    refused = None
    try:
        proto = ShadowProtocol(factory, pool_size=len(pool.y), n_shadows=k, deletions_per_shadow=deletions,
                               seed=cfg.seed, train_fraction=MIA_U_TRAIN_FRACTION, shadow_positions=shadow_part)
        pairs = proto.shadow_pairs()
    except InvalidInputError as err:
        refused = f"not enough retained training records for the MIA-U shadows: {err}"
        pairs = []
    summary = {"protocol": "attacks.ShadowProtocol, shadow part = retained training records (never the forget "
                           "set, the population non-members or the test split)",
               "unlearner": f"HF-OCU ({cfg.unlearning.curvature}, {cfg.unlearning.order}), same SGD settings as "
                            "the target, candidates mode", "shadow_part_size": int(len(shadow_part)),
               "shadow_train_size": n_sh_train, "deletions_per_shadow": deletions,
               "classifier": cfg.audit.mia_u_classifier, "feature": cfg.audit.mia_u_feature,
               "cache_key": key, "from_cache": cached is not None,
               "cache_dir": str(cache_dir) if cache_dir is not None else None}
    if refused is None:
        if cpath is not None and cached is None:
            arrays = dict(w_original=torch.stack(w_o).numpy(), w_unlearned=torch.stack(w_u).numpy(),
                          train_acc=np.array(tr_acc), test_acc=np.array(te_acc))
            atomic_write(cpath, lambda f: np.savez(f, allow_pickle=False, **arrays))
        fit, refused = _fit_summary(tr_acc, te_acc, ctx)
        summary.update(fit)
    else:
        summary.update(n_shadows=k, fit_check="not run")
    summary["seconds"] = time.perf_counter() - start
    queries = []
    for pair in pairs:
        assert pair.ids is not None             # ShadowProtocol's pairs carry their query positions as ids
        queries.append(pair.ids)
    sh = MIAUShadows(queries=queries, labels=[p.labels for p in pairs],
                     w_original=torch.stack(w_o) if w_o else torch.zeros(0),
                     w_unlearned=torch.stack(w_u) if w_u else torch.zeros(0), shadow_part=shadow_part,
                     summary=summary, refused=refused)
    ctx.extra["mia_u_shadows"] = sh
    return sh
