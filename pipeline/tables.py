"""Your own CSV table: a header row, one label column named by `data.label_column`, the rest features.

A feature column holds numbers, or only text: a text column (a penguin's island, a car's make) is
one-hot encoded into one 0/1 column per value, its values sorted, named `column=value`, as pandas'
`get_dummies` does. The values come from the whole table, so every split and predict encode
alike; `Table.record()` goes into meta.json, and predict encodes new rows with `encode_row`, the
same function. A column mixing numbers and text is refused, not encoded: `12.5` beside `twelve` is a
typo, which one-hot encoding would hide. `NA`, `null` and pandas' other markers of
"no value" (`MISSING_MARKERS`) are missing values in any column, as an empty cell is. A text column
whose every value is a number in dress (`10%`, `1,500`, `$5`, a decimal comma) is refused too: encoded,
its values would lose their order. Values may be separated by commas, semicolons or tabs
(`delimiter_of`), lines may end as on any system.

Read with the standard library's csv module (a table that fits a classifier here fits in memory;
pandas would be a large dependency for no feature we use), in two passes that hold one row of
text at a time. Every problem is one sentence naming the file and the column or line: an empty
file, a missing label column, a ragged row, a missing value, a column mixing numbers and text, a
non-finite feature value, a text column with more than `MAX_CATEGORIES` values (an identifier, not
a feature), a label with only one value, a file over `MAX_TABLE_BYTES`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io.reading import read_limited
from pipeline.progress import Progress

TABLE_FILE = "table.csv"  # the verified copy in data/raw/
# A table is parsed whole, in several times its size in memory: this caps that memory.
MAX_TABLE_BYTES = 256 * 2**20
DELIMITERS = (",", ";", "\t")
HEAD_CHARS = 65536
MAX_CATEGORIES = 50  # values of one text column; more make as many columns, and an id column would pass
# What a spreadsheet, R or pandas writes for "no value" (pandas' read_csv defaults): a missing value,
# never a number (`nan`) or a text column's category (`NA` beside `male`, `female`).
MISSING_MARKERS = frozenset(
    ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
     "NULL", "NaN", "None", "n/a", "nan", "null")
)  # fmt: skip


@dataclass(frozen=True)
class Table:
    features: np.ndarray  # (N, F) float64, unscaled; each text column as one 0/1 column per value
    labels: np.ndarray  # (N,) int64 indices into class_names
    class_names: tuple[str, ...]
    columns: tuple[str, ...]  # the feature columns as the file names them, in its order
    categories: dict[str, tuple[str, ...]]  # each text column's values, sorted: its one-hot columns

    @property
    def feature_names(self) -> tuple[str, ...]:
        return encoded_names(self.columns, self.categories)

    def record(self) -> dict[str, Any]:
        """What meta.json stores, so predict reads and encodes new rows exactly so."""
        return {"columns": list(self.columns), "categories": {k: list(v) for k, v in self.categories.items()}}


def encoded_names(columns: Sequence[str], categories: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The model's input names: a numeric column's own name, a text column's `column=value` per value."""
    return tuple(
        name
        for column in columns
        for name in ([f"{column}={value}" for value in categories[column]] if column in categories else [column])
    )


def _shown(marker: str) -> str:
    return f" ('{marker}')" if marker else ""  # an empty cell needs no quotes


def encode_row(
    cells: Sequence[str],
    columns: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    number: Callable[[str, str], float],
    where: str,
) -> list[float]:
    """One row's feature cells, in `columns` order -> its features; `number(text, column)` reads a numeric cell."""
    features: list[float] = []
    for column, cell in zip(columns, cells, strict=True):
        if cell in MISSING_MARKERS:
            raise PipelineError(
                f"{where}, column '{column}' has no value{_shown(cell)}; fill in every value or drop the row."
            )
        if column not in categories:
            features.append(number(cell, column))
            continue
        values = categories[column]
        if cell not in values:
            raise PipelineError(
                f"{where}, column '{column}': '{cell}' is not one of the values the model was trained on "
                f"({', '.join(values)}); use one of them, or retrain with rows that hold it."
            )
        features.extend(1.0 if cell == value else 0.0 for value in values)
    return features


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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _written_number(text: str) -> bool:
    """Whether a text value is a number in dress: '10%', '$5', '1,500', '2,5' (a decimal comma), "1'000"."""
    core = text.lstrip("+-").strip("$€£¥% ").replace(" ", "").replace("'", "")
    return any(c.isdigit() for c in core) and (_is_number(core.replace(",", "")) or _is_number(core.replace(",", ".")))


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


@dataclass
class _Column:
    """What the scan learns of one feature column: whether it holds numbers, text, or both."""

    numbers: int = 0
    texts: set[str] = field(default_factory=set)
    first_text: tuple[int, str] | None = None  # (line, value): named when the column mixes both

    def categories(self, name: str, path: Path) -> tuple[str, ...] | None:
        """A text column's sorted values, None for a numeric one; a column mixing both, of numbers written as
        text, or of too many values, is refused."""
        if self.first_text is None:
            return None
        line, text = self.first_text
        if _written_number(text) and (self.numbers or all(_written_number(value) for value in self.texts)):
            raise PipelineError(
                f"{path}: column '{name}' holds numbers written as text (line {line} holds '{text}'); write them as "
                "plain numbers with a decimal point, without units or thousands separators (10% as 10 or 0.1, "
                "1,500 as 1500, 2,5 as 2.5), or they would become categories."
            )
        if self.numbers:
            raise PipelineError(
                f"{path}: column '{name}' holds numbers and text (line {line} holds '{text}'); a feature column "
                "holds numbers, or only text (one-hot encoded): fix the value, or drop the row."
            )
        if len(self.texts) > MAX_CATEGORIES:
            raise PipelineError(
                f"{path}: text column '{name}' holds {len(self.texts)} different values, more than the "
                f"{MAX_CATEGORIES} one-hot encoding takes (one column each); drop it if it identifies rows, "
                "or encode it as numbers."
            )
        return tuple(sorted(self.texts))


def _class_order(values: list[str]) -> tuple[str, ...]:
    """Class names sorted: numerically when every label is an integer (2 before 10), else as text."""
    distinct = set(values)
    try:
        return tuple(sorted(distinct, key=int))
    except ValueError:
        return tuple(sorted(distinct))


def parse_table(text: str, path: Path, label_column: str) -> Table:
    """The table's features and labels, or one sentence about the first problem found.

    Two passes over the text, one row in memory at a time: the first checks every row and learns which
    columns hold text, the second writes the features into one array: holding every cell as a Python
    string would take many times the file's size in memory.
    """
    rows = _data_rows(text, path)
    header = next(rows, None)
    if header is None:
        raise PipelineError(f"{path} is empty; it needs a header row naming the columns, then one row per example.")
    names = [cell.strip() for cell in header[1]]
    label, features = _header(names, path, label_column)
    scans = [_Column() for _ in features]
    labels, progress = [], Progress(f"checking {path}", unit="rows")
    for line, row in rows:
        progress.advance()
        if len(row) != len(names):
            raise PipelineError(f"{path} line {line} has {len(row)} values, but the header names {len(names)} columns.")
        stripped = [cell.strip() for cell in row]
        empty = next((i for i, cell in enumerate(stripped) if cell in MISSING_MARKERS), None)
        if empty is not None:
            raise PipelineError(
                f"{path} line {line}, column '{names[empty]}' has no value{_shown(stripped[empty])}; fill in every "
                "value or drop the row."
            )
        for scan, position in zip(scans, features, strict=True):
            cell = stripped[position]
            if _is_number(cell):
                scan.numbers += 1
            else:
                scan.texts.add(cell)
                scan.first_text = scan.first_text or (line, cell)
        labels.append(stripped[label])
    progress.finish()
    if not labels:
        raise PipelineError(f"{path} has a header row but no data rows.")
    class_names = _class_order(labels)
    if len(class_names) < 2:
        raise PipelineError(
            f"{path}: column '{label_column}' holds only one value ('{class_names[0]}'); a classifier needs "
            "at least two classes."
        )
    columns = tuple(names[i] for i in features)
    found = {column: scan.categories(column, path) for column, scan in zip(columns, scans, strict=True)}
    categories = {column: values for column, values in found.items() if values is not None}
    values = np.empty((len(labels), len(encoded_names(columns, categories))), dtype=np.float64)
    rows, progress = _data_rows(text, path), Progress(f"converting {path}", len(labels), "rows")
    next(rows)  # the header
    for row_index, (line, row) in enumerate(rows):
        progress.advance()
        cells = [row[i].strip() for i in features]
        number = lambda cell, column, line=line: _number(cell, path, line, column)  # noqa: E731
        values[row_index] = encode_row(cells, columns, categories, number, "")
    progress.finish()
    positions = {name: i for i, name in enumerate(class_names)}
    return Table(
        features=values,
        labels=np.asarray([positions[name] for name in labels], dtype=np.int64),
        class_names=class_names,
        columns=columns,
        categories=categories,
    )


def read_table(path: Path, label_column: str) -> Table:
    return parse_table(decode_text(read_bytes(path), path), path, label_column)
