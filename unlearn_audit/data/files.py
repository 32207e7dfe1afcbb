"""User data: ``.npz`` (arrays x, y, optional ids and class_names), CSV or Parquet with a label column, or a folder
of images with one sub-folder per class.

Labels: integers >= 0 are kept as they are (class k is named "k"); any other labels (strings, negative or
fractional numbers) are mapped to 0..k-1 in the sorted order of their text, which become the class names.
Ids: given in the file (npz array ``ids``, CSV/Parquet column ``id`` or the named id column), else
``f"{name}:{row}"`` where ``name`` is the file's stem and ``row`` the 0-based record position in the file. An image's
id is its path inside the folder (``"cat/0001.png"``): stable when images are added, removed or reordered.
"""

from __future__ import annotations

import csv
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset, _one_line

MAX_CLASSES = 10_000
"""Integer labels are class indices: a label of 10**9 would make a billion classes (and their names) in memory."""


def _rid(ids: list[str] | None, name: str, i: int) -> str:
    return _one_line(ids[i] if ids is not None else f"{name}:{i}")


def _encode_labels(values: list, name: str, ids: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Integers >= 0 kept, else mapped to sorted class names. A NaN or inf label is a missing one (pandas writes a
    missing label of a numeric column as NaN), never a class; at most :data:`MAX_CLASSES` classes."""
    for i, v in enumerate(values):
        if isinstance(v, (float, np.floating)) and not math.isfinite(v):
            raise DataError(f"dataset '{name}': record '{_rid(ids, name, i)}' has a missing label ({v})")
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
        if k > MAX_CLASSES:
            i = int(np.argmax(y))
            raise DataError(f"dataset '{name}': record '{_rid(ids, name, i)}' has label {ints[i]}: integer labels are "
                            f"class indices 0..k-1, so this makes {k} classes (at most {MAX_CLASSES}); renumber the "
                            "classes 0..k-1, or use labels that are not numbers")
        return y, [str(i) for i in range(max(k, 1))]
    texts = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    for i, t in enumerate(texts):
        if t.strip() == "":
            raise DataError(f"dataset '{name}': record '{_rid(ids, name, i)}' has an empty label")
    classes = sorted(set(texts))
    if len(classes) > MAX_CLASSES:
        raise DataError(f"dataset '{name}': {len(classes)} different labels (at most {MAX_CLASSES} classes); is the "
                        "label column right?")
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


def load_csv(path, *, label_column: str | None = None, id_column: str | None = None,
             name: str | None = None) -> Dataset:
    """CSV with a header row: the label column (default ``"label"``), an optional id column (``id_column``, which
    must then exist; default: the column ``id`` when there is one), and numeric feature columns. An empty or
    non-numeric feature cell is a DataError naming the record and column; ``nan`` or ``inf`` parse, then fail the
    dataset's finiteness check naming the record."""
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
        ii = _id_column(header, label_column, id_column, path)
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


def _id_column(header: list[str], label_column: str, id_column: str | None, path: Path) -> int | None:
    """Position of the id column: ``id_column`` when named (it must exist and differ from the label column), else
    the column ``id`` when there is one."""
    if id_column is not None:
        if id_column == label_column:
            raise DataError(f"{path}: the id column and the label column are the same ('{_one_line(id_column)}')")
        if id_column not in header:
            raise DataError(f"{path}: no id column '{_one_line(id_column)}' in header "
                            f"({_one_line(', '.join(header), 200)})")
        return header.index(id_column)
    return header.index("id") if "id" in header and label_column != "id" else None


# ----------------------------------------------------------------------------- Parquet
def load_parquet(path, *, label_column: str | None = None, id_column: str | None = None,
                 name: str | None = None) -> Dataset:
    """Parquet file (read with pyarrow): the label column (default ``"label"``), an optional id column (as for CSV)
    and numeric feature columns (integers, floats or booleans). A column of another type, or a missing value, is a
    DataError naming the column (and the record); NaN or inf fail the dataset's finiteness check naming the record."""
    if path is None:
        raise DataError("dataset 'parquet' needs path= (a Parquet file with a label column)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    name = name or path.stem
    label_column = label_column or "label"
    if path.is_dir():                        # pyarrow would read every file under it as one dataset
        raise DataError(f"{path}: a folder, not a Parquet file")
    try:
        header = [str(c) for c in pq.read_schema(path).names]
        if len(set(header)) != len(header):
            dup = next(c for c in header if header.count(c) > 1)
            raise DataError(f"{path}: duplicate column name '{_one_line(dup)}'")
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError(f"Parquet file {path} does not exist") from None
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_one_line(exc, 200)})") from None
    if label_column not in header:
        raise DataError(f"{path}: no label column '{_one_line(label_column)}' (columns: "
                        f"{_one_line(', '.join(header), 200)})")
    ii = _id_column(header, label_column, id_column, path)
    li = header.index(label_column)
    fcols = [j for j in range(len(header)) if j not in (li, ii)]
    if not fcols:
        raise DataError(f"{path}: no feature columns besides '{label_column}'")
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")
    for j, what in ((li, "label"), (ii, "id")):
        if j is None:
            continue
        kind = table.schema.field(j).type
        if pa.types.is_nested(kind):
            raise DataError(f"{path}: the {what} column '{_one_line(header[j])}' has type {kind}; {what}s must be "
                            "numbers or text, one per record")
    ids = None
    if ii is not None:
        values = table.column(ii).to_pylist()
        for row, v in enumerate(values):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                raise DataError(f"{path}: the id column '{header[ii]}' is empty at row {row}")
        try:
            ids = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
        except UnicodeDecodeError:
            row = next(r for r, v in enumerate(values) if isinstance(v, bytes) and not _is_utf8(v))
            raise DataError(f"{path}: the id at row {row} of column '{header[ii]}' is not UTF-8 text") from None
    columns = []
    for j in fcols:
        col, kind = table.column(j), table.schema.field(j).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DataError(f"{path}: feature column '{_one_line(header[j])}' has type {kind}; features must be "
                            "numbers (integer, float or boolean columns)")
        if col.null_count:
            row = col.to_pylist().index(None)
            rid = ids[row] if ids is not None else f"{name}:{row}"
            raise DataError(f"dataset '{name}': record '{_one_line(rid)}' has an empty value in column "
                            f"'{_one_line(header[j])}' ({path})")
        columns.append(col.to_numpy(zero_copy_only=False).astype(np.float64))
    label_col = table.column(li)
    labels = label_col.to_pylist()
    if label_col.null_count:
        row = labels.index(None)
        rid = ids[row] if ids is not None else f"{name}:{row}"
        raise DataError(f"dataset '{name}': record '{_one_line(rid)}' has an empty label")
    y, class_names = _encode_labels(labels, name, ids)
    x = np.stack(columns, axis=1)
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)  # values beyond float32 range become inf and are reported by Dataset
    return Dataset(x=x32, y=y, ids=None if ids is None else np.asarray(ids, dtype=str), name=name,
                   class_names=class_names, feature_names=[header[j] for j in fcols], source=str(path))


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ----------------------------------------------------------------------------- image folder
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
                            ".pbm"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_GRAY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
MAX_IMAGE_PIXELS = 4096 * 4096                  # per image; a larger one is refused (decompression bombs)


def _image_array(img, f: Path) -> np.ndarray:
    """Pixels scaled to [0, 1], float32: (H, W) for a grayscale image (8-bit divided by 255, 16-bit by 65535),
    (H, W, 3) for any other (converted to RGB; alpha dropped). A 32-bit integer image (mode I) whose values fit in
    0..65535 is a 16-bit one as Pillow opens some formats (PGM); other 32-bit integer or float images (modes I, F) have
    no known range: DataError."""
    if img.mode in _GRAY_MODES:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    if img.mode in _GRAY16_MODES:
        return np.asarray(img, dtype=np.float32) / 65535.0
    if img.mode == "I":
        # Pillow opens some 16-bit grayscale files (PGM, some TIFFs) as 32-bit integers: their values say which
        a = np.asarray(img, dtype=np.int64)
        if a.size and 0 <= a.min() and a.max() <= 65535:
            return a.astype(np.float32) / 65535.0
        raise DataError(f"{f}: a 32-bit integer image (mode I) with values outside 0..65535, whose pixel range is "
                        "unknown; save it as an 8- or 16-bit image")
    if img.mode == "F":
        raise DataError(f"{f}: a 32-bit float image (mode F), whose pixel range is unknown; save it as an 8- or "
                        "16-bit image")
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None


def load_image_folder(data_dir, *, flatten: bool | None = None, name: str | None = None) -> Dataset:
    """A folder with one sub-folder per class, each holding image files (read with Pillow).

    Class names are the sub-folder names in sorted order (labels 0..k-1); a record's id is its path inside the
    folder (``"cat/0001.png"``). Every image must have the same width and height (no resizing). Grayscale images
    (modes 1, L, LA: 8-bit; I;16: 16-bit) give one channel; if any image has colour (RGB, RGBA, palette, CMYK, ...),
    all are read as RGB (three channels; a grayscale image repeated; alpha dropped). Pixels are scaled to [0, 1]
    (8-bit values divided by 255, 16-bit by 65535); 32-bit integer or float images are refused. An animated image
    gives its first frame. Shape (n, C, H, W), or flattened (n, C·H·W) (the default, as for the other image sets).
    Hidden files and folders (names starting with ".") are skipped; links are followed. Any other file that is not
    an image of a known suffix, a file outside a class sub-folder, a nested folder, a class folder without images,
    something that is not a regular file (a pipe, a device, a broken link) or an image Pillow cannot read is a
    DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    if data_dir is None:
        raise DataError("dataset 'image_folder' needs data_dir= (a folder with one sub-folder of images per class)")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    name = name or root.name or "images"
    classes: list[str] = []
    files: list[tuple[int, Path]] = []
    for entry in _listing(root):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise DataError(f"{entry}: a file outside the class sub-folders (each class is a sub-folder)")
        classes.append(entry.name)
        before = len(files)
        for f in _listing(entry):
            if f.name.startswith("."):
                continue
            if f.is_dir():
                raise DataError(f"{f}: a folder inside class folder '{_one_line(entry.name)}' (images only)")
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{f}: not an image file (known suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
            if not f.is_file():                 # a pipe would block the read forever; a device never ends
                raise DataError(f"{f}: " + ("not a regular file" if f.exists() else "a broken link"))
            files.append((len(classes) - 1, f))
        if len(files) == before:
            raise DataError(f"{entry}: class folder '{_one_line(entry.name)}' holds no images (every class needs "
                            "some; remove the folder or add its images)")
    if not classes:
        raise DataError(f"{root}: no class sub-folders")
    arrays = []
    size: tuple[int, int] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for _, f in files:
            try:
                with Image.open(f) as im:
                    if im.width * im.height > MAX_IMAGE_PIXELS:
                        raise DataError(f"{f}: image of {im.width}x{im.height} pixels exceeds the limit of "
                                        f"{MAX_IMAGE_PIXELS} pixels")
                    im.load()
                    if size is None:
                        size = im.size
                    elif im.size != size:
                        raise DataError(f"{f}: image is {im.size[0]}x{im.size[1]}, the first image is "
                                        f"{size[0]}x{size[1]} (all images must have the same size)")
                    arrays.append(_image_array(im, f))
            except DataError:
                raise
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombWarning,
                    Image.DecompressionBombError) as exc:
                raise DataError(f"{f}: not a readable image ({_one_line(exc, 120)})") from None
    gray = all(a.ndim == 2 for a in arrays)
    if not gray:
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    x = np.stack(arrays)                                      # (n, H, W) or (n, H, W, 3)
    x = x[:, None] if gray else x.transpose(0, 3, 1, 2)      # (n, C, H, W)
    if flatten is None or flatten:
        x = x.reshape(x.shape[0], -1)
    ids = np.asarray([f"{f.parent.name}/{f.name}" for _, f in files], dtype=str)
    y = np.asarray([c for c, _ in files], dtype=np.int64)
    return Dataset(x=x, y=y, ids=ids, name=name, class_names=classes, source=str(root))
