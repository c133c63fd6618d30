"""Pure functions of the predict stage: read new inputs, scale them as preprocess did, rank classes.

Nothing here imports TensorFlow: every input is read and checked against the
preprocessing description (`data/prepared/meta.json`) before the model loads.
Scaling reuses `pipeline.preprocessing`, so predict cannot drift from training.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.files import check_npy_header, read_limited
from pipeline.folders import Skipped, image_files
from pipeline.images import IMAGE_SUFFIXES, Conversion, convert_image, read_image_file
from pipeline.preprocessing import apply_minmax, scale_pixels
from pipeline.tables import csv_reader, decode_text, encode_row

log = logging.getLogger(__name__)

ARRAY_SUFFIX = ".npy"
CSV_SUFFIX = ".csv"
IMAGE_FILE_MAX = 255.0  # 8-bit image files: the value that scales to 1.0, as preprocess does for MNIST
FLOAT32_MAX = float(np.finfo(np.float32).max)
CSV_MAX_BYTES = 64 * 2**20  # read whole into memory: larger inputs belong in .npy files, or in several CSVs


@dataclass(frozen=True)
class InputSpec:
    """What the model was trained on, from the preprocessing description (meta.json)."""

    kind: str  # "image" or "tabular"
    input_shape: tuple[int, ...]  # one example: (H, W, 1) or (F,)
    class_names: tuple[str, ...]
    scaling: dict[str, Any]
    feature_names: tuple[str, ...] = ()
    image: dict[str, Any] | None = None  # how preprocess converted image files (your own folder); None: built-in
    table: dict[str, Any] | None = None  # your CSV table's columns and text columns' values (tables.Table.record)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> InputSpec:
        try:
            return cls(
                kind=meta["kind"],
                input_shape=tuple(meta["input_shape"]),
                class_names=tuple(meta["class_names"]),
                scaling=meta["scaling"],
                feature_names=tuple(meta.get("feature_names", ())),
                image=meta.get("image"),
                table=meta.get("table"),
            )
        except (KeyError, TypeError) as err:
            raise PipelineError(f"the preprocessing description lacks {err}; rerun preprocess (dvc repro).") from None

    @property
    def accepted(self) -> tuple[str, ...]:
        return (*IMAGE_SUFFIXES, ARRAY_SUFFIX) if self.kind == "image" else (CSV_SUFFIX, ARRAY_SUFFIX)

    def describe(self) -> str:
        if self.kind == "image":
            height, width = self.input_shape[:2]
            if self.conversion().color_mode == "rgb":
                return f"{height}x{width} RGB images (image files of any size, or .npy arrays ({height}, {width}, 3))"
            return f"{height}x{width} grayscale images (image files of any size, or .npy arrays ({height}, {width}))"
        if self.categories:
            values = self.categories
            named = [f"{c} (one of {', '.join(values[c])})" if c in values else c for c in self.columns]
            return f"rows of the columns {', '.join(named)}"
        return f"rows of {self.input_shape[0]} features ({', '.join(self.feature_names) or 'unnamed'})"

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns a CSV row gives: your table's feature columns, or the built-in dataset's features."""
        return tuple(self.table["columns"]) if self.table else self.feature_names

    @property
    def categories(self) -> dict[str, list[str]]:
        return self.table["categories"] if self.table else {}  # read per CSV row: no copy

    def conversion(self) -> Conversion:
        """How image files become this model's pixels: as preprocess converted the training images."""
        return Conversion.from_record(self.image or {}, self.input_shape)


@dataclass(frozen=True)
class Batch:
    """Scaled examples ready for the model, and a label per example saying where it came from."""

    labels: tuple[str, ...]
    x: np.ndarray


# ----------------------------------------------------------------------------- checks


def check_inputs(paths: Sequence[Path], spec: InputSpec) -> None:
    """Every path exists and has a suffix this model takes; raise on the first that does not."""
    for path in paths:
        suffix = path.suffix.lower()
        if suffix not in spec.accepted:
            raise PipelineError(
                f"{path}: a '{suffix or 'suffixless'}' file is not an input this {spec.kind} model takes; "
                f"give {', '.join(spec.accepted[:-1])} or {spec.accepted[-1]} files holding {spec.describe()}."
            )
        if not path.is_file():
            raise PipelineError(f"{path} not found (or not a file); check the path.")


def check_top_k(top_k: int, spec: InputSpec) -> None:
    """Refuse a K outside 1..classes, above the class count too, rather than cap it.

    Capping would print fewer classes than asked without an error, and a script reading exactly K
    entries per input would then misread them; the class count is known before any input is read,
    so the refusal costs nothing and says what to give instead.
    """
    n_classes = len(spec.class_names)
    if not 1 <= top_k <= n_classes:
        raise PipelineError(
            f"--top-k {top_k} is out of range: the model knows {n_classes} classes; give 1 to {n_classes}."
        )


def check_model_matches(model_input_shape: Sequence[int | None], n_outputs: int, spec: InputSpec) -> None:
    """The model and meta.json must come from the same run, or the scaling and class names are wrong."""
    if tuple(model_input_shape[1:]) != spec.input_shape or n_outputs != len(spec.class_names):
        raise PipelineError(
            f"the model takes {tuple(model_input_shape[1:])} and gives {n_outputs} classes, but meta.json describes "
            f"{spec.input_shape} and {len(spec.class_names)} classes; rerun the pipeline (dvc repro) so they match."
        )


# ----------------------------------------------------------------------------- scaling


def scale_features(features: np.ndarray, scaling: dict[str, Any]) -> np.ndarray:
    """(N, F) raw features -> the min-max fitted on the training split, with preprocess's own function."""
    return apply_minmax(features, np.asarray(scaling["min"]), np.asarray(scaling["range"]))


# ----------------------------------------------------------------------------- readers


def read_image(path: Path, spec: InputSpec, *, invert: bool = False) -> Batch:
    """An image file of any size and format, converted by the function preprocess used (pipeline/images.py)."""
    pixels = convert_image(read_image_file(path, "check the path."), spec.conversion(), str(path))
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


def read_npy(path: Path, spec: InputSpec) -> Batch:
    """Raw, unscaled values as in data/raw (digits 0..16, MNIST 0..255, iris in cm): one example or a stack."""
    array = _load_npy(path)
    if spec.kind == "image":
        stack, single = _as_image_stack(array, spec.input_shape, path)
        x = scale_pixels(stack, spec.scaling["pixel_max"])
    else:
        stack, single = _as_feature_rows(array, spec.input_shape[0], path)
        x = scale_features(stack, spec.scaling)
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


def _is_header(row: Sequence[str], spec: InputSpec) -> bool:
    """A header names a column the model takes; without text columns, any non-number marks one too."""
    if {cell.strip() for cell in row} & set(spec.columns):
        return True
    if spec.categories:  # a data row holds text here: the values of the text columns
        return False
    try:
        [float(cell) for cell in row]
    except ValueError:
        return True
    return False


def _column_order(header: Sequence[str], spec: InputSpec, path: Path) -> list[int]:
    """Positions of the training features in `header`: columns may come in any order, and columns the model
    does not take (the label column of a table with answers, an id) are left out, as pandas users select them."""
    names = [cell.strip() for cell in header]
    missing = [name for name in spec.columns if name not in names]
    twice = sorted({name for name in spec.columns if names.count(name) > 1})
    if missing or twice:
        problem = f"lacks {missing}" if missing else f"names {twice} more than once"
        raise PipelineError(
            f"{path}: the header {problem}; this model takes the columns {list(spec.columns)} "
            "(in any order, other columns ignored), or rows without a header with the values in that order."
        )
    return [names.index(name) for name in spec.columns]


def parse_csv(text: str, path: Path, spec: InputSpec) -> Batch:
    """Rows of raw feature values, text columns one-hot encoded as preprocess did; an optional header names columns."""
    try:
        rows = [row for row in csv_reader(text) if any(cell.strip() for cell in row)]
    except csv.Error as err:  # e.g. a field over csv's 128 KB limit, or a NUL byte
        raise PipelineError(f"{path} is not a valid CSV file ({err}); give one row of numbers per example.") from None
    if not rows:
        raise PipelineError(f"{path} has no rows; give one row of {spec.input_shape[0]} values per example.")
    columns = spec.columns or ("",) * spec.input_shape[0]  # a model without feature names: by position only
    first_line = 1
    order = list(range(len(columns)))
    width, wanted = len(order), spec.describe()
    if _is_header(rows[0], spec):
        order = _column_order(rows[0], spec, path)
        width, wanted = len(rows[0]), f"its header's {len(rows[0])} columns"
        rows, first_line = rows[1:], 2
    values = []
    for line, row in enumerate(rows, start=first_line):
        where = f"{path} line {line}"
        if len(row) != width:
            raise PipelineError(f"{where} has {len(row)} values, but this model takes {wanted}.")
        cells = [row[i].strip() for i in order]
        number = lambda text, _column, at=where: _parse_float(text, at)  # noqa: E731
        values.append(encode_row(cells, columns, spec.categories, number, where))
    if not values:
        raise PipelineError(f"{path} has a header but no data rows.")
    labels = tuple(f"{path} line {first_line + i}" for i in range(len(values)))
    return Batch(labels, scale_features(np.asarray(values, dtype=np.float64), spec.scaling))


def read_csv(path: Path, spec: InputSpec) -> Batch:
    data = read_limited(path, CSV_MAX_BYTES, too_large="split it into smaller files.", unreadable="check the path.")
    return parse_csv(decode_text(data, path), path, spec)


def expand_folders(paths: Sequence[Path], spec: InputSpec) -> list[Path]:
    """`paths` with each folder replaced by the image files below it, sorted, found as the download stage
    finds a class folder's (`folders.image_files`: hidden and other files skipped, counted in a log line)."""
    expanded = []
    for path in paths:
        if not path.is_dir():
            expanded.append(path)
            continue
        if spec.kind != "image":
            raise PipelineError(f"{path} is a folder; this {spec.kind} model takes .csv or .npy files.")
        skipped = Skipped()
        found = image_files(path, skipped)
        if not found:
            raise PipelineError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}); check the path.")
        if skipped.example:
            log.info("%s: %s", path, skipped.sentence())
        expanded.extend(found)
    return expanded


def read_inputs(paths: Sequence[Path], spec: InputSpec, *, invert: bool = False) -> Batch:
    """Every input read, checked and scaled, in one batch in the order given (a folder: its images, sorted)."""
    paths = expand_folders(paths, spec)
    check_inputs(paths, spec)
    batches = []
    for path in paths:
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            batches.append(read_image(path, spec, invert=invert))
        elif suffix == ARRAY_SUFFIX:
            batches.append(read_npy(path, spec))
        else:
            batches.append(read_csv(path, spec))
    labels = tuple(label for batch in batches for label in batch.labels)
    x = np.concatenate([batch.x for batch in batches]).astype(np.float32)
    if not np.all(np.isfinite(x)):  # finite raw values can still overflow once scaled (a tiny min-max range)
        bad = labels[int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])]
        raise PipelineError(f"{bad}: its values overflow float32 once scaled as in training; check the input.")
    return Batch(labels, x)


def check_probabilities(probabilities: np.ndarray, model_path: Path) -> None:
    """A damaged model can give NaN: refuse it rather than print it (NaN is not even valid JSON)."""
    if not np.all(np.isfinite(probabilities)):
        raise PipelineError(
            f"{model_path} gave NaN or infinite probabilities; the model is damaged: rerun dvc repro -f train."
        )


# ----------------------------------------------------------------------------- results


def top_classes(probabilities: np.ndarray, class_names: Sequence[str], top_k: int) -> list[list[tuple[str, float]]]:
    """Per example, the `top_k` (class name, probability) pairs, most probable first."""
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    return [[(class_names[j], float(row[j])) for j in order] for row, order in zip(probabilities, ranked, strict=True)]


def format_text(labels: Sequence[str], ranked: Sequence[Sequence[tuple[str, float]]]) -> str:
    """One line per input: `label: class (probability), class (probability), ...`."""
    lines = [
        f"{label}: " + ", ".join(f"{name} ({probability:.4f})" for name, probability in classes)
        for label, classes in zip(labels, ranked, strict=True)
    ]
    return "\n".join(lines) + "\n"


def as_records(labels: Sequence[str], ranked: Sequence[Sequence[tuple[str, float]]]) -> list[dict[str, Any]]:
    """The `--json` form: [{"input": ..., "predictions": [{"class": ..., "probability": ...}, ...]}, ...]."""
    return [
        {"input": label, "predictions": [{"class": name, "probability": p} for name, p in classes]}
        for label, classes in zip(labels, ranked, strict=True)
    ]
