"""Attack results: scores in, a small result object out (in the style of TF Privacy's MIA API).

Label convention: 1 = member (or deleted record), 0 = non-member. Scores are oriented so that a
higher score means "more likely member"; ``auc`` is the probability that a random member scores
higher than a random non-member (ties count one half), so 0.5 = no membership signal.

Intervals are deliberately not computed here: the audit's statistics layer adds them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from ._validation import float_array
from .errors import InvalidInputError

__all__ = ["AttackResult", "auc_from_scores"]


def auc_from_scores(member_scores: Any, nonmember_scores: Any) -> float:
    """AUC of separating members (label 1) from non-members (label 0); higher score = member.

    Equals the Mann-Whitney statistic P(s_member > s_nonmember) + 0.5 P(tie).
    """
    m = float_array("member_scores", member_scores, ndim=1)
    nm = float_array("nonmember_scores", nonmember_scores, ndim=1)
    labels = np.concatenate([np.ones(m.size), np.zeros(nm.size)])
    return float(roc_auc_score(labels, np.concatenate([m, nm])))


def _summary(a: np.ndarray | None) -> dict[str, Any] | None:
    if a is None:
        return None
    q = np.quantile(a, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(q[0]), "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "max": float(q[4]),
        "sha256": hashlib.sha256(np.ascontiguousarray(a, dtype="<f8").tobytes()).hexdigest(),
    }


def _json_safe(value: Any) -> Any:
    """Convert numpy scalars/arrays and nested containers to JSON-safe Python values.

    Arrays of more than 64 elements are summarised, not dumped. Non-finite floats become None.
    """
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fiub" and value.size > 64:
            return _summary(value.astype(np.float64).ravel())
        return _json_safe(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is None or isinstance(value, (str, int)):
        return value
    return str(value)


@dataclass(eq=False)
class AttackResult:
    """Result of one membership-inference attack on one target model.

    Label convention: 1 = member (or deleted record), 0 = non-member; higher score = more likely member.

    Attributes:
        attack: attack name, e.g. ``"loss"``, ``"lira-online"``, ``"mia-u"``.
        target: name of the attacked model, e.g. ``"original"``, ``"unlearned"``, ``"retrained"``.
        member_scores: float64 scores of the members (label 1).
        nonmember_scores: float64 scores of the non-members (label 0).
        calibration_nonmember_scores: optional scores of *other* non-members (not the evaluation ones), for
            fixing thresholds at a target FPR outside the evaluation data.
        extra: attack-specific JSON-able information (shadow accuracies, DegCount, ...).
        auc: computed at construction (Mann-Whitney / ``roc_auc_score``); 0.5 = chance.
        n_members, n_nonmembers: sample sizes.
    """

    attack: str
    target: str
    member_scores: np.ndarray
    nonmember_scores: np.ndarray
    calibration_nonmember_scores: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    auc: float = field(init=False)
    n_members: int = field(init=False)
    n_nonmembers: int = field(init=False)

    def __post_init__(self) -> None:
        self.member_scores = float_array("member_scores", self.member_scores, ndim=1)
        self.nonmember_scores = float_array("nonmember_scores", self.nonmember_scores, ndim=1)
        if self.calibration_nonmember_scores is not None:
            self.calibration_nonmember_scores = float_array(
                "calibration_nonmember_scores", self.calibration_nonmember_scores, ndim=1)
        if not isinstance(self.attack, str) or not isinstance(self.target, str):
            raise InvalidInputError("attack and target must be strings")
        self.n_members = int(self.member_scores.size)
        self.n_nonmembers = int(self.nonmember_scores.size)
        self.auc = auc_from_scores(self.member_scores, self.nonmember_scores)
        self.extra = dict(self.extra)

    @classmethod
    def from_labels(cls, attack: str, target: str, scores: Any, labels: Any, **kwargs: Any) -> "AttackResult":
        """Build a result from one score array and 0/1 labels (1 = member, 0 = non-member)."""
        from ._validation import membership_labels

        s = float_array("scores", scores, ndim=1)
        y = membership_labels("labels", labels, n=s.size)
        if not (y == 1).any() or not (y == 0).any():
            raise InvalidInputError("labels: need at least one member (1) and one non-member (0)")
        return cls(attack, target, s[y == 1], s[y == 0], **kwargs)

    def scores_and_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """All scores and their labels (members first): labels 1 = member, 0 = non-member."""
        scores = np.concatenate([self.member_scores, self.nonmember_scores])
        labels = np.concatenate([np.ones(self.n_members, np.int64), np.zeros(self.n_nonmembers, np.int64)])
        return scores, labels

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary. Scores are summarised (n, mean, quantiles, sha256), never dumped."""
        return {
            "attack": self.attack,
            "target": self.target,
            "label_convention": "1 = member (or deleted), 0 = non-member; higher score = more likely member",
            "auc": float(self.auc),
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "member_scores": _summary(self.member_scores),
            "nonmember_scores": _summary(self.nonmember_scores),
            "calibration_nonmember_scores": _summary(self.calibration_nonmember_scores),
            "extra": _json_safe(self.extra),
        }

    def __repr__(self) -> str:
        return (f"AttackResult(attack={self.attack!r}, target={self.target!r}, auc={self.auc:.4f}, "
                f"n_members={self.n_members}, n_nonmembers={self.n_nonmembers})")
