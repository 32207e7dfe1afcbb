"""The audit's main test (DESIGN §4b): per-example evidence over N paired models.

Three groups of models, all trained on the same training set with independent training randomness:
* pairs (seeds ``pair_seeds``): the original w_T, every configured method's unlearned model, and the exact retrain
  without U on the pair's own initialisation and schedule: that retrain is the *null* group (exact unlearning);
* reference retrains (seeds ``reference_seeds``, disjoint): label 0 of every comparison;
* for the ``retrain`` method only: retrains from a third set of seeds, so that exact retraining audited as if it were
  a method is a genuine test of the calibration, not the null compared with itself.

For every forget record and signal (logit-scaled confidence, −loss) each group gives N draws. Method vs reference is
judged against null vs reference (:func:`unlearn_audit.stats.per_example.compare_to_null`); original (do-nothing)
vs reference is the power control. Releases use an independent noise draw per model (method, null and reference
alike): never a shared draw.

Every release uses the primary run's σ. The a-posteriori certificate depends on the training randomness, so each
pair would certify its own σ_i. Measured on the default digits audit (11 forget records, 12 pair seeds, each
certified on its own trajectory), Δ_i / Δ_primary ranged from 0.967 to 0.995: the shared σ is within 3.3 % of every
pair's own, here on the side of more noise. Computing each pair's certificate (a float64 replay per pair) is not done.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from attacks import signals
from unlearn_audit.audit.context import AuditContext
from unlearn_audit.audit.methods import ResolvedMethod, paired_result, run_method, task_from_context
from unlearn_audit.audit.pairs import PairedModels, train_paired
from unlearn_audit.audit.protocol import PairedRun, UnlearningTask
from unlearn_audit.certify import release
from unlearn_audit.inputs import model_from_config
from unlearn_audit.stats.per_example import (
    NullComparison,
    PerExampleEvidence,
    SingleModelTest,
    compare_to_null,
    per_example_evidence,
    single_model_test,
)

SIGNALS = {"confidence": "logit-scaled confidence log p_y − log Σ_{y'≠y} p_y'", "loss": "−cross-entropy"}
DECISION_SIGNAL = "confidence"
"""The signal the forgetting test decides on. −loss = log p_y is a monotone function of the same p_y, so its
per-record ranks, thresholds, ε bounds and advantages are identical; it differs only in U-LiRA's Gaussian fit."""
DO_NOTHING = "identity"
CONTROL = "do-nothing (control)"
NULL = "retrain (null)"


@dataclass
class GroupEvidence:
    """One group of models (a method in one state, or a control) against the reference retrains."""

    name: str
    state: str                                     # noiseless | released
    sigma: float
    accuracy_test: np.ndarray                      # per model
    evidence: dict[str, PerExampleEvidence]        # by signal
    comparison: dict[str, NullComparison] = field(default_factory=dict)   # by signal (not for the null itself)

    def summary(self, margin: float, alpha: float, certified_epsilon: float | None = None) -> dict:
        out = {"name": self.name, "state": self.state, "sigma": self.sigma,
               "accuracy_test_mean": float(np.mean(self.accuracy_test)),
               "accuracy_test_sd": float(np.std(self.accuracy_test, ddof=1)) if len(self.accuracy_test) > 1 else 0.0}
        signals_out: dict[str, dict] = {}
        for sig, ev in self.evidence.items():
            row = ev.summary()
            if sig in self.comparison:
                row["vs_null"] = self.comparison[sig].to_dict(margin=margin, alpha=alpha)
            if certified_epsilon is not None:
                row["fraction_above_certified_epsilon"] = ev.fraction_above(certified_epsilon)
            signals_out[sig] = row
        out["signals"] = signals_out
        return out


@dataclass
class PerExampleResult:
    """Everything the per-example tests measured; ``summary()`` is results.json's ``per_example`` section and
    ``per_record()`` the arrays written to ``artefacts/per_example.npz``."""

    n_pairs: int
    n_records: int
    pair_seeds: np.ndarray
    reference_seeds: np.ndarray
    margin: float
    alpha: float
    delta: float
    chance_accuracy: float
    groups: dict[tuple[str, str], GroupEvidence]
    training_seconds: float
    notes: list[str] = field(default_factory=list)
    single: dict[str, SingleModelTest] = field(default_factory=dict)
    """One-model tests of methods that cannot be rerun on the pairs (weights unlearned elsewhere), by name."""

    def group(self, name: str, state: str = "noiseless") -> GroupEvidence | None:
        return self.groups.get((name, state))

    def require(self, name: str, state: str = "noiseless") -> GroupEvidence:
        """The group, which must exist (every configured method and the controls always have a noiseless group)."""
        g = self.group(name, state)
        if g is None:
            raise KeyError(f"no per-example group {name!r} ({state})")
        return g

    def summary(self, certified_epsilon: float | None = None) -> dict:
        return {
            "protocol": ("N models per group trained on the same data with independent initialisation and batch "
                         "schedule; per forget record, each group's signals against the reference retrains; "
                         "decision statistic: mean per-record advantage |2·AUC−1| minus the retrain-vs-retrain "
                         "null's, (1−2α) bootstrap interval over models, two one-sided tests at ±margin"),
            "n_pairs": self.n_pairs, "n_records": self.n_records, "margin": self.margin, "alpha": self.alpha,
            "delta": self.delta, "chance_accuracy": self.chance_accuracy, "signals": SIGNALS,
            "pair_seeds": [int(s) for s in self.pair_seeds], "reference_seeds": [int(s) for s in self.reference_seeds],
            "training_seconds": self.training_seconds, "notes": self.notes,
            "groups": [g.summary(self.margin, self.alpha, certified_epsilon if g.state == "released" else None)
                       for g in self.groups.values()],
            "single_model": {name: {"signal": DECISION_SIGNAL, **t.to_dict()} for name, t in self.single.items()}}

    def per_record(self) -> dict[str, np.ndarray]:
        out = {}
        for g in self.groups.values():
            for sig, ev in g.evidence.items():
                for k, v in ev.per_record().items():
                    out[f"{g.name}/{g.state}/{sig}/{k}"] = np.asarray(v)
        return out


def _signals(ctx: AuditContext, weights: torch.Tensor) -> dict[str, np.ndarray]:
    """(models, records) matrices of each signal on the forget set, float64; higher = more member-like."""
    xf, yf = ctx.forget
    with torch.no_grad():
        logits = torch.stack([ctx.model.logits(w.double(), xf.double()) for w in weights]).numpy()
    labels = np.broadcast_to(yf.numpy(), logits.shape[:2])
    return {"confidence": signals.logit_scaled_confidence(labels, logits=logits),
            "loss": -signals.cross_entropy(labels, logits=logits)}


def _accuracy(ctx: AuditContext, weights: torch.Tensor) -> np.ndarray:
    return np.array([ctx.model.accuracy(w, ctx.x_test, ctx.y_test) for w in weights])


def _release(weights: torch.Tensor, sigma: float, seeds: np.ndarray, stream: int) -> torch.Tensor:
    """weights[i] + N(0, σ² I) by the product's one release mechanism, an independent draw per model (seeded by
    the model's seed and the stream)."""
    return torch.stack([release(w, sigma, int(s) * 7919 + stream) for w, s in zip(weights, seeds)])


def _finite_rows(w: torch.Tensor) -> bool:
    return bool(torch.isfinite(w).all())


def per_pair_task(ctx: AuditContext, pairs: PairedModels, i: int) -> UnlearningTask:
    """Pair i's trained run as a method sees it: the pair's original weights, schedule and seed (no HF-OCU
    unlearner: HF-OCU's paired form is batched)."""
    task = task_from_context(ctx, with_hfocu=False)
    seed = int(pairs.seeds[i])
    return dataclasses.replace(task, schedule=pairs.schedules[i], weights=pairs.original_weights()[i].clone(),
                               seed=seed, config=ctx.cfg.model_copy(update={"seed": seed}, deep=True))


def paired_weights(ctx: AuditContext, run: PairedRun, rm: ResolvedMethod) -> torch.Tensor:
    """Every paired model's unlearned weights, (N, d): the method's batched form when it has one, else the one
    dispatcher (:func:`~unlearn_audit.audit.methods.run_method`) once per pair."""
    pairs = run.pairs
    batched = paired_result(rm, run, pairs.retrain.dtype)
    if batched is not None:
        return batched
    return torch.stack([run_method(rm, ctx, task=per_pair_task(ctx, pairs, i)).weights.to(pairs.retrain.dtype)
                        for i in range(pairs.n)])


def collect(ctx: AuditContext, methods: dict[str, ResolvedMethod], sigmas: dict[str, float], *, n_pairs: int,
            margin: float, alpha: float, delta: float, n_bootstrap: int = 2000,
            progress: Callable[[str, int, int], None] | None = None,
            single: dict[str, torch.Tensor] | None = None) -> PerExampleResult:
    """Train the groups, compute every group's per-example evidence and its comparison with the null.

    ``methods``: name → the resolved method (run on every pair: batched when it has a batched form); ``sigmas``:
    name → the release σ of certified methods (absent or 0 = no release); ``single``: name → the one unlearned model
    of a method that cannot be rerun on the pairs (weights unlearned elsewhere): ranked against the null models
    (:func:`~unlearn_audit.stats.per_example.single_model_test`) instead of the paired comparison.
    """
    say = progress or (lambda *_: None)
    cfg, model = ctx.cfg, ctx.model
    base = cfg.seed * 1_000_003 + 1
    pair_seeds = base + np.arange(n_pairs)
    ref_seeds = base + n_pairs + np.arange(n_pairs)

    def init(seed: int) -> torch.Tensor:
        return model_from_config(cfg, model.input_shape, model.n_classes, seed).initial_weights()

    dtype = ctx.w_original.dtype
    norm = cfg.unlearning.normalisation
    args = (model, ctx.x, ctx.y, ctx.sgd, ctx.forget_positions)
    say("paired models", 0, 3)
    pairs = train_paired(*args, pair_seeds, init, normalisation=norm, dtype=dtype)
    say("paired models", 1, 3)
    reference = train_paired(*args, ref_seeds, init, normalisation=norm, originals=False, dtype=dtype)
    seconds = pairs.seconds + reference.seconds
    notes = []
    if cfg.unlearning.order != "propagate_first" or cfg.unlearning.curvature != "exact":
        notes.append("the paired HF-OCU models use the exact curvature and the propagate-then-inject order, not the "
                     "configured variant")
    extra_seconds = []

    def independent_retrains() -> torch.Tensor:
        extra = train_paired(*args, base + 2 * n_pairs + np.arange(n_pairs), init, normalisation=norm,
                             originals=False, dtype=dtype)
        extra_seconds.append(extra.seconds)
        return extra.retrain

    run = PairedRun(pairs, independent_retrains)
    unlearned: dict[str, torch.Tensor] = {}
    for name, rm in methods.items():
        if rm.method.pairable:
            unlearned[name] = paired_weights(ctx, run, rm)
    seconds += sum(extra_seconds)
    say("paired models", 2, 3)

    ref_sig = _signals(ctx, reference.retrain)
    null_sig = _signals(ctx, pairs.retrain)
    groups: dict[tuple[str, str], GroupEvidence] = {}

    def add(name: str, state: str, sigma: float, w: torch.Tensor, ref: dict, null: dict | None) -> None:
        sig = _signals(ctx, w)
        ev = {k: per_example_evidence(sig[k], ref[k], delta=delta, alpha=alpha) for k in SIGNALS}
        k = DECISION_SIGNAL
        comp = {k: compare_to_null(sig[k], null[k], ref[k], n_bootstrap=n_bootstrap, seed=cfg.seed)
                } if null is not None else {}
        groups[(name, state)] = GroupEvidence(name, state, sigma, _accuracy(ctx, w), ev, comp)

    groups[(NULL, "noiseless")] = GroupEvidence(
        NULL, "noiseless", 0.0, _accuracy(ctx, pairs.retrain),
        {k: per_example_evidence(null_sig[k], ref_sig[k], delta=delta, alpha=alpha) for k in SIGNALS})
    add(CONTROL, "noiseless", 0.0, pairs.original_weights(), ref_sig, null_sig)
    for name, w in unlearned.items():
        add(name, "noiseless", 0.0, w, ref_sig, null_sig)
    for name, sigma in sigmas.items():
        if not sigma or name not in unlearned:
            continue
        if not np.isfinite(sigma):
            notes.append(f"{name}: σ is not finite (a vacuous certificate): its releases cannot be drawn")
            continue
        w_rel = _release(unlearned[name], sigma, pair_seeds, stream=1)
        if not _finite_rows(w_rel):
            notes.append(f"{name}: released weights are not finite at σ = {sigma:.4g} (a vacuous certificate)")
            continue
        ref_rel = _signals(ctx, _release(reference.retrain, sigma, ref_seeds, stream=2))
        null_rel = _signals(ctx, _release(pairs.retrain, sigma, pair_seeds, stream=3))
        add(name, "released", sigma, w_rel, ref_rel, null_rel)
    single_tests = {}
    for name, w in (single or {}).items():
        k = DECISION_SIGNAL
        one = _signals(ctx, w.reshape(1, -1))[k][0]
        single_tests[name] = single_model_test(one, null_sig[k], ref_sig[k], control=_signals(
            ctx, pairs.original_weights())[k], alpha=alpha)
        notes.append(f"{name}: one model unlearned outside the tool; the per-example test over paired models cannot "
                     "be run on it, so it is ranked against the retrain-vs-retrain null models instead (can show a "
                     "trace, never its absence)")
    say("paired models", 3, 3)
    counts = np.bincount(ctx.y_test.numpy(), minlength=model.n_classes)
    return PerExampleResult(n_pairs=n_pairs, n_records=len(ctx.forget_positions), pair_seeds=pair_seeds,
                            reference_seeds=ref_seeds, margin=margin, alpha=alpha, delta=delta,
                            chance_accuracy=float(counts.max() / counts.sum()), groups=groups,
                            training_seconds=seconds, notes=notes, single=single_tests)
