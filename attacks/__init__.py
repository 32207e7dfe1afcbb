"""Membership-inference attacks, usable on their own (no dependency on ``unlearn_audit``).

Label convention: 1 = member (or deleted record), 0 = non-member. Higher score = more likely member.

Scores in, results out: every attack takes per-record signals (losses, confidences, posteriors) that
the caller computed on its own models and returns an :class:`AttackResult` (AUC, scores, extras).

* :class:`LossAttack`        MIA-L, Yeom et al. 2018: score = -loss.
* :class:`LiRA`              likelihood-ratio attack, Carlini et al. 2022 (online / offline / fixed variance).
* :class:`UnlearningAttack`  MIA-U, Chen et al. 2021, on (original, unlearned) posteriors, with DegCount/DegRate
  against :class:`OriginalOnlyAttack`; :class:`ShadowProtocol` builds its shadow data.
* :mod:`attacks.shadows`     many small shadow models trained at once, disk cache, fit check.
* :mod:`attacks.signals`, :mod:`attacks.features`, :mod:`attacks.errors`.
"""

from . import errors, features, signals
from .errors import AttackError, InSampleScoringError, InvalidInputError, NotFittedError, ShadowFitError
from .lira import LiRA, draw_keep_masks, load_keep_masks
from .loss import LossAttack
from .results import AttackResult, auc_from_scores
from .unlearning import OriginalOnlyAttack, ShadowPair, ShadowProtocol, UnlearningAttack, degradation_metrics

__all__ = [
    "AttackResult", "auc_from_scores",
    "LossAttack", "LiRA", "draw_keep_masks", "load_keep_masks",
    "UnlearningAttack", "OriginalOnlyAttack", "ShadowPair", "ShadowProtocol", "degradation_metrics",
    "signals", "features", "errors",
    "AttackError", "InvalidInputError", "InSampleScoringError", "ShadowFitError", "NotFittedError",
]


def __getattr__(name: str):  # lazy: `attacks.shadows` / `attacks.lira` etc. without importing torch up front
    import importlib

    if name in ("shadows", "lira", "loss", "results", "unlearning"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'attacks' has no attribute {name!r}")
