"""Deletion requests: request ids, record ids, and request files (one record id per line)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

from unlearn_audit.common import check_record_ids as _check_ids
from unlearn_audit.deletion.errors import DurableError

__all__ = ["check_record_ids", "check_request_id", "default_request_id", "read_request_file"]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_request_id(request_id) -> str:
    """A request id: 1-128 letters, digits, '.', '_', '-', starting with a letter or digit (safe as a file name)."""
    if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
        raise DurableError(f"request id {request_id!r} must be 1-128 characters of letters, digits, '.', '_', '-' "
                           "(starting with a letter or digit)")
    return request_id


def check_record_ids(record_ids: Iterable[str]) -> tuple[str, ...]:
    """:func:`unlearn_audit.common.check_record_ids` raising DurableError."""
    return _check_ids(record_ids, DurableError)


def default_request_id(record_ids) -> str:
    """A request id derived from the record ids (order-independent): the SHA-256 of the sorted ids, one a line."""
    return hashlib.sha256(("\n".join(sorted(map(str, record_ids))) + "\n").encode()).hexdigest()


def read_request_file(path) -> tuple[list[str], str]:
    """Record ids from a file with one id per line (blank lines ignored) and the file's SHA-256."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DurableError(f"--requests {path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DurableError(f"--requests {path}: not UTF-8 text") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise DurableError(f"--requests {path}: names no record ids")
    return ids, hashlib.sha256(data).hexdigest()
