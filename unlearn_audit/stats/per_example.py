"""Per-example evidence over many paired models (DESIGN §4b): is a forget record's attack signal distributed the
same way across N unlearned models as across N retrained ones?

Inputs are signal matrices of shape (models, records): ``signal[i, z]`` is record z's attack signal (logit-scaled
confidence, or −loss) under model i; higher = "looks more like a member". Label convention: 1 = the group under test
(unlearned models, in which z was trained on and then deleted), 0 = the reference group (models retrained without z).

Three per-record views, each computed without peeking (the threshold or the Gaussians are fitted on one half of the
models of each group and evaluated on the other half):
* ε lower bound (the NeurIPS 2023 unlearning challenge's per-example ε, made a confidence bound): the best single
  threshold (either direction) on the fit half, then ε_LB at that threshold on the evaluation half with
  Clopper-Pearson bounds (:func:`~unlearn_audit.stats.empirical_epsilon_lower_bound`);
* U-LiRA-style likelihood ratio (Hayes et al. 2024): Gaussians per group fitted on the fit half, the log-likelihood
  ratio scored on the evaluation half, its AUC per record and pooled over records;
* the challenge's point estimate of ε over all models (capped at ln N) and its forgetting score.

The decision statistic is the mean per-record *advantage* |2·AUC_z − 1| (AUC_z = Mann-Whitney AUC of record z's
signal, group 1 against group 0, all models): 0 = indistinguishable, 1 = perfectly separated. Its sampling
distribution comes from a bootstrap over models (rows resampled within each group; the forget set is fixed, so the
randomness is the training randomness of the models). :func:`compare_to_null` tests that a method's advantage is
within ±margin of the advantage of the retrain-vs-retrain null computed against the same reference models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from .epsilon import empirical_epsilon_lower_bound
from .results import _Result, to_plain
from .validation import check_alpha, check_probability

__all__ = ["PerExampleEvidence", "NullComparison", "SingleModelTest", "per_example_evidence", "compare_to_null",
           "mean_advantage", "per_record_auc", "single_model_test", "split_halves"]


def _as_signal(a, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a (models, records) matrix (got shape {arr.shape})")
    if arr.shape[0] < 4:
        raise ValueError(f"{name} needs at least 4 models (got {arr.shape[0]}): two per half")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} has no records")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_pair(group1, group0) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_signal(group1, "group1"), _as_signal(group0, "group0")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"group1 and group0 score different records ({a.shape[1]} vs {b.shape[1]} columns)")
    return a, b


def per_record_auc(group1: np.ndarray, group0: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per record (column): P(signal under group 1 > signal under group 0), ties count ½."""
    n1 = group1.shape[0]
    ranks = rankdata(np.concatenate([group1, group0], axis=0), axis=0)
    u = ranks[:n1].sum(axis=0) - n1 * (n1 + 1) / 2.0
    return u / (n1 * group0.shape[0])


def mean_advantage(group1: np.ndarray, group0: np.ndarray) -> float:
    """Mean over records of |2·AUC_z − 1|."""
    return float(np.mean(np.abs(2.0 * per_record_auc(group1, group0) - 1.0)))


def split_halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit / evaluation halves of n exchangeable models (even rows fit, odd rows evaluate: a pre-registered split)."""
    idx = np.arange(n)
    return idx[0::2], idx[1::2]


def _smoothed_epsilon(fp: np.ndarray, fn: np.ndarray, n0: int, n1: int, delta: float) -> np.ndarray:
    """Empirical ε of thresholds with add-½ smoothed rates (used only to *choose* a threshold)."""
    fpr, fnr = (fp + 0.5) / (n0 + 1.0), (fn + 0.5) / (n1 + 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.clip(1 - delta - fpr, 1e-300, None)) - np.log(fnr)
        b = np.log(np.clip(1 - delta - fnr, 1e-300, None)) - np.log(fpr)
    return np.maximum(a, b)


def _threshold_rates(s1: np.ndarray, s0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All distinct single thresholds t (flag "group 1" when score > t): t, false positives, false negatives."""
    values = np.unique(np.concatenate([s1, s0]))
    thresholds = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2.0, [values[-1] + 1.0]])
    fp = (s0[None, :] > thresholds[:, None]).sum(axis=1)
    fn = (s1[None, :] <= thresholds[:, None]).sum(axis=1)
    return thresholds, fp, fn


def _best_threshold(s1: np.ndarray, s0: np.ndarray, delta: float) -> tuple[float, int]:
    """Best single threshold on the fit half, either direction: (threshold in the oriented score, sign ±1)."""
    best = (-math.inf, 0.0, 1)
    for sign in (1, -1):
        t, fp, fn = _threshold_rates(sign * s1, sign * s0)
        eps = _smoothed_epsilon(fp, fn, len(s0), len(s1), delta)
        k = int(np.argmax(eps))
        if eps[k] > best[0]:
            best = (float(eps[k]), float(t[k]), sign)
    return best[1], best[2]


def _challenge_epsilon(s1: np.ndarray, s0: np.ndarray, delta: float) -> float:
    """The challenge's per-example ε point estimate: max over single thresholds and both directions of
    max(ln(1−δ−FPR) − ln FNR, ln(1−δ−FNR) − ln FPR), rates floored at 1/n (so capped near ln n)."""
    best = 0.0
    n1, n0 = len(s1), len(s0)
    for sign in (1, -1):
        _, fp, fn = _threshold_rates(sign * s1, sign * s0)
        fpr, fnr = np.maximum(fp / n0, 1.0 / n0), np.maximum(fn / n1, 1.0 / n1)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.log(np.clip(1 - delta - fpr, 1e-300, None)) - np.log(fnr)
            b = np.log(np.clip(1 - delta - fnr, 1e-300, None)) - np.log(fpr)
        best = max(best, float(np.max(np.maximum(a, b))))
    return best


def _gauss_logpdf(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd)


@dataclass(frozen=True)
class PerExampleEvidence(_Result):
    """Per-record evidence that group 1 (label 1: unlearned) differs from group 0 (label 0: retrained).

    Arrays have one entry per record, in the column order of the inputs. ``epsilon_lower_bound`` holds at
    confidence 1 − ``alpha`` per record (Clopper-Pearson on the evaluation half); ``epsilon_lower_bound_family``
    at family-wise confidence 1 − ``alpha`` over all records (Bonferroni, α/records per record).
    """

    n_group1: int
    n_group0: int
    n_records: int
    delta: float
    alpha: float
    auc: np.ndarray                       # Mann-Whitney AUC per record, all models
    advantage: float                      # mean |2·AUC − 1|
    epsilon_lower_bound: np.ndarray
    epsilon_lower_bound_family: np.ndarray
    epsilon_challenge: np.ndarray         # point estimate over all models (capped near ln n)
    ulira_auc: np.ndarray                 # U-LiRA AUC per record on the evaluation half
    ulira_pooled_auc: float               # U-LiRA scores of every record pooled, evaluation half
    forgetting_score: float               # challenge: mean of 2^-bucket(ε), buckets of width 0.5

    @property
    def flagged_fraction(self) -> float:
        """Fraction of records whose ε lower bound is above 0 (at the per-record level α)."""
        return float(np.mean(self.epsilon_lower_bound > 0))

    def fraction_above(self, epsilon: float) -> float:
        """Fraction of records whose ε lower bound exceeds ``epsilon`` (e.g. the certified ε)."""
        return float(np.mean(self.epsilon_lower_bound > epsilon))

    def summary(self) -> dict:
        """Aggregates without the per-record arrays (those go to the artefacts)."""
        e = self.epsilon_lower_bound
        return to_plain({
            "n_group1": self.n_group1, "n_group0": self.n_group0, "n_records": self.n_records,
            "delta": self.delta, "alpha": self.alpha, "advantage": self.advantage,
            "epsilon_lower_bound": {"mean": float(e.mean()), "median": float(np.median(e)),
                                    "p90": float(np.quantile(e, 0.9)), "max": float(e.max())},
            "epsilon_lower_bound_family_max": float(self.epsilon_lower_bound_family.max()),
            "epsilon_challenge_mean": float(self.epsilon_challenge.mean()),
            "flagged_fraction": self.flagged_fraction,
            "ulira_auc_mean": float(self.ulira_auc.mean()), "ulira_pooled_auc": self.ulira_pooled_auc,
            "forgetting_score": self.forgetting_score})

    def per_record(self) -> dict[str, np.ndarray]:
        return {"auc": self.auc, "epsilon_lower_bound": self.epsilon_lower_bound,
                "epsilon_lower_bound_family": self.epsilon_lower_bound_family,
                "epsilon_challenge": self.epsilon_challenge, "ulira_auc": self.ulira_auc}

    def to_dict(self) -> dict:
        return self.summary()


def forgetting_score(epsilons: np.ndarray, bucket_width: float = 0.5) -> float:
    """The challenge's forgetting score: each record scores 2^-k for ε in bucket k = ⌊ε / width⌋; the mean."""
    k = np.floor(np.asarray(epsilons, dtype=np.float64) / bucket_width)
    return float(np.mean(2.0 ** (-k)))


def per_example_evidence(group1, group0, *, delta: float = 1e-5, alpha: float = 0.05) -> PerExampleEvidence:
    """Per-record tests of group 1 (label 1, e.g. unlearned models) against group 0 (label 0, retrained models).

    ``group1``, ``group0``: (models, records) signal matrices, higher = more member-like, at least 4 models each.
    """
    a, b = _check_pair(group1, group0)
    delta = check_probability(delta, "delta", low_inclusive=True)
    alpha = check_alpha(alpha)
    fit1, ev1 = split_halves(a.shape[0])
    fit0, ev0 = split_halves(b.shape[0])
    k = a.shape[1]
    eps_lb, eps_fam, eps_ch, ulira = (np.zeros(k) for _ in range(4))
    pooled1, pooled0 = [], []
    for z in range(k):
        t, sign = _best_threshold(a[fit1, z], b[fit0, z], delta)
        m, n = sign * a[ev1, z], sign * b[ev0, z]
        eps_lb[z] = empirical_epsilon_lower_bound(m, n, threshold=t, delta=delta, alpha=alpha).epsilon_lower_bound
        eps_fam[z] = empirical_epsilon_lower_bound(m, n, threshold=t, delta=delta,
                                                   alpha=alpha / k).epsilon_lower_bound
        eps_ch[z] = _challenge_epsilon(a[:, z], b[:, z], delta)
        # U-LiRA: Gaussians per group on the fit half (sd floored at a small fraction of the pooled sd).
        f1, f0 = a[fit1, z], b[fit0, z]
        floor = 1e-3 * max(float(np.std(np.concatenate([f1, f0]))), 1e-12)
        s1, s0 = max(float(f1.std(ddof=1)), floor), max(float(f0.std(ddof=1)), floor)
        lr1 = _gauss_logpdf(a[ev1, z], f1.mean(), s1) - _gauss_logpdf(a[ev1, z], f0.mean(), s0)
        lr0 = _gauss_logpdf(b[ev0, z], f1.mean(), s1) - _gauss_logpdf(b[ev0, z], f0.mean(), s0)
        ulira[z] = per_record_auc(lr1[:, None], lr0[:, None])[0]
        pooled1.append(lr1)
        pooled0.append(lr0)
    pooled = per_record_auc(np.concatenate(pooled1)[:, None], np.concatenate(pooled0)[:, None])[0]
    auc = per_record_auc(a, b)
    return PerExampleEvidence(
        n_group1=a.shape[0], n_group0=b.shape[0], n_records=k, delta=delta, alpha=alpha, auc=auc,
        advantage=float(np.mean(np.abs(2 * auc - 1))), epsilon_lower_bound=eps_lb, epsilon_lower_bound_family=eps_fam,
        epsilon_challenge=eps_ch, ulira_auc=ulira, ulira_pooled_auc=float(pooled),
        forgetting_score=forgetting_score(eps_ch))


@dataclass(frozen=True)
class NullComparison(_Result):
    """Advantage of a method against the reference models, minus the advantage of the retrain-vs-retrain null
    against the same reference models, with its bootstrap distribution over models.

    Like a statsmodels result it keeps the estimate and computes intervals on demand: ``conf_int(alpha)``.
    ``decision(margin, alpha)`` is the two one-sided tests' outcome at the (1 − 2α) interval:
    ``equivalent`` (inside ±margin), ``different`` (entirely outside ±margin), or ``inconclusive``.
    """

    method_advantage: float
    null_advantage: float
    difference: float
    bootstrap: np.ndarray          # replicates of the difference
    n_method: int
    n_null: int
    n_reference: int
    n_records: int
    degenerate: str | None = None  # why the evidence cannot decide (e.g. identical scores, zero spread)

    @property
    def standard_error(self) -> float:
        return float(np.std(self.bootstrap, ddof=1))

    def conf_int(self, alpha: float = 0.05) -> tuple[float, float]:
        """Two-sided (1 − alpha) percentile interval of the difference."""
        alpha = check_alpha(alpha)
        lo, hi = np.quantile(self.bootstrap, [alpha / 2, 1 - alpha / 2])
        return float(lo), float(hi)

    def decision(self, margin: float, alpha: float) -> str:
        if self.degenerate:
            return "inconclusive"
        lo, hi = self.conf_int(2 * alpha)
        if -margin < lo and hi < margin:
            return "equivalent"
        if lo > margin or hi < -margin:
            return "different"
        return "inconclusive"

    def to_dict(self, margin: float | None = None, alpha: float = 0.05) -> dict:
        lo, hi = self.conf_int(2 * alpha)
        out = {"method_advantage": self.method_advantage, "null_advantage": self.null_advantage,
               "difference": self.difference, "standard_error": self.standard_error,
               "ci_level": 1 - 2 * alpha, "ci_low": lo, "ci_high": hi, "n_bootstrap": int(self.bootstrap.size),
               "n_method_models": self.n_method, "n_null_models": self.n_null,
               "n_reference_models": self.n_reference, "n_records": self.n_records, "degenerate": self.degenerate}
        if margin is not None:
            out.update(margin=margin, decision=self.decision(margin, alpha))
        return to_plain(out)


def _degenerate(name: str, s: np.ndarray) -> str | None:
    if np.all(np.ptp(s, axis=0) == 0):
        return f"every record's signal is identical across the {name} models (zero spread): nothing to compare"
    return None


def compare_to_null(method, null, reference, *, n_bootstrap: int = 2000, seed: int = 0) -> NullComparison:
    """Advantage(method vs reference) − advantage(null vs reference), bootstrapped over models.

    ``method``: signals of the method's unlearned models (label 1); ``null``: signals of retrained models from
    training seeds independent of ``reference`` (the null group: exact unlearning); ``reference``: signals of the
    reference retrained models (label 0). All (models, records) over the same records.
    """
    m, r = _check_pair(method, reference)
    nl, _ = _check_pair(null, reference)
    if n_bootstrap < 100:
        raise ValueError(f"n_bootstrap must be at least 100 (got {n_bootstrap})")
    degenerate = None
    for name, s in (("method", m), ("null", nl), ("reference", r)):
        degenerate = degenerate or _degenerate(name, s)
    for name, s, other, other_name in (("method", m, r, "reference"), ("null", nl, r, "reference"),
                                       ("method", m, nl, "null")):
        if s.shape == other.shape and np.array_equal(s, other):
            degenerate = degenerate or (f"the {name} models' signals equal the {other_name} models' (the same "
                                        "models twice): nothing to compare")
    rng = np.random.default_rng(seed)
    boot = np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        im = rng.integers(0, m.shape[0], m.shape[0])
        inl = rng.integers(0, nl.shape[0], nl.shape[0])
        ir = rng.integers(0, r.shape[0], r.shape[0])
        boot[i] = mean_advantage(m[im], r[ir]) - mean_advantage(nl[inl], r[ir])
    ma, na = mean_advantage(m, r), mean_advantage(nl, r)
    if degenerate is None and np.std(boot) == 0:
        degenerate = "the bootstrap distribution has zero spread (standard error 0)"
    return NullComparison(method_advantage=ma, null_advantage=na, difference=ma - na, bootstrap=boot,
                          n_method=m.shape[0], n_null=nl.shape[0], n_reference=r.shape[0], n_records=m.shape[1],
                          degenerate=degenerate)


def _single_advantages(models: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per model (row): |mean over records of (2·AUC_z − 1)|, AUC_z = P(the model's signal > a reference model's),
    i.e. the model's signed per-record advantage averaged before the absolute value: one model gives one draw per
    record, so a trace shows as a shift of every record the same way (more member-like: positive; over-unlearning:
    negative), which the signed mean accumulates and the mean of |2·AUC_z − 1| would drown in per-record noise."""
    return np.array([abs(float(np.mean(2.0 * per_record_auc(row[None, :], reference) - 1.0))) for row in models])


@dataclass(frozen=True)
class SingleModelTest(_Result):
    """One model (weights unlearned elsewhere: a single draw) against the reference models, ranked among the
    retrain-vs-retrain null models, each scored the same way (the absolute mean signed per-record advantage
    |mean_z (2·AUC_z − 1)| against the reference). Under exact unlearning the model is exchangeable with the null
    models, so ``p_value`` = (1 + #{null ≥ statistic}) / (N + 1) is a valid one-sided p-value for "more
    distinguishable from retraining than a retrain". Small p shows a trace; a large p does NOT show its absence
    (one draw cannot bound a method's advantage). ``control_power``: the fraction of do-nothing (original) models
    this test flags at ``alpha``."""

    statistic: float
    null: np.ndarray
    p_value: float
    alpha: float
    control_power: float | None
    n_reference: int
    n_records: int

    def decision(self) -> str:
        """``different`` (a trace: p < alpha) or ``not detected`` (which is not a pass)."""
        return "different" if self.p_value < self.alpha else "not detected"

    def to_dict(self) -> dict:
        return to_plain({"statistic": self.statistic, "null_mean": float(np.mean(self.null)),
                         "null_quantile_1_minus_alpha": float(np.quantile(self.null, 1 - self.alpha)),
                         "p_value": self.p_value, "alpha": self.alpha, "decision": self.decision(),
                         "control_power": self.control_power, "n_null_models": int(self.null.size),
                         "n_reference_models": self.n_reference, "n_records": self.n_records})


def single_model_test(model, null, reference, *, control=None, alpha: float = 0.05) -> SingleModelTest:
    """``model``: (records,) signals of the one model; ``null``: (N, records) of the retrain-vs-retrain null
    models; ``reference``: (M, records) of the reference retrains; ``control``: (K, records) of do-nothing models
    (their rejection rate at ``alpha`` is the test's power). Labels: the model under test plays group 1 (trained
    on z, then z deleted), the reference group 0."""
    alpha = check_alpha(alpha)
    ref = _as_signal(reference, "reference")
    nul = _as_signal(null, "null")
    x = np.asarray(model, dtype=np.float64).reshape(1, -1)
    if x.shape[1] != ref.shape[1] or nul.shape[1] != ref.shape[1]:
        raise ValueError("model, null and reference score different records")
    if not np.isfinite(x).all():
        raise ValueError("model signals contain NaN or infinite values")
    stat = float(_single_advantages(x, ref)[0])
    null_adv = _single_advantages(nul, ref)
    p = float((1 + np.sum(null_adv >= stat - 1e-12)) / (null_adv.size + 1))
    power = None
    if control is not None:
        ctrl = _single_advantages(_as_signal(control, "control"), ref)
        p_ctrl = (1 + np.sum(null_adv[None, :] >= ctrl[:, None] - 1e-12, axis=1)) / (null_adv.size + 1)
        power = float(np.mean(p_ctrl < alpha))
    return SingleModelTest(statistic=stat, null=null_adv, p_value=p, alpha=alpha, control_power=power,
                           n_reference=ref.shape[0], n_records=ref.shape[1])
