"""Exceptions raised by the :mod:`attacks` package.

Label convention used throughout the package: 1 = member (or deleted record), 0 = non-member;
a higher attack score means "more likely member".
"""

from __future__ import annotations

__all__ = [
    "AttackError",
    "InvalidInputError",
    "InSampleScoringError",
    "ShadowFitError",
    "NotFittedError",
]


class AttackError(Exception):
    """Base class of every error raised on purpose by :mod:`attacks`."""


class InvalidInputError(AttackError, ValueError):
    """An argument has the wrong shape, dtype or contains NaN/inf. The message names the argument.

    Subclasses :class:`ValueError`, so ``except ValueError`` catches it.
    """


class InSampleScoringError(AttackError):
    """An attack was asked to score records it was fitted on.

    An attack classifier evaluated on its own training data reports an optimistic, meaningless AUC
    (the pitfall of several public MIA-U implementations), so the attacks refuse instead.
    """


class ShadowFitError(AttackError):
    """Shadow (reference) models did not fit well enough to stand in for the target model.

    An attack calibrated on underfit shadows under-reports the risk; it refuses to report.
    """


class NotFittedError(AttackError):
    """A shadow-trained attack was used before :meth:`fit`."""
