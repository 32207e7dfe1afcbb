"""User data: ``.npz`` (arrays x, y, optional ids and class_names) or CSV with a header row and a label column.

Labels: integers >= 0 are kept as they are (class k is named "k"); any other labels (strings, negative or
fractional numbers) are mapped to 0..k-1 in the sorted order of their text, which become the class names.
Ids: given in the file (npz array ``ids``, CSV column ``id``), else ``f"{name}:{row}"`` where ``name`` is the file's
stem and ``row`` the 0-based record position in the file.
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset, _one_line


def _encode_labels(values: list, name: str, ids: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Integers >= 0 kept, else mapped to sorted class names."""
    ints: list[int] = []
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            break
        if isinstance(v, (int, np.integer)) and v >= 0:
            ints.append(int(v))
            continue
        if isinstance(v, (float, np.floating)) and math.isfinite(v) and v == int(v) and v >= 0:
            ints.append(int(v))
            continue
        if isinstance(v, str) and v.strip().isascii() and v.strip().isdigit():
            ints.append(int(v.strip()))
            continue
        break
    else:
        y = np.asarray(ints, dtype=np.int64)
        k = int(y.max()) + 1 if y.size else 1
        return y, [str(i) for i in range(max(k, 1))]
    texts = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    for i, t in enumerate(texts):
        if t.strip() == "":
            rid = ids[i] if ids is not None else f"{name}:{i}"
            raise DataError(f"dataset '{name}': record '{_one_line(rid)}' has an empty label")
    classes = sorted(set(texts))
    lookup = {c: j for j, c in enumerate(classes)}
    return np.asarray([lookup[t] for t in texts], dtype=np.int64), classes


def load_npz(path, *, flatten: bool | None = None, name: str | None = None) -> Dataset:
    """Arrays ``x`` (n, ...) and ``y`` (n,), optional ``ids`` (n,) and ``class_names``; no pickled objects.

    With ``class_names`` in the file, integer labels index it and string labels are looked up in it (in the
    file's order); without it, labels are encoded as described in the module docstring."""
    if path is None:
        raise DataError("dataset 'npz' needs path= (an .npz file with arrays x and y)")
    path = Path(path)
    name = name or path.stem
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise DataError(f"npz file {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if magic != b"PK\x03\x04":       # np.load would try to unpickle anything that is neither zip nor .npy
        raise DataError(f"{path}: not an .npz file (no zip archive signature); write it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)} (found: {', '.join(sorted(keys))})")
            x, y = z["x"], z["y"]
            ids = z["ids"] if "ids" in keys else None
            class_names = [str(c) for c in z["class_names"].tolist()] if "class_names" in keys else None
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"npz file {path} does not exist") from None
    except ValueError as exc:  # object arrays (never unpickled), malformed arrays
        what = ("holds an object array, which is never loaded (it would need unpickling)" if "pickle" in str(exc)
                else f"cannot read arrays ({_one_line(exc, 200)})")
        raise DataError(f"{path}: {what}; store ids and labels as string or integer arrays") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({_one_line(exc, 200)})") from None
    if x.ndim < 2:
        raise DataError(f"{path}: x must have shape (n, features...), got {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"{path}: y has shape {y.shape}, expected ({x.shape[0]},) to match x")
    if ids is not None:
        ids = np.asarray([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in ids.tolist()], dtype=str) \
            if ids.ndim == 1 else ids
    if class_names is not None and np.issubdtype(y.dtype, np.integer):
        labels = y.astype(np.int64)
    elif class_names is not None and y.dtype.kind in "US":
        lookup = {c: j for j, c in enumerate(class_names)}
        texts = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in y.tolist()]
        unknown = [i for i, t in enumerate(texts) if t not in lookup]
        if unknown:
            i = unknown[0]
            rid = ids[i] if ids is not None and ids.ndim == 1 and ids.shape[0] == len(texts) else f"{name}:{i}"
            raise DataError(f"dataset '{name}': record '{_one_line(rid)}' has label '{_one_line(texts[i])}' "
                            "not in class_names")
        labels = np.asarray([lookup[t] for t in texts], dtype=np.int64)
    else:
        labels, class_names = _encode_labels(y.tolist(), name, None if ids is None else list(ids))
    if flatten:
        x = x.reshape(x.shape[0], -1)
    return Dataset(x=x, y=labels, ids=ids, name=name, class_names=class_names, source=str(path))


def load_csv(path, *, label_column: str | None = None, name: str | None = None) -> Dataset:
    """CSV with a header row: the label column (default ``"label"``), an optional ``id`` column, and numeric
    feature columns. An empty or non-numeric feature cell is a DataError naming the record and column; ``nan`` or
    ``inf`` parse, then fail the dataset's finiteness check naming the record."""
    if path is None:
        raise DataError("dataset 'csv' needs path= (a CSV file with a header row and a label column)")
    path = Path(path)
    name = name or path.stem
    label_column = label_column or "label"
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read CSV file {path}: {exc.strerror or exc}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty CSV file (a header row is required)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: malformed CSV ({_one_line(exc)})") from None
        if label_column not in header:
            raise DataError(f"{path}: no label column '{label_column}' in header "
                            f"({_one_line(', '.join(header), 200)})")
        if len(set(header)) != len(header):
            raise DataError(f"{path}: duplicate column names in header")
        li = header.index(label_column)
        ii = header.index("id") if "id" in header and label_column != "id" else None
        fcols = [j for j in range(len(header)) if j != li and j != ii]
        if not fcols:
            raise DataError(f"{path}: no feature columns besides '{label_column}'")
        rows_x: list[list[float]] = []
        labels: list[str] = []
        ids: list[str] | None = [] if ii is not None else None
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(c.strip() == "" for c in row):
                    continue  # blank line
                rid = row[ii].strip() if ii is not None and ii < len(row) else f"{name}:{len(rows_x)}"
                if len(row) != len(header):
                    raise DataError(f"{path} line {line}: record '{_one_line(rid)}' has {len(row)} fields, "
                                    f"header has {len(header)}")
                vals = []
                for j in fcols:
                    cell = row[j].strip()
                    try:
                        vals.append(float(cell))
                    except ValueError:
                        what = "an empty" if cell == "" else f"a non-numeric ({_one_line(cell, 30)!r})"
                        raise DataError(f"dataset '{name}': record '{_one_line(rid)}' has {what} value in column "
                                        f"'{header[j]}' ({path} line {line})") from None
                rows_x.append(vals)
                labels.append(row[li].strip())
                if ids is not None:
                    ids.append(rid)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: malformed CSV ({_one_line(exc)})") from None
    if not rows_x:
        raise DataError(f"{path}: no data rows")
    y, class_names = _encode_labels(labels, name, ids)
    x = np.asarray(rows_x, dtype=np.float64)
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)  # values beyond float32 range become inf and are reported below
    return Dataset(x=x32, y=y, ids=None if ids is None else np.asarray(ids, dtype=str), name=name,
                   class_names=class_names, feature_names=[header[j] for j in fcols], source=str(path))
