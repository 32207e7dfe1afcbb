"""Errors of the deletion package (all :class:`~unlearn_audit.hfocu.UnlearningError`, so the CLI maps them to exit
code 2 with their one-line message)."""

from __future__ import annotations

from unlearn_audit.hfocu.unlearner import UnlearningError

__all__ = ["DurableError", "TrainedRunError"]


class TrainedRunError(UnlearningError):
    """A trained run that is missing, malformed, or does not match its manifest (hash)."""


class DurableError(UnlearningError):
    """A deletion request the deletion service refuses, or a ledger that disagrees with the trained run."""
