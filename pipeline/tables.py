"""Your own CSV table: a header row, one label column named by `data.label_column`, the rest features.

A feature column holds numbers, text, or ISO dates. A text column (a penguin's island) is one-hot encoded
into one 0/1 column per value, its values sorted, named `column=value`, as pandas' `get_dummies` does; a
date column (2021-03-04, or 2021-03-04T10:30) becomes numbers (pipeline/columns.py, DATE_FEATURES). The
values come from the whole table, so every split and predict encode alike: `Table.record` goes into
meta.json, and predict codes new rows with `columns.code_row`, the same function. `data.drop_columns`,
`data.feature_columns` and `data.group_column` choose the columns (`TableOptions`).

Refused, not encoded: a column mixing numbers and text (`12.5` beside `twelve` is a typo, which one-hot
encoding would hide); numbers in dress (`10%`, `1,500`, `$5`, a decimal comma), whose order encoding would
lose; and, all named in one sentence, every column that identifies rows rather than describes them: text
nearly unique per row (names, IDs), a row counter, more than `MAX_CATEGORIES` values, dates not written as
ISO dates. `NA`, `null` and pandas' other markers of "no value" (`columns.MISSING_MARKERS`) are missing
values in any column, as an empty cell is: kept as NaN here, for preprocess.missing to decide on. Values
may be separated by commas, semicolons or tabs (`delimiter_of`), lines may end as on any system.

Read with the standard library's csv module (a table that fits a classifier here fits in memory;
pandas would be a large dependency for no feature we use), in two passes that hold one row of
text at a time. Every problem is one sentence naming the file and the column or line.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.column_scan import ColumnScan, refusal
from pipeline.columns import code_row, encode, encoded_names, is_missing
from pipeline.errors import PipelineError
from pipeline.io.reading import read_limited
from pipeline.meta import TableRecord
from pipeline.progress import Progress

TABLE_FILE = "table.csv"  # the verified copy in data/raw/
# A table is parsed whole, in several times its size in memory: this caps that memory.
MAX_TABLE_BYTES = 256 * 2**20
DELIMITERS = (",", ";", "\t")
HEAD_CHARS = 65536


@dataclass(frozen=True)
class TableOptions:
    """Which columns of the file are what (data.label_column, .drop_columns, .feature_columns, .group_column)."""

    label_column: str
    drop_columns: tuple[str, ...] = ()
    feature_columns: tuple[str, ...] = ()  # () = every column but the label, the group and the dropped ones
    group_column: str = ""

    def manifest(self) -> dict[str, Any]:
        return {"label_column": self.label_column, "drop_columns": list(self.drop_columns),
                "feature_columns": list(self.feature_columns), "group_column": self.group_column}  # fmt: skip


@dataclass(frozen=True)
class Table:
    coded: np.ndarray  # (N, C) float64, one per feature column, NaN where missing (pipeline/columns.py)
    labels: np.ndarray  # (N,) int64 indices into class_names; -1 where the label is missing
    class_names: tuple[str, ...]
    record: TableRecord  # the feature columns as the file names them, in its order; text and date columns
    lines: np.ndarray  # (N,) int64: each row's line in the file, for messages and reports/misclassified.csv
    groups: np.ndarray | None = None  # (N,) str: data.group_column's value per row

    @property
    def feature_names(self) -> tuple[str, ...]:
        return encoded_names(self.record)

    @property
    def features(self) -> np.ndarray:
        """The unscaled features, for a table without missing values."""
        return encode(self.coded, self.record, [f"line {line}" for line in self.lines])


def read_bytes(path: Path) -> bytes:
    return read_limited(
        path, MAX_TABLE_BYTES, unreadable="give data.source a CSV file.",
        too_large="a table is parsed whole, in several times its size in memory, so this pipeline reads no larger ones "
        "(pipeline/tables.py, MAX_TABLE_BYTES): sample its rows, or drop columns.",
    )  # fmt: skip


def decode_text(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")  # -sig: the byte-order mark spreadsheet programs write
    except UnicodeDecodeError as err:
        raise PipelineError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 CSV."
        ) from None


def _header(names: list[str], path: Path, options: TableOptions) -> tuple[int, list[int], int | None]:
    """Positions of the label column, of the feature columns and of the group column, from the header row."""
    for position, name in enumerate(names, start=1):
        if not name:
            raise PipelineError(f"{path}: column {position} of the header row has no name; name every column.")
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate:
        raise PipelineError(f"{path}: the header names column '{duplicate}' twice; give every column its own name.")
    if options.label_column not in names:
        raise PipelineError(
            f"{path} has no column '{options.label_column}' (data.label_column); its columns are {', '.join(names)}: "
            "set data.label_column to the one holding the classes."
        )
    named = {"drop_columns": options.drop_columns, "feature_columns": options.feature_columns,
             "group_column": (options.group_column,) if options.group_column else ()}  # fmt: skip
    unknown = [f"'{name}' (data.{key})" for key, listed in named.items() for name in listed if name not in names]
    if unknown:
        raise PipelineError(
            f"{path} has no column {', '.join(unknown)}; its columns are {', '.join(names)}: name only those."
        )
    if options.label_column in options.drop_columns + options.feature_columns + named["group_column"]:
        raise PipelineError(
            f"data.drop_columns, data.feature_columns or data.group_column names the label column "
            f"'{options.label_column}'; it holds the classes: leave it out of them."
        )
    chosen = options.feature_columns or tuple(names)
    left_out = {options.label_column, options.group_column, *options.drop_columns}
    features = [i for i, name in enumerate(names) if name in chosen and name not in left_out]
    if not features:
        raise PipelineError(f"{path} has no feature columns besides '{options.label_column}'; add at least one.")
    group = names.index(options.group_column) if options.group_column else None
    return names.index(options.label_column), features, group


def _number(text: str, path: Path, line: int, column: str) -> float:
    value = float(text)  # a numeric column: every cell parses (the scan checked)
    if not math.isfinite(value):
        raise PipelineError(f"{path} line {line}, column '{column}': '{text}' is not a finite number.")
    return value


def delimiter_of(text: str) -> str:
    """The character between a CSV text's values: of `DELIMITERS`, the one its first non-blank line holds most
    often outside quotes (a comma when none): spreadsheets write `;` where the decimal mark is a comma."""
    head = text[:HEAD_CHARS]  # a header line of a million characters need not be copied whole to be counted
    first = next((line for line in io.StringIO(head, newline=None) if line.strip()), "")
    unquoted = "".join(first.split('"')[::2])
    return max(DELIMITERS, key=unquoted.count)  # max keeps the first of equals: the comma


def csv_reader(text: str) -> Any:
    """A csv.reader of `text` with its own delimiter (`delimiter_of`) and any line ends (\\n, \\r\\n, old Macs' \\r)."""
    return csv.reader(io.StringIO(text, newline=None), delimiter=delimiter_of(text))


def _data_rows(text: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every row that is not blank, the header first."""
    reader = csv_reader(text)
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, row
    except csv.Error as err:
        raise PipelineError(f"{path} line {reader.line_num} is not valid CSV ({err}).") from None


def _class_order(values: list[str]) -> tuple[str, ...]:
    """Class names sorted: numerically when every label is an integer (2 before 10), else as text."""
    distinct = set(values)
    try:
        return tuple(sorted(distinct, key=int))
    except ValueError:
        return tuple(sorted(distinct))


def _scan(text: str, path: Path, options: TableOptions) -> tuple[list[str], list[int], int | None, dict, list[str]]:
    """The first pass: every row checked, each feature column's kind learnt, the labels read."""
    rows = _data_rows(text, path)
    header = next(rows, None)
    if header is None:
        raise PipelineError(f"{path} is empty; it needs a header row naming the columns, then one row per example.")
    names = [cell.strip() for cell in header[1]]
    label, features, group = _header(names, path, options)
    scans = {names[i]: ColumnScan() for i in features}
    labels, progress = [], Progress(f"checking {path}", unit="rows")
    for line, row in rows:
        progress.advance()
        if len(row) != len(names):
            raise PipelineError(f"{path} line {line} has {len(row)} values, but the header names {len(names)} columns.")
        for position in features:
            scans[names[position]].add(row[position].strip(), line)
        labels.append(row[label].strip())
    progress.finish()
    if not labels:
        raise PipelineError(f"{path} has a header row but no data rows.")
    return names, features, group, scans, labels


def parse_table(text: str, path: Path, options: TableOptions | str) -> Table:
    """The table's coded features and labels, or one sentence about what stops it being read.

    Two passes over the text, one row in memory at a time: the first checks every row and learns which
    columns hold numbers, text or dates, the second writes the coded values into one array: holding every
    cell as a Python string would take many times the file's size in memory. Missing values stay NaN
    (label -1): preprocess.missing decides what becomes of them, in the preprocess stage.
    """
    options = TableOptions(options) if isinstance(options, str) else options
    names, features, group, scans, labels = _scan(text, path, options)
    class_names = _class_order([value for value in labels if not is_missing(value)])
    if len(class_names) < 2:
        raise PipelineError(
            f"{path}: column '{options.label_column}' holds only one value ('{''.join(class_names[:1])}'); a "
            "classifier needs at least two classes."
        )
    kinds = {name: scan.kind(name, path) for name, scan in scans.items()}
    refused = {name: why[0] for name, (kind, why) in kinds.items() if kind == "refused"}
    if refused:
        raise refusal(path, refused)
    record = TableRecord(
        columns=tuple(scans),
        categories={name: values for name, (kind, values) in kinds.items() if kind == "text"},
        dates={name: values for name, (kind, values) in kinds.items() if kind == "date"},
    )
    coded = np.empty((len(labels), len(features)), dtype=np.float64)
    lines, group_values = np.empty(len(labels), dtype=np.int64), []
    rows, progress = _data_rows(text, path), Progress(f"converting {path}", len(labels), "rows")
    next(rows)  # the header
    for row_index, (line, row) in enumerate(rows):
        progress.advance()
        number = lambda cell, column, line=line: _number(cell, path, line, column)  # noqa: E731
        coded[row_index] = code_row([row[i].strip() for i in features], record, number, f"{path} line {line}")
        lines[row_index] = line
        if group is not None:
            group_values.append(row[group].strip())
    progress.finish()
    positions = {name: i for i, name in enumerate(class_names)}
    return Table(
        coded=coded,
        labels=np.asarray([positions.get(name, -1) for name in labels], dtype=np.int64),
        class_names=class_names,
        record=record,
        lines=lines,
        groups=np.asarray(group_values, dtype=str) if group is not None else None,
    )


def read_table(path: Path, options: TableOptions | str, shown: Path | None = None) -> Table:
    """The table at `path`; messages name `shown` (the user's file, of which `path` is the copy)."""
    return parse_table(decode_text(read_bytes(path), shown or path), shown or path, options)
