"""Provenance of a run: package versions, git revision, platform."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

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
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "git_revision": git_revision()}


def hash_record_id(record_id: str) -> str:
    """SHA-256 of a record id (the report never shows raw ids or data), truncated to 16 hex digits."""
    return hashlib.sha256(record_id.encode("utf-8")).hexdigest()[:16]
