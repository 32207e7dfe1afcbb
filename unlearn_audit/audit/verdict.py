"""The audit's verdict: pass, fail or inconclusive (DESIGN §5), answering two questions and saying which failed.

1. **Forgetting**: is the noiseless unlearned model indistinguishable from retraining at the per-example level?
   Per signal (logit-scaled confidence, −loss), the method's mean per-record advantage over the reference retrains
   is compared with the retrain-vs-retrain null's (two one-sided tests at ±margin on a (1 − 2α) bootstrap interval
   over models, :class:`~unlearn_audit.stats.per_example.NullComparison`).
   * fail: any signal shows a difference beyond ±margin (more distinguishable than retraining: a residual trace,
     or over-unlearning, which the two-sided advantage also catches);
   * pass: every signal is equivalent within ±margin AND the power control (the do-nothing model, i.e. the original)
     is detected as different on at least one signal;
   * inconclusive otherwise: intervals too wide, or no power (a test that cannot tell do-nothing from retraining
     decides nothing), or degenerate evidence (identical models, zero spread).
2. **Release** (certified methods only): the empirical per-example ε lower bound of the released models (family-wise
   over records, Bonferroni) does not exceed the certified ε, the weight-space check agrees, and the test accuracy
   lost to the noise is within ``privacy.max_accuracy_loss``. A release near chance accuracy is never a pass: the
   verdict says the certificate is vacuous.

The overall status is fail if either answer fails, pass if forgetting passes and the release (when there is one)
passes, inconclusive otherwise. A trained model no better than its class frequencies (:class:`ModelFit`) has
learnt nothing to forget: its forgetting question is never a pass (a trace found is still a fail), and the verdict
says why.
Single-pair attack AUC rows (DeLong) are a secondary view and never decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from unlearn_audit.stats.per_example import NullComparison, SingleModelTest

EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 3}


@dataclass
class Answer:
    """One of the verdict's two questions: its status and the reasons behind it."""

    question: str
    status: str                          # pass | fail | inconclusive | not applicable
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"question": self.question, "status": self.status, "reasons": self.reasons}


@dataclass
class ReleaseEvidence:
    """What the release question needs: the certified ε, per-signal family-wise ε lower bounds of the released
    models (None when the release could not be drawn), the test accuracies, and the weight-space check."""

    certified_epsilon: float
    sigma: float
    epsilon_lower_bound: dict[str, float] | None
    accuracy_noiseless: float
    accuracy_released: float | None
    chance_accuracy: float
    weight_space_violated: bool = False
    weight_space_message: str = ""
    not_certifiable: str | None = None     # why no certified release can be made (the certificate says)


@dataclass(frozen=True)
class ModelFit:
    """Whether the trained (original) model learnt anything from its training data, on two scales that fail in
    different places: its training accuracy against the majority class's share (``chance_accuracy``), and its mean
    training cross-entropy (nats) against the entropy of the labels' class frequencies (the loss of predicting those
    frequencies for every record). It fits when either is at least :attr:`MIN_ABOVE_PRIOR` of the way from the prior
    to a perfect model: accuracy alone misses a useful model on very imbalanced classes, cross-entropy alone a
    strongly regularised one (soft probabilities, right answers: the default audit's softmax explains 9.8% of the
    entropy at 86% accuracy). Training data, not test data: a model that memorised its records has the most to
    forget. A model failing both (e.g. weights collapsed under too much weight decay) has learnt nothing."""

    train_accuracy: float
    chance_accuracy: float
    train_cross_entropy: float
    prior_entropy: float
    MIN_ABOVE_PRIOR: ClassVar[float] = 0.1

    @property
    def accuracy_above_chance(self) -> float:
        """(accuracy − chance) / (1 − chance): 0 at the majority share, 1 for a perfect model."""
        return (self.train_accuracy - self.chance_accuracy) / max(1.0 - self.chance_accuracy, 1e-12)

    @property
    def entropy_explained(self) -> float:
        """1 − CE / H(prior): 0 for the class frequencies (or worse), 1 for a model that is certain and right."""
        return 1.0 - self.train_cross_entropy / max(self.prior_entropy, 1e-12)

    @property
    def fits(self) -> bool:
        return max(self.accuracy_above_chance, self.entropy_explained) >= self.MIN_ABOVE_PRIOR

    def reason(self) -> str:
        return (f"the trained model learnt nothing to forget: training accuracy {self.train_accuracy:.3f} against "
                f"{self.chance_accuracy:.3f} for the majority class, training cross-entropy "
                f"{self.train_cross_entropy:.3f} nats against {self.prior_entropy:.3f} for the class frequencies "
                f"(both less than {self.MIN_ABOVE_PRIOR:.0%} of the way to a perfect model), so indistinguishability "
                "from retraining says nothing; change the training settings (training.lam, training.lr, epochs)")


@dataclass
class Verdict:
    status: str
    method: str
    forgetting: Answer
    release: Answer
    alpha: float
    margin: float
    max_accuracy_loss: float
    n_pairs: int
    n_records: int
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def reasons(self) -> list[str]:
        return [f"{a.question}: {r}" for a in (self.forgetting, self.release) for r in a.reasons]

    @property
    def failed(self) -> list[str]:
        """Which questions failed."""
        return [a.question for a in (self.forgetting, self.release) if a.status == "fail"]

    def to_dict(self) -> dict:
        return {"status": self.status, "exit_code": self.exit_code, "method": self.method,
                "failed_questions": self.failed, "forgetting": self.forgetting.to_dict(),
                "release": self.release.to_dict(), "reasons": self.reasons, "notes": self.notes,
                "test": ("per-example tests over paired models: mean per-record advantage |2·AUC−1| of the method "
                         "vs reference retrains, minus the retrain-vs-retrain null's; two one-sided tests at "
                         f"±{self.margin:g} on the {100 * (1 - 2 * self.alpha):.0f}% bootstrap interval"),
                "alpha": self.alpha, "margin": self.margin, "max_accuracy_loss": self.max_accuracy_loss,
                "n_pairs": self.n_pairs, "n_records": self.n_records}


def _describe(signal: str, c: NullComparison, margin: float, alpha: float) -> str:
    lo, hi = c.conf_int(2 * alpha)
    ci = f"{100 * (1 - 2 * alpha):.0f}% CI [{lo:+.3f}, {hi:+.3f}]"
    head = (f"{signal}: advantage {c.method_advantage:.3f} vs null {c.null_advantage:.3f} "
            f"(difference {c.difference:+.3f}, {ci})")
    decision = c.decision(margin, alpha)
    if c.degenerate:
        return f"{head}: degenerate evidence, decides nothing ({c.degenerate})"
    if decision == "equivalent":
        return f"{head}: as indistinguishable from retraining as retraining itself, within ±{margin:g}"
    if decision == "different":
        return f"{head}: more distinguishable from retraining than retraining itself, beyond ±{margin:g}"
    return f"{head}: the interval straddles the margin ±{margin:g}"


def decide_forgetting(method: dict[str, NullComparison], control: dict[str, NullComparison], *, alpha: float,
                      margin: float) -> Answer:
    """Forgetting question from the method's and the do-nothing control's comparisons with the null, by signal."""
    ans = Answer("forgetting", "inconclusive")
    if not method:
        ans.reasons.append("no per-example comparison was computed")
        return ans
    decisions = {s: c.decision(margin, alpha) for s, c in method.items()}
    ans.reasons += [_describe(s, c, margin, alpha) for s, c in method.items()]
    power = [s for s, c in control.items() if c.decision(margin, alpha) == "different" and not c.degenerate]
    if "different" in decisions.values():
        ans.status = "fail"
    elif not power:
        ans.reasons.append("no power: the do-nothing control (the original model) is not detected by any signal, "
                           "so equivalence here says nothing; more pairs or a larger forget set would decide")
    elif all(d == "equivalent" for d in decisions.values()):
        ans.status = "pass"
        ans.reasons.append(f"power: the do-nothing control is detected ({', '.join(power)})")
    else:
        ans.reasons.append("more pairs would narrow the intervals (their width shrinks roughly as 1/√N)")
    return ans


def decide_forgetting_single(test: SingleModelTest) -> Answer:
    """Forgetting question for ONE model unlearned outside the tool: it cannot be rerun on the paired models, so
    it is ranked among the retrain-vs-retrain null models. A rank beyond the null's (1 − α) quantile shows a trace
    (fail); otherwise the answer is inconclusive, never pass: one draw cannot show that a method leaves no trace."""
    head = (f"one model (unlearned outside the tool), ranked among {test.null.size} retrain-vs-retrain null models: "
            f"its mean signed per-record advantage |mean(2·AUC−1)| {test.statistic:.3f} vs the null's mean "
            f"{float(test.null.mean()):.3f}, "
            f"p = {test.p_value:.3g}")
    power = ("" if test.control_power is None else
             f"; this single-model test flags {100 * test.control_power:.0f}% of the do-nothing models at α")
    floor = 1.0 / (test.null.size + 1)
    if floor >= test.alpha:
        return Answer("forgetting", "inconclusive", [
            f"{head}: with {test.null.size} null models the smallest possible p is {floor:.3g} ≥ α = {test.alpha:g}, "
            f"so this test cannot show anything; use audit.pairs ≥ {int(np.ceil(1 / test.alpha))}"])
    if test.decision() == "different":
        return Answer("forgetting", "fail", [f"{head} < α = {test.alpha:g}: more distinguishable from retraining "
                                             f"than a retrain{power}"])
    return Answer("forgetting", "inconclusive", [
        f"{head} ≥ α = {test.alpha:g}: no trace detected{power}",
        "limited evidence: a single model can show a trace but not its absence (the per-example test needs the "
        "method rerun on many independently trained models); to decide, run the method through the tool as "
        "unlearning.methods = ['package.module:Class']"])


def decide_release(r: ReleaseEvidence | None, *, max_accuracy_loss: float) -> Answer:
    """Release question (certified methods): honest (empirical ε ≤ certified ε) and usable (accuracy kept)."""
    if r is None:
        return Answer("release", "not applicable", ["the method releases no certified model"])
    ans = Answer("release", "pass")
    if r.not_certifiable:
        ans.status = "fail"
        ans.reasons.append(f"no certified release: {r.not_certifiable}")
        return ans
    if r.epsilon_lower_bound is None or r.accuracy_released is None:
        ans.status = "fail"
        ans.reasons.append(f"vacuous certificate: the release at σ = {r.sigma:.4g} cannot be drawn or used")
        return ans
    for sig, lb in r.epsilon_lower_bound.items():
        if lb > r.certified_epsilon:
            ans.status = "fail"
            ans.reasons.append(f"IMPLEMENTATION FAILURE: {sig}: the per-example ε lower bound {lb:.3f} exceeds the "
                               f"certified ε {r.certified_epsilon:g}")
    if r.weight_space_violated:
        ans.status = "fail"
        ans.reasons.append("IMPLEMENTATION FAILURE: " + r.weight_space_message)
    loss = r.accuracy_noiseless - r.accuracy_released
    above_chance = (r.accuracy_released - r.chance_accuracy) / max(r.accuracy_noiseless - r.chance_accuracy, 1e-12)
    if above_chance < 0.5:
        ans.status = "fail"
        ans.reasons.append(f"vacuous certificate: the release keeps {r.accuracy_released:.3f} test accuracy "
                           f"(chance {r.chance_accuracy:.3f}, noiseless {r.accuracy_noiseless:.3f}) at σ = "
                           f"{r.sigma:.4g}")
    elif loss > max_accuracy_loss:
        ans.status = "fail"
        ans.reasons.append(f"the noise costs {100 * loss:.1f} points of test accuracy ({r.accuracy_noiseless:.3f} → "
                           f"{r.accuracy_released:.3f}), more than privacy.max_accuracy_loss = "
                           f"{100 * max_accuracy_loss:g} points")
    if ans.status == "pass":
        ans.reasons.append(f"per-example ε lower bounds ≤ certified ε {r.certified_epsilon:g} "
                           f"({', '.join(f'{k} {v:.3f}' for k, v in r.epsilon_lower_bound.items())}); accuracy "
                           f"{r.accuracy_noiseless:.3f} → {r.accuracy_released:.3f} at σ = {r.sigma:.4g}")
    return ans


def decide(method: str, comparisons: dict[str, NullComparison], control: dict[str, NullComparison],
           release: ReleaseEvidence | None, *, alpha: float, margin: float, max_accuracy_loss: float,
           n_pairs: int, n_records: int, notes: list[str] | None = None,
           single: SingleModelTest | None = None, fit: ModelFit | None = None) -> Verdict:
    """The verdict about ``method``; ``single``: its one-model test when it could not be rerun on the pairs
    (weights unlearned outside the tool), which then answers the forgetting question; ``fit``: how far the trained
    model got from its labels' class frequencies (one that learnt nothing never passes the forgetting question)."""
    forgetting = (decide_forgetting_single(single) if single is not None else
                  decide_forgetting(comparisons, control, alpha=alpha, margin=margin))
    if fit is not None and not fit.fits:
        forgetting = Answer("forgetting", "inconclusive" if forgetting.status == "pass" else forgetting.status,
                            [fit.reason(), *forgetting.reasons])
    rel = decide_release(release, max_accuracy_loss=max_accuracy_loss)
    statuses = {forgetting.status, rel.status}
    if "fail" in statuses:
        status = "fail"
    elif forgetting.status == "pass" and rel.status in ("pass", "not applicable"):
        status = "pass"
    else:
        status = "inconclusive"
    return Verdict(status=status, method=method, forgetting=forgetting, release=rel, alpha=alpha, margin=margin,
                   max_accuracy_loss=max_accuracy_loss, n_pairs=n_pairs, n_records=n_records,
                   notes=list(notes or []))
