"""A table's cells as the model's features: dates as numbers, text one-hot, missing values filled.

`pipeline.tables` reads a table into one *coded* number per cell: a numeric column's value, a text
column's position among its sorted values, a date's seconds since 1970-01-01 as written (a time zone
offset is ignored: the clock time is what describes the row), NaN for a missing cell. `code_row` codes
one row of text, `encode` turns coded rows into features (missing cells filled with the imputed values
first, text one-hot, each date as `DATE_FEATURES`); preprocess and predict both call these two, so new
rows become features exactly as the training rows did. Pure functions: arrays and rows in, arrays out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import numpy as np

from pipeline.errors import PipelineError
from pipeline.meta import TableRecord

# What a spreadsheet, R or pandas writes for "no value" (pandas' read_csv defaults): a missing value,
# never a number (`nan`) or a text column's category (`NA` beside `male`, `female`).
MISSING_MARKERS = frozenset(
    ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
     "NULL", "NaN", "None", "n/a", "nan", "null")
)  # fmt: skip
# A date column's features; a column of date-times also gets `hour` (hours since midnight, minutes as fractions).
DATE_FEATURES = ("year", "month", "day", "weekday", "day_of_year")  # weekday: Monday 0 .. Sunday 6
TIME_FEATURE = "hour"
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
# 03/04/2021, 3-4-21, 2021/03/04: a date, but which day is ambiguous, so it is refused rather than guessed. One
# separator twice and a four-digit year (two digits only with / or -), so that a version such as 1.2.3 stays text.
OTHER_DATE = re.compile(
    r"(?:\d{4}([/.\-])\d{1,2}\1\d{1,2}|\d{1,2}([/.\-])\d{1,2}\2\d{4}|\d{1,2}([/\-])\d{1,2}\3\d{2})"
    r"(?:[T ]\d{1,2}:\d{2}.*)?"
)


def is_number(text: str) -> bool:
    """Whether a cell reads as a number (as float() reads it): a table's scan and predict's header check agree."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_missing(cell: str) -> bool:
    return cell in MISSING_MARKERS


def date_seconds(text: str) -> float | None:
    """An ISO date or date-time's seconds since 1970-01-01 as written (offset ignored), or None if not one."""
    if not ISO_DATE.fullmatch(text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:  # 2021-02-30: shaped like a date, not one
        return None
    return (moment.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()


def date_feature_names(with_time: bool) -> tuple[str, ...]:
    return (*DATE_FEATURES, TIME_FEATURE) if with_time else DATE_FEATURES


def date_features(seconds: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(N,) seconds since 1970 -> (N, len(names)) of `DATE_FEATURES` (and `hour`), in `names` order."""
    moments = np.round(seconds).astype("datetime64[s]")
    days = moments.astype("datetime64[D]")
    months, years = days.astype("datetime64[M]"), days.astype("datetime64[Y]")
    every = {
        "year": years.astype(np.int64) + 1970,
        "month": (months - years.astype("datetime64[M]")).astype(np.int64) + 1,
        "day": (days - months.astype("datetime64[D]")).astype(np.int64) + 1,
        "weekday": (days.astype(np.int64) + 3) % 7,  # 1970-01-01 was a Thursday
        "day_of_year": (days - years.astype("datetime64[D]")).astype(np.int64) + 1,
        TIME_FEATURE: (moments - days.astype("datetime64[s]")).astype(np.int64) / 3600.0,
    }
    return np.stack([every[name].astype(np.float64) for name in names], axis=1)


def _iso(seconds: float) -> str:
    return str(np.datetime64(int(round(seconds)), "s"))


def code_row(cells: Sequence[str], record: TableRecord, number: Callable[[str, str], float], where: str) -> list[float]:
    """One row's feature cells, in `record.columns` order -> coded values (NaN where missing).

    `number(text, column)` reads a numeric cell; a text cell must be one of the column's values, a date an ISO date.
    """
    coded: list[float] = []
    for column, cell in zip(record.columns, cells, strict=True):
        if is_missing(cell):
            coded.append(np.nan)
        elif column in record.dates:
            seconds = date_seconds(cell)
            if seconds is None:
                raise PipelineError(
                    f"{where}, column '{column}': '{cell}' is not an ISO date (YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SS) "
                    "as the training values were; write it so."
                )
            coded.append(seconds)
        elif column in record.categories:
            values = record.categories[column]
            if cell not in values:
                raise PipelineError(
                    f"{where}, column '{column}': '{cell}' is not one of the values the model was trained on "
                    f"({', '.join(values)}); use one of them, or retrain with rows that hold it."
                )
            coded.append(float(values.index(cell)))
        else:
            coded.append(number(cell, column))
    return coded


def fit_fill(coded_train: np.ndarray, record: TableRecord) -> dict[str, float | str]:
    """The value each column's missing cells get, from the training rows only: a numeric column's median,
    a text column's most frequent value (the first in sort order among equals), a date column's median date."""
    fill: dict[str, float | str] = {}
    for j, column in enumerate(record.columns):
        present = coded_train[:, j][~np.isnan(coded_train[:, j])]
        if not len(present):
            raise PipelineError(
                f"column '{column}' has no value in any row of the training split, so nothing to impute from; "
                "drop it with data.drop_columns."
            )
        if column in record.categories:
            codes, counts = np.unique(present, return_counts=True)
            fill[column] = record.categories[column][int(codes[np.argmax(counts)])]
        elif column in record.dates:
            fill[column] = _iso(float(np.median(present)))
        else:
            fill[column] = float(np.median(present))
    return fill


def _coded_fill(column: str, value: float | str, record: TableRecord) -> float:
    if column in record.categories:
        return float(record.categories[column].index(str(value)))
    if column in record.dates:
        seconds = date_seconds(str(value))
        assert seconds is not None  # fit_fill wrote it as an ISO date
        return seconds
    return float(value)


def fill_missing(coded: np.ndarray, record: TableRecord, names: Sequence[str]) -> np.ndarray:
    """`coded` with every missing cell set to `record.fill`'s value; refused where the model has none (it was
    trained without preprocess.missing=impute). `names` says where each row comes from, for that refusal."""
    filled = coded.copy()
    for j, column in enumerate(record.columns):
        missing = np.isnan(filled[:, j])
        if not missing.any():
            continue
        if column not in record.fill:
            raise PipelineError(
                f"{names[int(np.argmax(missing))]}, column '{column}' has no value; fill in every value: this model "
                "was trained without preprocess.missing=impute, so it has no value to fill in."
            )
        filled[missing, j] = _coded_fill(column, record.fill[column], record)
    return filled


def encode(coded: np.ndarray, record: TableRecord, names: Sequence[str]) -> np.ndarray:
    """Coded rows (N, columns) -> the model's unscaled features (N, record.width), in `encoded_names` order."""
    filled = fill_missing(coded, record, names)
    blocks = []
    for j, column in enumerate(record.columns):
        if column in record.categories:
            blocks.append((filled[:, j, None] == np.arange(len(record.categories[column]))).astype(np.float64))
        elif column in record.dates:
            blocks.append(date_features(filled[:, j], record.dates[column]))
        else:
            blocks.append(filled[:, j, None])
    return np.concatenate(blocks, axis=1) if blocks else np.empty((len(coded), 0))


def encoded_names(record: TableRecord) -> tuple[str, ...]:
    """The model's input names: a numeric column's own, a text column's `column=value` per value, a date
    column's `column.year`, `column.month`, ... per feature."""
    names: list[str] = []
    for column in record.columns:
        if column in record.categories:
            names.extend(f"{column}={value}" for value in record.categories[column])
        elif column in record.dates:
            names.extend(f"{column}.{feature}" for feature in record.dates[column])
        else:
            names.append(column)
    return tuple(names)


def missing_summary(coded: np.ndarray, labels: np.ndarray, columns: Sequence[str], label_column: str) -> str:
    """Which columns hold how many missing cells, most first: "'bill_length_mm' 2, 'sex' 11"."""
    counts: Mapping[str, int] = {name: int(np.isnan(coded[:, j]).sum()) for j, name in enumerate(columns)}
    counts = {**counts, label_column: int((labels < 0).sum())}
    return ", ".join(f"'{name}' {count}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1]) if count)


def complete_rows(
    coded: np.ndarray,
    labels: np.ndarray,
    record: TableRecord,
    policy: str,
    *,
    lines: np.ndarray,
    names: tuple[str, str],
) -> np.ndarray:
    """Which rows preprocess.missing keeps, as a mask: refuse keeps all or stops, drop_rows keeps the rows with
    every value, impute those with a label (their other cells it fills, `fit_fill`). `lines`: each row's line;
    `names`: the file's and the label column's, for the refusal."""
    path, label_column = names
    missing, unlabelled = np.isnan(coded), labels < 0
    incomplete = missing.any(axis=1) | unlabelled
    if policy == "refuse" and incomplete.any():
        first = int(np.argmax(incomplete))
        column = record.columns[int(np.argmax(missing[first]))] if missing[first].any() else label_column
        count = int(incomplete.sum())
        rows = "1 row has" if count == 1 else f"{count} rows have"
        raise PipelineError(
            f"{path}: {rows} missing values, first at line {lines[first]}, column '{column}'; set "
            "preprocess.missing to drop_rows (leave such rows out) or impute (fill each cell from its column in the "
            "training split), or fill them in."
        )
    return ~incomplete if policy == "drop_rows" else ~unlabelled


def encode_splits(
    coded: Mapping[str, np.ndarray], record: TableRecord, impute: bool, sources: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], TableRecord]:
    """Each split's coded rows -> unscaled features, and the record predict needs: with `impute`, the fill values,
    fitted on the training split only, so neither validation nor test leaks into them."""
    if impute:
        record = record.model_copy(update={"fill": fit_fill(coded["train"], record)})
    return {name: encode(rows, record, sources[name]) for name, rows in coded.items()}, record
