"""Helpers every layer shares: atomic file writes, SHA-256 hashing, conversion to strict JSON, record-id checks.

Torch-free (numpy and the standard library only), so :mod:`unlearn_audit.stats` may use it too. The standalone
``attacks`` package keeps its own JSON summariser because it never imports ``unlearn_audit``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

import numpy as np

__all__ = ["array_sha256", "atomic_save_npy", "atomic_write", "atomic_write_text", "check_record_ids", "dumps_strict",
           "file_sha256", "fsync_path", "json_digest", "record_id_problem", "to_jsonable"]


# -- atomic writes ------------------------------------------------------------------------------------------------
def fsync_path(path: Union[str, os.PathLike]) -> None:
    """fsync a file or a folder (so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Union[str, os.PathLike], content: Union[bytes, Callable[[Any], None]], *,
                 sync: bool = True) -> Path:
    """Write ``content`` (bytes, or a callable ``content(binary_file)``) to a temporary file beside ``path`` and
    rename it into place: readers see the old file or the complete new one, never a part. ``sync``: fsync the file
    before the rename. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, (bytes, bytearray, memoryview)):
                f.write(content)
            else:
                content(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Union[str, os.PathLike], text: str, *, sync: bool = True) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, text.encode("utf-8"), sync=sync)


def atomic_save_npy(path: Union[str, os.PathLike], array: np.ndarray, *, sync: bool = True) -> Path:
    """:func:`atomic_write` of one array as ``.npy`` (never pickled)."""
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False), sync=sync)


# -- hashing ------------------------------------------------------------------------------------------------------
def file_sha256(path: Union[str, os.PathLike], block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def array_sha256(array: np.ndarray, dtype: Union[str, np.dtype, None] = None) -> str:
    """SHA-256 of an array's raw C-order bytes (cast to ``dtype`` first when given, e.g. ``"<f8"``)."""
    a = np.ascontiguousarray(array) if dtype is None else np.ascontiguousarray(array, dtype=dtype)
    return hashlib.sha256(a.tobytes()).hexdigest()


def json_digest(obj: Any) -> str:
    """SHA-256 of ``obj`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# -- JSON ---------------------------------------------------------------------------------------------------------
def to_jsonable(value: Any) -> Any:
    """Plain JSON values from numpy scalars/arrays, tuples, dataclasses (``to_dict()`` when they have one) and nested
    containers. Non-finite floats become ``None`` (strict JSON has no NaN/inf). Raises TypeError for anything else
    (a Path, a tensor: convert those explicitly)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return to_jsonable(value.to_dict())
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    raise TypeError(f"cannot convert {type(value).__name__} to a plain JSON value")


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN/inf (``allow_nan=False``)."""
    return json.dumps(obj, allow_nan=False, **kwargs)


# -- record ids ---------------------------------------------------------------------------------------------------
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}   # controls, invisible format characters (bidi overrides), surrogates


def record_id_problem(rid: str) -> str | None:
    """Why ``rid`` cannot be a record id (None if it can): a record id is one line of visible text, because
    deletion requests, reports and the ledger carry it as such. Line breaks, surrounding whitespace, control
    characters and invisible format characters (bidi overrides, zero-width) are refused."""
    if any(c in _LINE_BREAKS for c in rid):
        return "contains a line break"
    if rid != rid.strip():
        return "has surrounding whitespace"
    if _ASCII_CONTROL.search(rid) or (not rid.isascii()
                                      and any(unicodedata.category(c) in _BAD_CATEGORIES for c in rid)):
        c = next(c for c in rid if c < " " or c == "\x7f" or unicodedata.category(c) in _BAD_CATEGORIES)
        return f"contains a control character (U+{ord(c):04X})"
    return None


def check_record_ids(record_ids: Iterable[str], error: type[Exception] = ValueError) -> tuple[str, ...]:
    """The record ids of one deletion request, checked: a non-empty list (not one string) of non-empty strings
    without surrounding whitespace, none twice. Raises ``error`` with a one-line message naming the bad id."""
    if isinstance(record_ids, (str, bytes)) or not isinstance(record_ids, Iterable):
        raise error(f"record_ids must be a list of record id strings, got {type(record_ids).__name__}")
    ids = tuple(record_ids)
    if not ids:
        raise error("empty deletion request: record_ids must not be empty")
    seen: set[str] = set()
    for rid in ids:
        if not isinstance(rid, str) or not rid or rid != rid.strip():
            raise error(f"record id {rid!r} is not a non-empty string without surrounding whitespace")
        problem = record_id_problem(rid)
        if problem:
            raise error(f"record id {ascii(rid)[:60]} {problem}")
        if rid in seen:
            raise error(f"record id {rid!r} appears twice in the request")
        seen.add(rid)
    return tuple(str(r) for r in ids)
