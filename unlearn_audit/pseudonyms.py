"""Keyed pseudonyms of record ids: what leaves a run folder names records only through HMAC-SHA256 under a random
key that stays in the run folder.

Why a keyed hash, not a salted one: both stop a reader of a report from confirming a guessed id by hashing it
(plain SHA-256 of ``digits:17`` is reversed by enumerating ``digits:0..n``). A random per-run salt printed beside the
hashes would not: the salt must travel with the hashes for them to be checked, so it enables the same enumeration.
With HMAC the key never leaves the run folder: a report, results.json or a release file name tells nothing about
which record was deleted, while whoever holds the run folder (the data controller, an auditor given access) can
confirm an id with :func:`pseudonym` and the key file.

The key is :data:`KEY_FILE` in the run folder: 32 random bytes as hex, mode 0600, created once (atomically, never
overwritten) and read thereafter. Losing it makes existing pseudonyms uncheckable, not wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["KEY_FILE", "PseudonymError", "new_key", "pseudonym", "read_or_create_key", "request_pseudonym",
           "write_key"]

KEY_FILE = "record_id.key"
PSEUDONYM_HEX = 16          # shown length of a record pseudonym (64 bits)


class PseudonymError(ValueError):
    """A key file that exists but is not a key written by this module."""


def new_key() -> bytes:
    return secrets.token_bytes(32)


def pseudonym(record_id: str, key: bytes, length: int = PSEUDONYM_HEX) -> str:
    """HMAC-SHA256 of the record id under ``key``, as hex truncated to ``length`` digits."""
    return hmac.new(key, record_id.encode("utf-8"), hashlib.sha256).hexdigest()[:length]


def request_pseudonym(record_ids, key: bytes) -> str:
    """A request id for a set of record ids (order-free, so a re-sent request is recognised): ``req-`` and 32 hex
    digits of HMAC-SHA256 of the sorted ids, not recognisable without the key."""
    canonical = json.dumps(sorted(str(r) for r in record_ids), ensure_ascii=False).encode("utf-8")
    return "req-" + hmac.new(key, canonical, hashlib.sha256).hexdigest()[:32]


def write_key(folder: Path, key: bytes) -> Path:
    """Write ``key`` to ``folder/record_id.key`` (mode 0600); refuses to replace an existing key."""
    path = Path(folder) / KEY_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)              # fails if a key exists: a key is never replaced
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _read_key(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PseudonymError(f"{path}: not a record-id key ({exc})") from None
    if len(key) < 16:
        raise PseudonymError(f"{path}: not a record-id key (too short)")
    return key


def read_or_create_key(folder: Path) -> bytes:
    """The run folder's key, created on first use."""
    path = Path(folder) / KEY_FILE
    if not path.exists():
        try:
            write_key(folder, new_key())
        except FileExistsError:         # another process created it first: use theirs
            pass
    return _read_key(path)
