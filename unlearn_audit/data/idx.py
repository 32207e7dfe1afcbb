"""A small reader for the IDX format of MNIST / Fashion-MNIST (plain or gzip-compressed).

Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64),
the number of dimensions, then each dimension as a big-endian uint32, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from .dataset import DataError

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or exc}") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"IDX file {path}: truncated or corrupt gzip data ({exc})") from None
    return raw


def read_idx(path) -> np.ndarray:
    """Read one IDX file (``.gz`` detected from its content) into a native-endian numpy array.

    Raises DataError for a wrong magic number, an unknown type code, or a file shorter or longer than its header
    says.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"IDX file {path}: truncated header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"IDX file {path}: wrong magic number 0x{raw[:4].hex()} (expected 0x0000TTDD)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError(f"IDX file {path}: unknown data type code 0x{code:02X} "
                        "(expected one of 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)")
    if ndim == 0:
        raise DataError(f"IDX file {path}: zero dimensions in header")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path}: truncated header (needs {header} bytes, file has {len(raw)})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual < expected:
        raise DataError(f"IDX file {path}: truncated data (header says {dims} = {expected} bytes, found {actual})")
    if actual > expected:
        raise DataError(f"IDX file {path}: {actual - expected} unexpected trailing bytes after {dims} values")
    arr = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


_IDX_NAME = re.compile(r"^(?P<split>train|t10k|test)[-_.](?P<kind>images|labels)[-_.]idx(?P<nd>\d)[-_.]ubyte(\.gz)?$")


def find_idx_pairs(folder) -> dict[str, tuple[Path, Path]]:
    """Map ``"train"`` / ``"test"`` to (images, labels) file paths found in ``folder``.

    Accepts the usual MNIST names (``train-images-idx3-ubyte``, ``t10k-labels.idx1-ubyte``, ...), with or without
    ``.gz``; where both exist the uncompressed file wins. A split with only one of its two files is an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"IDX folder {folder} does not exist or is not a folder")
    found: dict[tuple[str, str], Path] = {}
    for p in sorted(folder.iterdir()):
        m = _IDX_NAME.match(p.name)
        if not m or not p.is_file():
            continue
        split = "train" if m["split"] == "train" else "test"
        key = (split, m["kind"])
        if key not in found or found[key].suffix == ".gz":
            found[key] = p
    pairs: dict[str, tuple[Path, Path]] = {}
    for split in ("train", "test"):
        imgs, labs = found.get((split, "images")), found.get((split, "labels"))
        if (imgs is None) != (labs is None):
            missing = "labels" if labs is None else "images"
            raise DataError(f"IDX folder {folder}: {split} {missing} file missing")
        if imgs is not None and labs is not None:
            pairs[split] = (imgs, labs)
    return pairs
