"""Your own CSV table: a header row, one label column named by `data.label_column`, numeric feature columns.

Read with the standard library's csv module (a table that fits a classifier here fits in memory;
pandas would add ~60 MB of dependency for no feature we use). Every problem is one sentence
naming the file and the column or line: an empty file, a missing label column, a ragged row, a
missing value, a non-numeric or non-finite feature value, a label with only one value.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

TABLE_FILE = "table.csv"  # the verified copy in data/raw/


@dataclass(frozen=True)
class Table:
    features: np.ndarray  # (N, F) float64, unscaled
    labels: np.ndarray  # (N,) int64 indices into class_names
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise PipelineError(f"{path} cannot be read ({err.strerror}).") from None


def decode_text(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")  # -sig: the byte-order mark spreadsheet programs write
    except UnicodeDecodeError as err:
        raise PipelineError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 CSV."
        ) from None


def _header(names: list[str], path: Path, label_column: str) -> tuple[int, list[int]]:
    """Position of the label column and of the feature columns, from the header row."""
    for position, name in enumerate(names, start=1):
        if not name:
            raise PipelineError(f"{path}: column {position} of the header row has no name; name every column.")
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate:
        raise PipelineError(f"{path}: the header names column '{duplicate}' twice; give every column its own name.")
    if label_column not in names:
        raise PipelineError(
            f"{path} has no column '{label_column}' (data.label_column); its columns are {', '.join(names)}: "
            "set data.label_column to the one holding the classes."
        )
    label = names.index(label_column)
    features = [i for i in range(len(names)) if i != label]
    if not features:
        raise PipelineError(f"{path} has no feature columns besides '{label_column}'; add at least one.")
    return label, features


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PipelineError(
            f"{path}: column '{column}' is not numeric (line {line} holds '{text}'); feature columns must hold "
            "numbers: encode it as numbers, or drop the column."
        ) from None
    if not math.isfinite(value):
        raise PipelineError(f"{path} line {line}, column '{column}': '{text}' is not a finite number.")
    return value


def _class_order(values: list[str]) -> tuple[str, ...]:
    """Class names sorted: numerically when every label is an integer (2 before 10), else as text."""
    distinct = set(values)
    try:
        return tuple(sorted(distinct, key=int))
    except ValueError:
        return tuple(sorted(distinct))


def parse_table(text: str, path: Path, label_column: str) -> Table:
    """The table's features and labels, or one sentence about the first problem found."""
    reader = csv.reader(io.StringIO(text))
    try:
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as err:
        raise PipelineError(f"{path} line {reader.line_num} is not valid CSV ({err}).") from None
    if not rows:
        raise PipelineError(f"{path} is empty; it needs a header row naming the columns, then one row per example.")
    names = [cell.strip() for cell in rows[0][1]]
    label, features = _header(names, path, label_column)
    if len(rows) == 1:
        raise PipelineError(f"{path} has a header row but no data rows.")
    values, labels = [], []
    for line, row in rows[1:]:
        if len(row) != len(names):
            raise PipelineError(f"{path} line {line} has {len(row)} values, but the header names {len(names)} columns.")
        cells = [cell.strip() for cell in row]
        empty = next((i for i, cell in enumerate(cells) if not cell), None)
        if empty is not None:
            raise PipelineError(
                f"{path} line {line}, column '{names[empty]}' has no value; fill in every value or drop the row."
            )
        values.append([_number(cells[i], path, line, names[i]) for i in features])
        labels.append(cells[label])
    class_names = _class_order(labels)
    if len(class_names) < 2:
        raise PipelineError(
            f"{path}: column '{label_column}' holds only one value ('{class_names[0]}'); a classifier needs "
            "at least two classes."
        )
    positions = {name: i for i, name in enumerate(class_names)}
    return Table(
        features=np.asarray(values, dtype=np.float64),
        labels=np.asarray([positions[name] for name in labels], dtype=np.int64),
        class_names=class_names,
        feature_names=tuple(names[i] for i in features),
    )


def read_table(path: Path, label_column: str) -> Table:
    return parse_table(decode_text(read_bytes(path), path), path, label_column)
