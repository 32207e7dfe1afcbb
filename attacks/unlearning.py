"""MIA-U, the membership attack against machine unlearning (Chen et al., "When Machine Unlearning
Jeopardizes Privacy", CCS 2021), its original-posterior-only baseline, DegCount/DegRate, and the shadow
protocol that produces honest training data for both.

Label convention: 1 = deleted record (a member of the original model that was unlearned), 0 = non-member
(a record neither model trained on). Scores are the attack classifier's probability of label 1, so a
higher score = more likely deleted/member.

The attacker observes a record's posteriors under the original model (p_o) and the unlearned model (p_u).
A scikit-learn classifier is trained on features of (p_o, p_u) from *shadow* models -- positives = records
deleted from a shadow, negatives = records that shadow never saw -- and is then scored on the *target*
pair only. Scoring the records the classifier was fitted on is refused (:class:`InSampleScoringError`):
an in-sample AUC is meaningless (PAPERS.md: the pitfall of public MIA-U code).

DegCount and DegRate (Chen et al., Section 5) compare MIA-U with the classical attack that only sees
p_o (:class:`OriginalOnlyAttack`, same shadows, same classifier) on the same n target records. With s_i
the MIA-U probability of label 1 and t_i the classical attack's, for records labelled y_i:

    DegCount = ( #{y_i = 1 and s_i > t_i} + #{y_i = 0 and s_i < t_i} ) / n
    DegRate  = ( sum_{y_i = 1} (s_i - t_i) + sum_{y_i = 0} (t_i - s_i) ) / n

DegCount is the fraction of records whose true status MIA-U predicts with strictly higher confidence
(ties count for neither); DegRate the mean confidence gain in the direction of the truth (negative when
MIA-U is less confident than the classical attack). Values above 0.5 / 0 mean unlearning *leaked* more
than the original model alone.
"""

from __future__ import annotations

import abc
import hashlib
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ._validation import membership_labels, to_numpy
from .errors import InSampleScoringError, InvalidInputError, NotFittedError
from .features import FEATURES, build_features, check_pair, original_features
from .results import AttackResult, auc_from_scores

__all__ = ["UnlearningAttack", "OriginalOnlyAttack", "ShadowPair", "ShadowProtocol", "degradation_metrics",
           "CLASSIFIERS"]

CLASSIFIERS = ("logistic", "random_forest", "mlp")


class ShadowPair(NamedTuple):
    """Training data from one shadow: posteriors of its query records under the shadow's original and
    unlearned model, membership labels (1 = deleted from this shadow, 0 = never seen by it) and
    optional record ids (used for the in-sample check instead of row fingerprints)."""

    p_original: np.ndarray
    p_unlearned: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None


def _make_classifier(classifier: str | BaseEstimator, random_state: int | None) -> Pipeline:
    if isinstance(classifier, BaseEstimator):
        est = clone(classifier)
    elif classifier == "logistic":
        est = LogisticRegression(max_iter=2000, random_state=random_state)
    elif classifier == "random_forest":
        est = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=random_state, n_jobs=1)
    elif classifier == "mlp":
        est = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, early_stopping=True, random_state=random_state)
    else:
        raise InvalidInputError(f"classifier: expected one of {CLASSIFIERS} or a scikit-learn estimator, "
                                f"got {classifier!r}")
    return Pipeline([("scale", StandardScaler()), ("clf", est)])


def _row_fingerprints(*mats: np.ndarray) -> list[str]:
    rows = np.ascontiguousarray(np.concatenate([np.asarray(m, "<f8") for m in mats], axis=1))
    return [hashlib.sha256(r.tobytes()).hexdigest() for r in rows]


def _id_fingerprints(ids: Any, n: int, name: str = "ids") -> list[str]:
    arr = to_numpy(ids).ravel()
    if arr.shape[0] != n:
        raise InvalidInputError(f"{name}: expected {n} record ids, got {arr.shape[0]}")
    return [hashlib.sha256(f"id:{v!s}".encode()).hexdigest() for v in arr.tolist()]


def _as_pair(item: Any, i: int) -> ShadowPair:
    if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
        raise InvalidInputError(f"shadow_pairs[{i}]: expected (p_original, p_unlearned, labels[, ids])")
    po, pu = check_pair(item[0], item[1])
    y = membership_labels(f"shadow_pairs[{i}].labels", item[2], n=po.shape[0])
    ids = item[3] if len(item) == 4 else None
    if ids is not None:
        ids = to_numpy(ids).ravel()
        if ids.shape[0] != po.shape[0]:
            raise InvalidInputError(f"shadow_pairs[{i}].ids: expected {po.shape[0]} ids, got {ids.shape[0]}")
    return ShadowPair(po, pu, y, ids)


def degradation_metrics(unlearning_scores: Any, original_scores: Any, labels: Any) -> tuple[float, float]:
    """(DegCount, DegRate) of Chen et al.; see the module docstring. Scores are P(label 1) of each attack;
    labels 1 = deleted/member, 0 = non-member."""
    s = np.asarray(unlearning_scores, np.float64)
    t = np.asarray(original_scores, np.float64)
    y = membership_labels("labels", labels, n=s.size)
    if t.shape != s.shape:
        raise InvalidInputError("original_scores: shape differs from unlearning_scores")
    pos, neg = y == 1, y == 0
    degcount = (np.sum(s[pos] > t[pos]) + np.sum(s[neg] < t[neg])) / s.size
    degrate = (np.sum(s[pos] - t[pos]) + np.sum(t[neg] - s[neg])) / s.size
    return float(degcount), float(degrate)


class _ShadowTrainedAttack(abc.ABC):
    """Shared machinery: sklearn pipeline, fingerprints of the training records, the in-sample refusal."""

    name = "base"

    def __init__(self, classifier: str | BaseEstimator = "logistic", random_state: int | None = 0):
        _make_classifier(classifier, random_state)  # validate early
        self.classifier = classifier
        self.random_state = random_state
        self.pipeline_: Pipeline | None = None
        self._row_fp: set[str] = set()
        self._id_fp: set[str] = set()
        self._fitted_with_ids = False
        self.n_train_: int = 0
        self.n_shadow_pairs_: int = 0

    # subclasses: features of one pair / of the scored inputs, and the raw rows to fingerprint
    @abc.abstractmethod
    def _pair_features(self, pair: ShadowPair) -> tuple[np.ndarray, list[np.ndarray]]:
        """Features of one shadow pair, and the raw rows to fingerprint."""

    def fit(self, shadow_pairs: Sequence[Any]) -> "_ShadowTrainedAttack":
        """Fit on shadow data: a list of ``(p_original, p_unlearned, labels[, ids])``, labels 1 = deleted
        from that shadow, 0 = never seen by it. Both labels must occur."""
        if not isinstance(shadow_pairs, (list, tuple)) or len(shadow_pairs) == 0:
            raise InvalidInputError("shadow_pairs: expected a non-empty list of (p_original, p_unlearned, labels)")
        pairs = [_as_pair(p, i) for i, p in enumerate(shadow_pairs)]
        feats, labels, row_fp, id_fp = [], [], set(), set()
        with_ids = all(p.ids is not None for p in pairs)
        for p in pairs:
            f, raw = self._pair_features(p)
            feats.append(f)
            labels.append(p.labels)
            row_fp.update(_row_fingerprints(*raw))
            if with_ids:
                id_fp.update(_id_fingerprints(p.ids, p.labels.size))
        X, y = np.concatenate(feats), np.concatenate(labels)
        if not (y == 1).any() or not (y == 0).any():
            raise InvalidInputError("shadow_pairs: labels need both deleted (1) and never-seen (0) records")
        pipe = _make_classifier(self.classifier, self.random_state)
        pipe.fit(X, y)
        self.pipeline_ = pipe
        self._row_fp, self._id_fp, self._fitted_with_ids = row_fp, id_fp, with_ids
        self.n_train_, self.n_shadow_pairs_ = int(y.size), len(pairs)
        return self

    def _fitted_pipeline(self) -> Pipeline:
        if self.pipeline_ is None:
            raise NotFittedError(f"{type(self).__name__}: call fit(shadow_pairs) before scoring")
        return self.pipeline_

    def _check_not_in_sample(self, raw: list[np.ndarray], ids: Any) -> None:
        self._fitted_pipeline()
        n = raw[0].shape[0]
        if ids is not None and self._fitted_with_ids:
            hits = [i for i, h in enumerate(_id_fingerprints(ids, n)) if h in self._id_fp]
            what = "record ids"
        else:
            hits = [i for i, h in enumerate(_row_fingerprints(*raw)) if h in self._row_fp]
            what = "posterior rows"
        if hits:
            raise InSampleScoringError(
                f"{type(self).__name__}: {len(hits)} of the {n} records to score (first at position {hits[0]}) "
                f"match {what} the attack was fitted on; an attack scored on its own training data reports a "
                f"meaningless AUC. Score only target records disjoint from the shadow data"
                + ("" if ids is not None else " (if these are distinct records with identical posteriors, "
                   "fit and score with record ids)"))

    def _predict(self, X: np.ndarray) -> np.ndarray:
        pipeline = self._fitted_pipeline()
        proba = pipeline.predict_proba(X)
        classes = list(pipeline.classes_)
        return np.asarray(proba[:, classes.index(1)], dtype=np.float64)


class OriginalOnlyAttack(_ShadowTrainedAttack):
    """Classical membership inference on the original model's posteriors only (the DegCount baseline).

    Label 1 = deleted/member, 0 = non-member; score = P(label 1), higher = more likely member.
    Features: ``feature="sorted"`` (sort(p_o) descending, default) or ``"direct"``; trained on the p_o
    part of the same shadow pairs as :class:`UnlearningAttack`.
    """

    name = "original-only"

    def __init__(self, classifier: str | BaseEstimator = "logistic", feature: str = "sorted",
                 random_state: int | None = 0):
        super().__init__(classifier, random_state)
        original_features(np.full((1, 2), 0.5), feature)  # validate
        self.feature = feature

    def _pair_features(self, pair: ShadowPair) -> tuple[np.ndarray, list[np.ndarray]]:
        return original_features(pair.p_original, self.feature), [pair.p_original]

    def score(self, p_original: Any, ids: Any = None) -> np.ndarray:
        """P(label 1) for each target record from its original posteriors; refuses in-sample records."""
        po, _ = check_pair(p_original, p_original)
        self._check_not_in_sample([po], ids)
        return self._predict(original_features(po, self.feature))

    def run(self, p_original: Any, target_labels: Any, target: str = "original", ids: Any = None,
            fit_check: Any = None) -> AttackResult:
        """Score the target records and report (labels 1 = member/deleted, 0 = non-member)."""
        summary = fit_check.check() if fit_check is not None else None
        scores = self.score(p_original, ids)
        extra = {"feature": self.feature, "classifier": str(self.classifier), "n_train": self.n_train_,
                 "n_shadow_pairs": self.n_shadow_pairs_,
                 "shadow_fit": summary if summary is not None else "not checked"}
        return AttackResult.from_labels(self.name, target, scores, target_labels, extra=extra)


class UnlearningAttack(_ShadowTrainedAttack):
    """MIA-U (Chen et al. 2021) on a pair (original, unlearned) of posteriors.

    Label 1 = deleted record, 0 = non-member; score = P(label 1), higher = more likely deleted/member.

    Args:
        classifier: ``"logistic"`` (default), ``"random_forest"``, ``"mlp"`` or any scikit-learn
            classifier (cloned); features are standardised in a Pipeline first.
        feature: one of ``direct_diff`` (default), ``sorted_diff``, ``direct_concat``, ``sorted_concat``, ``l2``.
        original_feature: features of the :class:`OriginalOnlyAttack` baseline fitted alongside.
        random_state: seed of the classifier.
    """

    name = "mia-u"

    def __init__(self, classifier: str | BaseEstimator = "logistic", feature: str = "direct_diff",
                 original_feature: str = "sorted", random_state: int | None = 0):
        super().__init__(classifier, random_state)
        if feature not in FEATURES:
            raise InvalidInputError(f"feature: expected one of {sorted(FEATURES)}, got {feature!r}")
        self.feature = feature
        self.original_only_ = OriginalOnlyAttack(classifier, original_feature, random_state)

    def _pair_features(self, pair: ShadowPair) -> tuple[np.ndarray, list[np.ndarray]]:
        return build_features(self.feature, pair.p_original, pair.p_unlearned), [pair.p_original, pair.p_unlearned]

    def fit(self, shadow_pairs: Sequence[Any]) -> "UnlearningAttack":
        """Fit MIA-U and the original-only baseline on the same shadow pairs (see the class docstring)."""
        super().fit(shadow_pairs)
        self.original_only_.fit(shadow_pairs)
        return self

    def score(self, p_original: Any, p_unlearned: Any, ids: Any = None) -> np.ndarray:
        """P(label 1 = deleted) for each TARGET record; refuses records the attack was fitted on."""
        po, pu = check_pair(p_original, p_unlearned)
        self._check_not_in_sample([po, pu], ids)
        return self._predict(build_features(self.feature, po, pu))

    def run(self, p_original: Any, p_unlearned: Any, target_labels: Any, target: str = "unlearned",
            ids: Any = None, fit_check: Any = None) -> AttackResult:
        """Attack the target pair and report, with DegCount/DegRate against the original-only attack.

        ``target_labels``: 1 = deleted from the target, 0 = never trained on. ``fit_check``: an
        :class:`attacks.shadows.FitCheck` the shadows must pass (else ShadowFitError, nothing reported).
        """
        summary = fit_check.check() if fit_check is not None else None
        scores = self.score(p_original, p_unlearned, ids)
        y = membership_labels("target_labels", target_labels, n=scores.size)
        base = self.original_only_.score(p_original, ids)
        degcount, degrate = degradation_metrics(scores, base, y)
        res = AttackResult.from_labels(self.name, target, scores, y, extra={
            "feature": self.feature, "classifier": str(self.classifier),
            "n_train": self.n_train_, "n_shadow_pairs": self.n_shadow_pairs_,
            "degcount": degcount, "degrate": degrate,
            "original_only_auc": auc_from_scores(base[y == 1], base[y == 0]),
            "original_only_feature": self.original_only_.feature,
            "shadow_fit": summary if summary is not None else "not checked",
        })
        return res


ShadowFactory = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[Any, Any]]


class ShadowProtocol:
    """Chen et al.'s shadow protocol over a data pool of ``pool_size`` records (positions 0..n-1).

    The pool is split once (seeded) into a *shadow part* and a *target part* that are disjoint. For each
    of ``n_shadows`` shadows: a training subset (``train_fraction`` of the shadow part) is drawn, then
    ``deletions_per_shadow`` deleted records among it, and as many never-seen records from the rest of
    the shadow part. ``shadow_factory(train_positions, delete_positions, query_positions)`` -- supplied by
    whoever owns the model and the unlearner -- must train an original model on ``train_positions``,
    unlearn ``delete_positions`` (all at once) with the same unlearner as the target, and return the
    posteriors ``(p_original, p_unlearned)`` of the ``query_positions`` records, each (len(query), C).
    Query order: the deleted records (label 1) then the never-seen ones (label 0).

    The caller's target model must be trained on target-part records only (:meth:`target_pair` runs the
    same protocol there with the same factory). Record ids are pool positions, so the in-sample check
    of the attacks sees that shadow and target records are disjoint.

    ``shadow_positions`` (optional) fixes the shadow part instead of the seeded random split, for a target
    model that already exists: pass the pool positions the attacker may use for shadows (none of the
    target's query records); the target part is then every other position.
    """

    def __init__(self, shadow_factory: ShadowFactory, pool_size: int, n_shadows: int, deletions_per_shadow: int,
                 seed: int = 0, shadow_fraction: float = 0.5, train_fraction: float = 0.5,
                 shadow_positions: Any = None):
        if not callable(shadow_factory):
            raise InvalidInputError("shadow_factory: expected a callable")
        if pool_size < 4 or n_shadows < 1 or deletions_per_shadow < 1:
            raise InvalidInputError("pool_size >= 4, n_shadows >= 1 and deletions_per_shadow >= 1 required")
        if not (0 < shadow_fraction < 1 and 0 < train_fraction < 1):
            raise InvalidInputError("shadow_fraction and train_fraction must lie in (0, 1)")
        self.shadow_factory = shadow_factory
        self.pool_size, self.n_shadows = int(pool_size), int(n_shadows)
        self.deletions_per_shadow, self.seed = int(deletions_per_shadow), int(seed)
        self.shadow_fraction, self.train_fraction = float(shadow_fraction), float(train_fraction)
        if shadow_positions is None:
            perm = np.random.default_rng([self.seed, 0x5AD]).permutation(self.pool_size)
            cut = int(round(self.shadow_fraction * self.pool_size))
            self.shadow_positions = np.sort(perm[:cut])
            self.target_positions = np.sort(perm[cut:])
        else:
            sp = to_numpy(shadow_positions).ravel()
            if sp.size and not np.issubdtype(sp.dtype, np.integer):
                raise InvalidInputError("shadow_positions: expected integer pool positions")
            sp = np.unique(sp.astype(np.int64))
            if sp.size < 2 or sp[0] < 0 or sp[-1] >= self.pool_size:
                raise InvalidInputError(f"shadow_positions: expected at least 2 distinct positions in "
                                        f"[0, {self.pool_size}), got {sp.size}" +
                                        (f" from {sp[0]} to {sp[-1]}" if sp.size else ""))
            self.shadow_positions = sp
            self.target_positions = np.setdiff1d(np.arange(self.pool_size), sp)
            self.shadow_fraction = sp.size / self.pool_size
            cut = sp.size
        n_train = int(round(self.train_fraction * cut))
        if self.deletions_per_shadow > min(n_train, cut - n_train):
            raise InvalidInputError(
                f"deletions_per_shadow={deletions_per_shadow} exceeds the {min(n_train, cut - n_train)} records "
                f"available (shadow part {cut}, training subset {n_train})")

    def _one(self, part: np.ndarray, n_deleted: int, train_fraction: float, rng: np.random.Generator,
             where: str) -> ShadowPair:
        n_train = int(round(train_fraction * part.size))
        if not (1 <= n_deleted <= min(n_train, part.size - n_train)):
            raise InvalidInputError(f"{where}: cannot draw {n_deleted} deleted and never-seen records "
                                    f"from {part.size} records with {n_train} for training")
        train = np.sort(rng.choice(part, size=n_train, replace=False))
        deleted = rng.choice(train, size=n_deleted, replace=False)
        unseen = rng.choice(np.setdiff1d(part, train), size=n_deleted, replace=False)
        query = np.concatenate([deleted, unseen])
        out = self.shadow_factory(train.copy(), deleted.copy(), query.copy())
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise InvalidInputError(f"{where}: shadow_factory must return (p_original, p_unlearned)")
        po, pu = check_pair(out[0], out[1])
        if po.shape[0] != query.size:
            raise InvalidInputError(f"{where}: shadow_factory returned {po.shape[0]} rows for {query.size} queries")
        labels = np.concatenate([np.ones(n_deleted, np.int64), np.zeros(n_deleted, np.int64)])
        return ShadowPair(po, pu, labels, query)

    def shadow_pairs(self) -> list[ShadowPair]:
        """Train/unlearn/query every shadow (via the factory) on the shadow part; the data for ``fit``."""
        return [self._one(self.shadow_positions, self.deletions_per_shadow, self.train_fraction,
                          np.random.default_rng([self.seed, s, 0x5EED]), f"shadow {s}")
                for s in range(self.n_shadows)]

    def target_pair(self, n_deleted: int | None = None, train_fraction: float | None = None,
                    index: int = 0) -> ShadowPair:
        """The same protocol once on the TARGET part (target model number ``index`` from the same factory):
        the pair to ``run`` the attacks on, labels 1 = deleted, 0 = never seen, ids = pool positions.

        Keep ``n_deleted`` equal to ``deletions_per_shadow`` (the default): the attack learns what a
        deletion of that many records looks like. For more target records, pool several ``index`` values.
        """
        return self._one(self.target_positions, int(n_deleted or self.deletions_per_shadow),
                         float(train_fraction or self.train_fraction),
                         np.random.default_rng([self.seed, 0x7A6, int(index)]), f"target {index}")

    def run(self) -> tuple[list[ShadowPair], np.ndarray]:
        """(shadow pairs for ``fit``, target-part positions for the caller's target model)."""
        return self.shadow_pairs(), self.target_positions.copy()
