"""The audit run (DESIGN §5): data → train with approximators → choose U → unlearn with each method → measure →
attack → statistics → verdict. Returns a JSON-ready results dict; :mod:`unlearn_audit.audit.run` writes files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from unlearn_audit import __version__
from unlearn_audit.audit import attack_suite, evidence, measure
from unlearn_audit.audit.attack_suite import ATTACKS
from unlearn_audit.audit.context import AuditContext
from unlearn_audit.audit.environment import environment
from unlearn_audit.audit.methods import EXTERNAL, outcome_summary, resolve_methods, run_method
from unlearn_audit.audit.targets import AttackRun, Target
from unlearn_audit.audit.tradeoff import privacy_utility_sweep
from unlearn_audit.audit.verdict import ModelFit, ReleaseEvidence, decide
from unlearn_audit.certify import release
from unlearn_audit.certify.capacity import release_sigma_budget, unlearner_capacity
from unlearn_audit.config import AuditConfig
from unlearn_audit.hfocu import HFOCUUnlearner
from unlearn_audit.inputs import build_inputs, tensors
from unlearn_audit.models.functional import weights_hash
from unlearn_audit.schema import SCHEMA_VERSION
from unlearn_audit.training import retrain_without

PRIMARY_METHOD = "hfocu"

Progress = Callable[[str, int, int], None]


class AuditInputError(ValueError):
    """Bad input discovered while running (e.g. a forget file naming unknown ids)."""


@dataclass
class AuditArtefacts:
    """Large outputs kept beside results.json (weights as .npy; never pickled)."""

    weights: dict[str, np.ndarray]
    forget_ids: list[str]
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Single-pair attack scores by "attack:target/state": (forget-set records = label 1, never trained on = 0)."""
    per_example: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-record arrays of the per-example tests, by "group/state/signal/statistic"."""
    context: AuditContext | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def choose_forget_set(cfg: AuditConfig, train_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Training positions of U: a seeded random fraction, or the ids listed in ``unlearning.forget_file``."""
    if cfg.unlearning.forget_file:
        p = Path(cfg.unlearning.forget_file)
        if not p.is_file():
            raise AuditInputError(f"unlearning.forget_file: file not found: {p}")
        wanted = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        index = {rid: i for i, rid in enumerate(train_ids)}
        missing = [r for r in wanted if r not in index]
        if missing:
            raise AuditInputError(f"unlearning.forget_file: record id '{missing[0]}' is not in the training set")
        if len(set(wanted)) != len(wanted):
            raise AuditInputError("unlearning.forget_file: a record id is listed twice")
        if len(wanted) < 2:
            raise AuditInputError("unlearning.forget_file: at least 2 record ids are needed for the attack statistics")
        return np.array([index[r] for r in wanted], dtype=np.int64)
    k = max(2, int(round(cfg.unlearning.forget_fraction * len(train_ids))))
    if k >= len(train_ids):
        raise AuditInputError(f"the training split has {len(train_ids)} record(s): too few for a forget set of {k} "
                              "and at least one retained record (use more data or a larger data.train_fraction)")
    return np.sort(rng.choice(len(train_ids), size=k, replace=False))


def prepare_context(cfg: AuditConfig, say: Progress) -> AuditContext:
    """Load and split the data, train the target with HF-OCU approximators, choose the forget set, retrain."""
    say("loading data", 0, 1)
    inp = build_inputs(cfg)
    ds, splits, sgd, model, x, y = inp.dataset, inp.splits, inp.sgd, inp.model, inp.x, inp.y
    train = splits.train
    (x_test, y_test), (x_pop, y_pop) = tensors(splits.test), tensors(splits.population)
    say("loading data", 1, 1)

    # The forget set depends only on the seed and the training ids, so it is known before training: ``candidates``
    # mode keeps approximators for it alone.
    forget_pos = choose_forget_set(cfg, train.ids, np.random.default_rng(cfg.seed))
    mode = cfg.unlearning.mode
    unlearner = HFOCUUnlearner(model, sgd, mode=mode, curvature=cfg.unlearning.curvature, order=cfg.unlearning.order,
                               layout=cfg.unlearning.layout, bound=cfg.privacy.bound,
                               candidates=[str(train.ids[i]) for i in forget_pos] if mode == "candidates" else None)
    unlearner.fit(x, y, train.ids, progress=lambda d, t: say("training with approximators", d, t))

    say("exact retraining", 0, 1)
    t0 = time.perf_counter()
    w_retrain = retrain_without(model, x, y, sgd, unlearner.schedule_, forget_pos,
                                normalisation=cfg.unlearning.normalisation, dtype=unlearner.dtype)
    retrain_seconds = time.perf_counter() - t0
    say("exact retraining", 1, 1)

    ctx = AuditContext(cfg=cfg, model=model, sgd=sgd, x=x, y=y, train_ids=train.ids,
                       x_test=x_test, y_test=y_test, x_pop=x_pop, y_pop=y_pop, unlearner=unlearner,
                       schedule=unlearner.schedule_, w_original=unlearner.weights_.clone(),
                       forget_positions=forget_pos, forget_ids=[str(train.ids[i]) for i in forget_pos],
                       w_retrain=w_retrain, retrain_seconds=retrain_seconds)
    ctx.extra["dataset"] = ds
    ctx.extra["splits"] = splits
    return ctx


def deletion_capacity_summary(ctx: AuditContext, *, seed: int, progress: Progress) -> dict:
    """Deletion capacity of the trained model (random deletions among the tracked records, each release certified
    at the configured (ε, δ)) against ``privacy.max_accuracy_loss`` on the test split, and the largest σ the model
    tolerates within that budget (kept in the trained run so that ``forget`` can say when a retrain is due)."""
    pc = ctx.cfg.privacy
    progress("deletion capacity", 0, 1)
    cap = unlearner_capacity(ctx.unlearner, ctx.x_test, ctx.y_test, epsilon=pc.epsilon, delta=pc.delta,
                             max_accuracy_loss=pc.max_accuracy_loss, mechanism=pc.mechanism, seed=seed)
    budget = release_sigma_budget(ctx.unlearner, ctx.x_test, ctx.y_test, max_accuracy_loss=pc.max_accuracy_loss,
                                  seed=seed)
    ctx.unlearner.capacity_budget_ = budget
    progress("deletion capacity", 1, 1)
    return {**cap.to_dict(), **budget}


def model_fit(ctx: AuditContext, w) -> ModelFit:
    """The trained model's training accuracy and cross-entropy against its training labels' class frequencies."""
    counts = np.bincount(ctx.y.numpy(), minlength=ctx.model.n_classes).astype(np.float64)
    prior = counts[counts > 0] / counts.sum()
    return ModelFit(train_accuracy=ctx.model.accuracy(w, ctx.x, ctx.y), chance_accuracy=float(prior.max()),
                    train_cross_entropy=float(measure.per_record_loss(ctx.model, w, ctx.x, ctx.y).mean()),
                    prior_entropy=float(-(prior * np.log(prior)).sum()))


def run_audit(cfg: AuditConfig, progress: Progress | None = None) -> tuple[dict, AuditArtefacts]:
    """Run a complete audit. ``progress(step_name, done, total)`` is called on long steps."""
    started, t_start = _now(), time.perf_counter()
    say = progress or (lambda *_: None)
    alpha, margin = cfg.audit.alpha, cfg.audit.margin
    resolved = resolve_methods(cfg)         # plugins imported and checked before any training
    ctx = prepare_context(cfg, say)
    ds, splits = ctx.extra["dataset"], ctx.extra["splits"]
    w_orig, w_re = ctx.w_original, ctx.w_retrain

    # -- unlearning methods ------------------------------------------------------------------------------------
    outcomes = {}
    for i, (name, rm) in enumerate(resolved.items()):
        say("unlearning methods", i, len(resolved))
        outcomes[name] = run_method(rm, ctx)
    say("unlearning methods", len(outcomes), len(outcomes))

    original_distance = float((w_orig.double() - w_re.double()).norm())
    methods = {
        "original": {"description": "model trained on all records, nothing removed", "certified": False,
                     "distance_to_retrain": original_distance,
                     "accuracy": ctx.accuracies(w_orig), "seconds_per_request": 0.0, "precompute_seconds": 0.0,
                     "storage_bytes": 0},
        "retrain": {"description": f"exact replay of the schedule without U ({cfg.unlearning.normalisation} "
                                   "normalisation)", "certified": False, "distance_to_retrain": 0.0,
                    "accuracy": ctx.accuracies(w_re), "seconds_per_request": ctx.retrain_seconds,
                    "precompute_seconds": 0.0, "storage_bytes": 0},
    }
    for name, out in outcomes.items():
        summary = methods[name] = outcome_summary(ctx, out)
        summary["distance_ratio_original_over_method"] = (
            original_distance / max(summary["distance_to_retrain"], 1e-300))

    # -- single-pair attacks (a secondary view): every method against the retrained model; a released method
    #    against the retrained model released at the same σ with its OWN noise draw (never a shared one) ----------
    targets = {t.key: t for t in (Target("original", "noiseless", w_orig), Target("retrain", "noiseless", w_re))}
    pairs: list[tuple[tuple[str, str], tuple[str, str], str]] = []     # (method key, reference key, label)
    for name, out in outcomes.items():
        if out.sigma > 0:
            ref = Target("retrain", "released", release(w_re, out.sigma, ctx.noise_seed + 1000), sigma=out.sigma,
                         noise_seed=ctx.noise_seed + 1000, role=f"reference for {name}")
            rel = Target(name, "released", out.released, sigma=out.sigma, noise_seed=ctx.noise_seed)
            targets[ref.key], targets[rel.key] = ref, rel
            pairs.append((rel.key, ref.key, f"{name} vs retrain (released, same σ, independent noise draws)"))
        t = Target(name, "noiseless", out.weights)
        targets[t.key] = t
        pairs.append((t.key, ("retrain", "noiseless"),
                      f"{name} vs retrain (noiseless{' internal state' if out.sigma > 0 else ''})"))
    pairs.append((("original", "noiseless"), ("retrain", "noiseless"), "original vs retrain (control: power check)"))

    runs: dict[tuple[str, tuple[str, str]], AttackRun] = {}
    todo = [(a, key) for a in cfg.audit.attacks for key in targets]
    for i, (attack, key) in enumerate(todo):
        say("attacks", i, len(todo))
        runs[(attack, key)] = ATTACKS[attack](ctx, targets[key])
    say("attacks", len(todo), len(todo))

    equivalence = []
    for attack in cfg.audit.attacks:
        for a_key, b_key, label in pairs:
            if not (runs[(attack, a_key)].scored and runs[(attack, b_key)].scored):
                continue    # a refused attack has no scores; the report lists it
            row = measure.equivalence_row(runs[(attack, a_key)], runs[(attack, b_key)], margin=margin,
                                          alpha=alpha, label=label)
            row.update(method=a_key[0], state=a_key[1], attack_key=attack)
            equivalence.append(row)

    # -- the main test: per-example evidence over many paired models (DESIGN §4b) ------------------------------
    ac, pc = cfg.audit, cfg.privacy
    per_example = evidence.collect(
        ctx, {n: rm for n, rm in resolved.items() if rm.method.pairable},
        {n: o.sigma for n, o in outcomes.items() if o.certified}, n_pairs=ac.pairs, margin=ac.per_example_margin,
        alpha=alpha, delta=pc.delta, n_bootstrap=ac.bootstrap, progress=say,
        single={n: outcomes[n].weights for n, rm in resolved.items() if not rm.method.pairable})

    # the verdict is about weights unlearned elsewhere when given, else hfocu when listed, else the first method
    primary = (EXTERNAL if EXTERNAL in outcomes else PRIMARY_METHOD if PRIMARY_METHOD in outcomes
               else next(iter(outcomes)))
    p_out = outcomes[primary]
    pc = cfg.privacy
    # The certificate bounds the distance to the `sum` retrain (DESIGN §2.4): the weight-space check of the
    # certified ε must use that reference even when the attacks compare with a `mean` retrain.
    w_cert_ref = w_re
    if p_out.certified and cfg.unlearning.normalisation != "sum":
        w_cert_ref = retrain_without(ctx.model, ctx.x, ctx.y, ctx.sgd, ctx.schedule, ctx.forget_positions,
                                     normalisation="sum", dtype=ctx.unlearner.dtype)
    emp_eps = measure.weight_space_epsilon(p_out.weights, w_cert_ref, p_out.sigma, pc.delta, pc.epsilon,
                                           draws=20000, seed=cfg.seed + 2, alpha=alpha) if p_out.certified else \
        {"status": "not applicable", "reason": (p_out.certificate or {}).get("not_certifiable")
         or f"{primary} is not certified"}
    if p_out.certified:
        emp_eps["reference"] = "exact retrain, sum normalisation (the certificate's reference)"

    tradeoff = []
    if p_out.certified:
        assert p_out.certificate is not None        # a certified method carries its certificate
        tradeoff = privacy_utility_sweep(ctx.model, p_out.weights, w_re, cfg.audit.sweep_sigmas + [p_out.sigma],
                                         p_out.certificate["sensitivity"], pc.delta, ctx.forget,
                                         (ctx.x_pop, ctx.y_pop), (ctx.x_test, ctx.y_test), seed=cfg.seed + 3,
                                         alpha=alpha, progress=lambda d, t: say("privacy-utility sweep", d, t))

    capacity = None
    if p_out.certified and primary == "hfocu":
        capacity = deletion_capacity_summary(ctx, seed=cfg.seed + 5, progress=say)

    single = per_example.single.get(primary)
    method_group = per_example.group(primary)
    control_group = per_example.require(evidence.CONTROL)
    release_evidence = None
    if p_out.certified and method_group is not None:
        released_group = per_example.group(primary, "released")
        release_evidence = ReleaseEvidence(
            certified_epsilon=pc.epsilon, sigma=p_out.sigma,
            epsilon_lower_bound=({k: float(ev.epsilon_lower_bound_family.max())
                                  for k, ev in released_group.evidence.items()} if released_group else None),
            accuracy_noiseless=float(np.mean(method_group.accuracy_test)),
            accuracy_released=float(np.mean(released_group.accuracy_test)) if released_group else None,
            chance_accuracy=per_example.chance_accuracy,
            weight_space_violated=bool(emp_eps.get("violated")), weight_space_message=emp_eps.get("message", ""),
            not_certifiable=(p_out.certificate or {}).get("not_certifiable"))
    verdict_obj = decide(primary, method_group.comparison if method_group is not None else {},
                         control_group.comparison, release_evidence, alpha=alpha, margin=ac.per_example_margin,
                         max_accuracy_loss=pc.max_accuracy_loss, n_pairs=per_example.n_pairs,
                         n_records=per_example.n_records, notes=per_example.notes, single=single,
                         fit=model_fit(ctx, w_orig))
    verdict = verdict_obj.to_dict()
    attack_suite.list_refusals(verdict, runs.values())

    results = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "unlearn-audit", "version": __version__},
        "run": {"started": started, "finished": _now(), "seconds": time.perf_counter() - t_start,
                "seed": cfg.seed, "config_digest": cfg.digest()},
        "environment": environment(),
        "disclaimer": "Technical evidence about a machine-unlearning procedure; not legal advice.",
        "data": {"dataset": ds.name, "n_total": ds.n, "n_train": len(ctx.x), "n_test": len(ctx.x_test),
                 "n_population": len(ctx.x_pop), "n_classes": ds.n_classes,
                 "feature_shape": list(splits.train.feature_shape), "data_digest": ds.digest(),
                 "standardize": cfg.data.standardize, "unit_norm": cfg.data.unit_norm,
                 "max_feature_norm": float(ctx.x.reshape(len(ctx.x), -1).double().norm(dim=1).max())},
        "model": {"kind": ctx.model.kind, "n_parameters": ctx.model.dim, "description": ctx.model.describe(),
                  "weights_hash": weights_hash(w_orig),
                  "plugin": ctx.model.plugin.to_dict() if ctx.model.plugin is not None else None},
        "training": {**ctx.sgd.__dict__, "n_steps": ctx.schedule.n_steps, "schedule_digest": ctx.schedule.digest(),
                     "seconds_with_approximators": ctx.unlearner.fit_seconds_,
                     "accuracy_train": ctx.model.accuracy(w_orig, ctx.x, ctx.y),
                     "accuracy_test": ctx.model.accuracy(w_orig, ctx.x_test, ctx.y_test)},
        "forget_set": {"n": len(ctx.forget_positions), "fraction": len(ctx.forget_positions) / len(ctx.x),
                       "source": cfg.unlearning.forget_file or "random", "requests": p_out.requests,
                       "hashed_record_ids": "HMAC-SHA256 under the run's random key (the run folder's "
                                            "record_id.key, never in a report), 16 hex digits"},
        "primary_method": primary,
        "certificate": p_out.certificate,
        "methods": methods,
        "attacks": [r.row for r in runs.values()],
        "equivalence": equivalence,
        "per_example": per_example.summary(pc.epsilon if p_out.certified else None),
        "empirical_epsilon": emp_eps,
        "tradeoff": tradeoff,
        "capacity": capacity,
        "verdict": verdict,
    }
    weights = {"original": w_orig.numpy(), "retrain": w_re.numpy()}
    for name, out in outcomes.items():
        weights[f"{name}_internal"] = out.weights.numpy()
        weights[f"{name}_released"] = out.released.numpy()
    scores = {f"{a}:{t}/{s}": r.scores() for (a, (t, s)), r in runs.items() if r.scored}
    artefacts = AuditArtefacts(weights=weights, forget_ids=ctx.forget_ids, scores=scores,
                               per_example=per_example.per_record(), context=ctx)
    return results, artefacts
