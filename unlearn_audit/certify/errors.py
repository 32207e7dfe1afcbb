"""Errors raised by the certification code."""

from __future__ import annotations


class CertificationError(ValueError):
    """An impossible or malformed certification request (bad ε, δ, sensitivity, constants).

    Subclasses ``ValueError`` so that input-validation layers can catch it generically; the message is one line and
    names the offending parameter.
    """
