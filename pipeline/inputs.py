"""predict's inputs: image files and folders, .npy arrays, CSV rows, read, checked and scaled as preprocess did.

Images convert through preprocess's own function (`pipeline.images`), tables' text columns encode through
preprocess's (`pipeline.tables`), scaling is `pipeline.preprocessing`'s: predict cannot drift from training.
Everything is read before TensorFlow loads, so a bad input costs no model load.
Longer than most modules on purpose: each kind of input predict accepts is read and checked here, beside the others.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.columns import code_row, date_seconds, encode, is_missing, is_number
from pipeline.errors import PipelineError
from pipeline.folders import Skipped, image_files
from pipeline.images import IMAGE_SUFFIXES, Conversion, convert_image, read_image_file
from pipeline.io.reading import check_npy_header, read_limited
from pipeline.meta import MinmaxScaling, PreparedMeta, TableRecord
from pipeline.prediction import ARRAY_SUFFIX, Batch, accepted, describe_inputs
from pipeline.preprocessing import apply_minmax, scale_pixels
from pipeline.progress import Progress
from pipeline.tables import csv_reader, decode_text

log = logging.getLogger(__name__)

IMAGE_FILE_MAX = 255.0  # 8-bit image files: the value that scales to 1.0, as preprocess does for MNIST
FLOAT32_MAX = float(np.finfo(np.float32).max)
CSV_MAX_BYTES = 64 * 2**20  # read whole into memory: larger inputs belong in .npy files, or in several CSVs


def check_inputs(paths: Sequence[Path], meta: PreparedMeta) -> None:
    """Every path exists and has a suffix this model takes; raise on the first that does not."""
    for path in paths:
        suffix, suffixes = path.suffix.lower(), accepted(meta)
        if suffix not in suffixes:
            raise PipelineError(
                f"{path}: a '{suffix or 'suffixless'}' file is not an input this {meta.kind} model takes; "
                f"give {', '.join(suffixes[:-1])} or {suffixes[-1]} files holding {describe_inputs(meta)}."
            )
        if not path.is_file():
            raise PipelineError(f"{path} not found (or not a file); check the path.")


# ----------------------------------------------------------------------------- scaling


def scale_features(features: np.ndarray, scaling: MinmaxScaling) -> np.ndarray:
    """(N, F) raw features -> the min-max fitted on the training split, with preprocess's own function."""
    return apply_minmax(features, np.asarray(scaling.min), np.asarray(scaling.range))


# ----------------------------------------------------------------------------- readers


def read_image(path: Path, meta: PreparedMeta, *, invert: bool = False) -> Batch:
    """An image file of any size and format, converted by the function preprocess used (pipeline/images.py)."""
    pixels = convert_image(read_image_file(path, "check the path."), Conversion.for_model(meta), str(path))
    if invert:
        pixels = 255 - pixels
    return Batch((str(path),), scale_pixels(pixels[np.newaxis], IMAGE_FILE_MAX))


def _load_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as handle:  # the header first: NumPy would allocate whatever it claims (596 GiB, say)
            check_npy_header(handle, path.stat().st_size)
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # object arrays (pickles) are refused, never loaded
        raise PipelineError(f"{path} is not a readable numeric .npy array ({err}).") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise PipelineError(f"{path} holds {array.dtype} values; a numeric array is needed.")
    if np.iscomplexobj(array):
        raise PipelineError(f"{path} holds complex numbers; real values are needed.")
    if not np.all(np.isfinite(array)):
        raise PipelineError(f"{path} holds NaN or infinite values; every value must be a finite number.")
    array = array.astype(np.float64)
    if array.size and np.abs(array).max() > FLOAT32_MAX:
        raise PipelineError(f"{path} holds values beyond ±{FLOAT32_MAX:.3g}, which the float32 model cannot take.")
    return array


def _as_image_stack(array: np.ndarray, input_shape: tuple[int, ...], path: Path) -> tuple[np.ndarray, bool]:
    """One image or a stack of them -> (N, H, W) (grayscale) or (N, H, W, 3) (RGB), and whether it was one image.

    Grayscale: (H, W) or (N, H, W), a trailing channel axis of 1 allowed (as in data/prepared). RGB:
    (H, W, 3) or (N, H, W, 3), channels last as Pillow and data/prepared store them.
    """
    height, width = input_shape[:2]
    channels = input_shape[2] if len(input_shape) == 3 else 1
    if channels == 1:
        if array.ndim in (3, 4) and array.shape[-1] == 1 and array.shape[-3:-1] == (height, width):
            array = array[..., 0]
        one = (height, width)
    else:
        one = (height, width, channels)
    if array.shape == one:
        return array[np.newaxis], True
    if array.ndim == len(one) + 1 and array.shape[1:] == one and len(array):
        return array, False
    raise PipelineError(
        f"{path} has shape {array.shape}, but this model takes images of shape {one} "
        f"(or a stack of them, (N, {', '.join(map(str, one))}))."
    )


def _as_feature_rows(array: np.ndarray, n_features: int, path: Path) -> tuple[np.ndarray, bool]:
    """(F,) or (N, F) -> (N, F) and whether it was one row."""
    if array.shape == (n_features,):
        return array[np.newaxis], True
    if array.ndim == 2 and array.shape[1] == n_features and len(array):
        return array, False
    raise PipelineError(
        f"{path} has shape {array.shape}, but this model takes rows of {n_features} features "
        f"(shape ({n_features},) or (N, {n_features}))."
    )


def read_npy(path: Path, meta: PreparedMeta) -> Batch:
    """Raw, unscaled values as in data/raw (digits 0..16, MNIST 0..255, iris in cm): one example or a stack."""
    array = _load_npy(path)
    if isinstance(meta.scaling, MinmaxScaling):
        stack, single = _as_feature_rows(array, meta.input_shape[0], path)
        x = scale_features(stack, meta.scaling)
    else:
        stack, single = _as_image_stack(array, meta.input_shape, path)
        x = scale_pixels(stack, meta.scaling.pixel_max)
    labels = (str(path),) if single else tuple(f"{path}[{i}]" for i in range(len(stack)))
    return Batch(labels, x)


def _parse_float(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PipelineError(f"{where}: '{text}' is not a number.") from None
    if not np.isfinite(value):
        raise PipelineError(f"{where}: '{text}' is not a finite number.")
    if abs(value) > FLOAT32_MAX:
        raise PipelineError(f"{where}: '{text}' is beyond ±{FLOAT32_MAX:.3g}, which the float32 model cannot take.")
    return value


def _is_header(row: Sequence[str], meta: PreparedMeta, path: Path) -> bool:
    """A header names a column the model takes; a first row of nothing but text that no column of the model
    holds is a header too, whose names do not match: that is said, not read as data."""
    cells = [cell.strip() for cell in row]
    if set(cells) & set(meta.columns):
        return True
    known = {value for values in meta.categories.values() for value in values}
    if any(is_number(cell) or cell in known or date_seconds(cell) is not None or is_missing(cell) for cell in cells):
        return False
    if meta.columns:
        raise PipelineError(
            f"{path}: the first row names the columns {cells[:8]}{' ...' if len(cells) > 8 else ''}, none of which "
            f"this model takes ({', '.join(meta.columns)}); name them so (in any order, other columns ignored)."
        )
    return True


def _column_order(header: Sequence[str], meta: PreparedMeta, path: Path) -> list[int]:
    """Positions of the training features in `header`: columns may come in any order, and columns the model
    does not take (the label column of a table with answers, an id) are left out, as pandas users select them."""
    names = [cell.strip() for cell in header]
    missing = [name for name in meta.columns if name not in names]
    twice = sorted({name for name in meta.columns if names.count(name) > 1})
    if missing or twice:
        problem = f"lacks {missing}" if missing else f"names {twice} more than once"
        raise PipelineError(
            f"{path}: the header {problem}; this model takes the columns {list(meta.columns)} "
            "(in any order, other columns ignored), or rows without a header with the values in that order."
        )
    return [names.index(name) for name in meta.columns]


def parse_csv(text: str, path: Path, meta: PreparedMeta, id_column: str = "") -> Batch:
    """Rows of raw feature values, coded and encoded as preprocess did (`pipeline.columns`); an optional header
    names columns. `id_column`: the header's column whose value names each row (else its line)."""
    try:
        rows = [row for row in csv_reader(text) if any(cell.strip() for cell in row)]
    except csv.Error as err:  # e.g. a field over csv's 128 KB limit, or a NUL byte
        raise PipelineError(f"{path} is not a valid CSV file ({err}); give one row of numbers per example.") from None
    if not rows:
        raise PipelineError(f"{path} has no rows; give one row of {meta.input_shape[0]} values per example.")
    columns = meta.columns or tuple(f"feature {i + 1}" for i in range(meta.input_shape[0]))  # unnamed: by position
    record = meta.table or TableRecord(columns=columns, categories={})
    first_line, order, named = 1, list(range(len(columns))), None
    width, wanted = len(order), describe_inputs(meta)
    if _is_header(rows[0], meta, path):
        order = _column_order(rows[0], meta, path)
        named = _id_position(rows[0], id_column, path)
        width, wanted = len(rows[0]), f"its header's {len(rows[0])} columns"
        rows, first_line = rows[1:], 2
    elif id_column:
        raise PipelineError(f"{path} has no header row, so no column '{id_column}' (--id-column); add the header.")
    coded, labels = [], []
    for line, row in enumerate(rows, start=first_line):
        where = f"{path} line {line}"
        if len(row) != width:
            raise PipelineError(f"{where} has {len(row)} values, but this model takes {wanted}.")
        number = lambda text, _column, at=where: _parse_float(text, at)  # noqa: E731
        coded.append(code_row([row[i].strip() for i in order], record, number, where))
        labels.append(row[named].strip() if named is not None else where)
    if not coded:
        raise PipelineError(f"{path} has a header but no data rows.")
    where_rows = [f"{path} line {first_line + i}" for i in range(len(coded))]
    features = encode(np.asarray(coded, dtype=np.float64).reshape(len(coded), len(columns)), record, where_rows)
    assert isinstance(meta.scaling, MinmaxScaling)  # CSV files reach only tabular models (check_inputs)
    return Batch(tuple(labels), scale_features(features, meta.scaling))


def _id_position(header: Sequence[str], id_column: str, path: Path) -> int | None:
    names = [cell.strip() for cell in header]
    if id_column and id_column not in names:
        raise PipelineError(f"{path}: the header has no column '{id_column}' (--id-column); its columns are {names}.")
    return names.index(id_column) if id_column else None


def read_csv(path: Path, meta: PreparedMeta, id_column: str = "") -> Batch:
    data = read_limited(path, CSV_MAX_BYTES, too_large="split it into smaller files.", unreadable="check the path.")
    return parse_csv(decode_text(data, path), path, meta, id_column)


def expand_folders(paths: Sequence[Path], meta: PreparedMeta) -> list[Path]:
    """`paths` with each folder replaced by the image files below it, sorted, found as the download stage
    finds a class folder's (`folders.image_files`: hidden and other files skipped, counted in a log line)."""
    expanded = []
    for path in paths:
        if not path.is_dir():
            expanded.append(path)
            continue
        if meta.kind != "image":
            raise PipelineError(f"{path} is a folder; this {meta.kind} model takes .csv or .npy files.")
        skipped = Skipped()
        found = image_files(path, skipped)
        if not found:
            raise PipelineError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}); check the path.")
        if skipped.count:
            log.info("%s: %s", path, skipped.sentence())
        expanded.extend(found)
    return expanded


def read_inputs(paths: Sequence[Path], meta: PreparedMeta, *, invert: bool = False, id_column: str = "") -> Batch:
    """Every input read, checked and scaled, in one batch in the order given (a folder: its images, sorted)."""
    paths = expand_folders(paths, meta)
    check_inputs(paths, meta)
    batches, progress = [], Progress("reading", len(paths), "inputs")
    for path in paths:
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            batches.append(read_image(path, meta, invert=invert))
        elif suffix == ARRAY_SUFFIX:
            batches.append(read_npy(path, meta))
        else:
            batches.append(read_csv(path, meta, id_column))
        progress.advance()
    progress.finish()
    labels = tuple(label for batch in batches for label in batch.labels)
    x = np.concatenate([batch.x for batch in batches]).astype(np.float32)
    if not np.all(np.isfinite(x)):  # finite raw values can still overflow once scaled (a tiny min-max range)
        bad = labels[int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])]
        raise PipelineError(f"{bad}: its values overflow float32 once scaled as in training; check the input.")
    return Batch(labels, x)
