"""Provenance of a run: package versions, git revision, platform."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from unlearn_audit.pseudonyms import pseudonym

_PACKAGES = ("unlearn-audit", "torch", "numpy", "scipy", "statsmodels", "scikit-learn", "pydantic", "matplotlib",
             "jinja2", "weasyprint", "opacus")


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "git_revision": git_revision()}


def hash_record_id(record_id: str, key: bytes) -> str:
    """The record's pseudonym in reports and results.json: HMAC-SHA256 under the run's key (kept in the run folder's
    ``record_id.key``, never in a report), 16 hex digits (:mod:`unlearn_audit.pseudonyms`)."""
    return pseudonym(record_id, key)
