"""Deletion requests: request ids, record ids, and request files (one record id per line, or JSON lines)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable

from unlearn_audit.common import check_record_ids as _check_ids
from unlearn_audit.common import record_id_problem
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


def read_request_file(path) -> list[str]:
    """Record ids of one deletion request, from a UTF-8 text file in one of two formats:

    * ``*.jsonl``: JSON lines, one JSON string per line (ids exactly as given, escaped as JSON); blank lines ignored;
    * anything else: one id per line, surrounding whitespace stripped, blank lines ignored.

    An id holding a line break, a control or an invisible format character, or surrounding whitespace is refused
    (record ids are one line of visible text, :func:`unlearn_audit.common.record_id_problem`), naming its line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DurableError(f"--requests {path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DurableError(f"--requests {path}: not UTF-8 text") from None
    jsonl = path.suffix.lower() == ".jsonl"
    ids = []
    for no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if jsonl:
            try:
                rid = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise DurableError(f"--requests {path} line {no}: not a JSON value "
                                   f"({getattr(exc, 'msg', 'nested too deeply')})") from None
            if not isinstance(rid, str) or not rid:
                raise DurableError(f"--requests {path} line {no}: expected a JSON string (one record id), got "
                                   f"{type(rid).__name__}")
        else:
            rid = line.strip()
        problem = record_id_problem(rid)
        if problem:
            raise DurableError(f"--requests {path} line {no}: record id {ascii(rid)[:60]} {problem}")
        ids.append(rid)
    if not ids:
        raise DurableError(f"--requests {path}: names no record ids")
    return ids
