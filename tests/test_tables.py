"""Tables as people have them: gaps, dates, identifiers, groups; read from real files written here, unit by unit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import folders
from pipeline.columns import OTHER_DATE, complete_rows, date_features, encode_splits
from pipeline.datasets import RAW_MANIFEST, REGISTRY, RawDataset
from pipeline.errors import PipelineError
from pipeline.evaluation import misclassified_rows
from pipeline.folders import name_group
from pipeline.inputs import parse_csv
from pipeline.meta import load_meta
from pipeline.prediction import csv_rows
from pipeline.preprocessing import scale_splits, split_dataset, stratified_split
from pipeline.tables import TableOptions, read_table

# Penguins as a public CSV has them: NA cells, an ISO date, a name per row, a row counter, the nest (a group).
PENGUINS = """rowid,name,nest,island,bill_length_mm,date_egg,sex,species
1,Ann,N1,Torgersen,39.1,2007-11-11,male,Adelie
2,Bea,N2,Torgersen,39.5,2007-11-11,female,Adelie
3,Cid,N1,Biscoe,NA,2007-11-16,,Gentoo
4,Dot,N2,Biscoe,46.5,2007-11-16,female,Gentoo
5,Eve,N3,Dream,36.7,NA,female,Adelie
6,Fay,N3,Dream,47.4,2008-11-09,male,Gentoo
7,Gus,N4,Torgersen,38.9,2008-11-09,female,Adelie
8,Hal,N4,Biscoe,48.7,2008-11-13,male,Gentoo
9,Ivy,N5,Dream,37.8,2009-11-10,female,Adelie
10,Jon,N5,Biscoe,50.0,2009-11-10,male,Gentoo
11,Kim,N6,Torgersen,41.1,2009-11-16,male,Adelie
12,Lou,N6,Biscoe,47.5,2009-11-16,female,Gentoo
"""
CHOSEN = TableOptions("species", drop_columns=("rowid", "name"), group_column="nest")


@pytest.fixture
def penguins(tmp_path: Path) -> Path:
    path = tmp_path / "penguins.csv"
    path.write_text(PENGUINS)
    return path


def raw_of(path: Path, options: TableOptions = CHOSEN) -> RawDataset:
    """The table as the download stage leaves it for preprocess (`datasets._read_table_copy`)."""
    table = read_table(path, options)
    return RawDataset(
        "csv", "tabular", table.coded, table.labels, None, None, table.class_names, None, table.feature_names,
        table=table.record, origin=str(path), label_column=options.label_column, lines=table.lines,
        groups=table.groups,
    )  # fmt: skip


def test_every_column_that_identifies_rows_is_named_in_one_message(penguins: Path) -> None:
    long = penguins.with_name("long.csv")  # enough rows for the identifier and counter rules
    rows = PENGUINS.splitlines()
    long.write_text("\n".join([rows[0]] + [f"{i},P{i},{r.split(',', 2)[2]}" for i, r in enumerate(rows[1:] * 2, 1)]))
    with pytest.raises(PipelineError) as refused:
        read_table(long, TableOptions("species"))
    message = str(refused.value)
    assert "has 2 columns that cannot be features: 'rowid' counts the rows (1, 2, 3, ...); 'name' holds a " in message
    assert "drop them with data.drop_columns: [rowid, name]" in message and "\n" not in message
    table = read_table(long, TableOptions("species", drop_columns=("rowid", "name", "nest")))
    assert table.record.columns == ("island", "bill_length_mm", "date_egg", "sex")


def test_columns_are_chosen_by_name_and_a_wrong_name_is_said(penguins: Path) -> None:
    table = read_table(penguins, TableOptions("species", feature_columns=("island", "bill_length_mm")))
    assert table.feature_names == ("island=Biscoe", "island=Dream", "island=Torgersen", "bill_length_mm")
    with pytest.raises(PipelineError, match=r"has no column 'beak' \(data.drop_columns\), 'isle' \(data.feature_col"):
        read_table(penguins, TableOptions("species", drop_columns=("beak",), feature_columns=("isle",)))
    with pytest.raises(PipelineError, match="names the label column 'species'"):
        read_table(penguins, TableOptions("species", drop_columns=("species",)))


def test_iso_dates_become_year_month_day_weekday_and_day_of_year(penguins: Path) -> None:
    table = read_table(penguins, CHOSEN)
    assert table.record.dates == {"date_egg": ("year", "month", "day", "weekday", "day_of_year")}
    seconds = table.coded[:1, table.record.columns.index("date_egg")]
    assert date_features(seconds, table.record.dates["date_egg"]).tolist() == [[2007, 11, 11, 6, 315]]  # a Sunday
    stamp = np.array([(np.datetime64("2024-02-29T18:30") - np.datetime64("1970-01-01T00:00")) / np.timedelta64(1, "s")])
    assert date_features(stamp, ("day_of_year", "weekday", "hour")).tolist() == [[60, 3, 18.5]]
    other = penguins.with_name("us.csv")
    other.write_text("when,x,label\n11/03/2007,1,a\n12/03/2007,2,b\n")
    with pytest.raises(PipelineError, match=r"'when' holds dates not written as ISO dates \('11/03/2007' on line 2"):
        read_table(other, "label")


def test_missing_values_are_refused_dropped_or_imputed_from_the_training_split(penguins: Path) -> None:
    raw = raw_of(penguins)
    coded, labels, record = raw.x_train, raw.y_train, raw.table
    assert record is not None
    refuse = r"penguins.csv: 2 rows have missing values, first at line 4, column 'bill_length_mm'; set preprocess.miss"
    with pytest.raises(PipelineError, match=refuse):
        complete_rows(coded, labels, record, "refuse", lines=raw.lines, names=(raw.origin, "species"))
    kept = complete_rows(coded, labels, record, "drop_rows", lines=raw.lines, names=(raw.origin, "species"))
    assert raw.lines[~kept].tolist() == [4, 6]  # line 4 lacks two values, line 6 one
    assert complete_rows(coded, labels, record, "impute", lines=raw.lines, names=(raw.origin, "species")).all()
    train, test = np.arange(8), np.arange(8, 12)
    names = {"train": raw.lines[train].astype(str), "test": raw.lines[test].astype(str)}
    features, filled = encode_splits({"train": coded[train], "test": coded[test]}, record, True, names)
    train_bills = [39.1, 39.5, 46.5, 36.7, 47.4, 38.9, 48.7]  # the NA of line 4 left out; test rows never counted
    assert filled.fill["bill_length_mm"] == float(np.median(train_bills))
    assert filled.fill["sex"] == "female" and filled.fill["date_egg"] == "2007-11-16T00:00:00"
    assert np.isfinite(features["train"]).all() and features["train"].shape == (8, len(features["test"][0]))


def test_groups_stay_in_one_split_and_ungrouped_splits_are_unchanged(penguins: Path) -> None:
    raw = raw_of(penguins)
    grouped = split_dataset(raw, 0.25, 0.34, 42)
    group_of, splits_of = dict(zip(raw.lines.tolist(), raw.groups.tolist(), strict=True)), {}
    for name, sources in grouped.sources.items():
        for source in sources:  # "…/penguins.csv line 5"
            splits_of.setdefault(group_of[int(source.rsplit(" ", 1)[1])], set()).add(name)
    assert len(splits_of) == 6 and all(len(names) == 1 for names in splits_of.values()), splits_of
    labels = np.repeat([0, 1, 2], 40)
    ungrouped = RawDataset("x", "tabular", np.arange(120.0)[:, None], labels, None, None, ("a", "b", "c"))
    split = split_dataset(ungrouped, 0.1, 0.2, 42)
    pool, test = stratified_split(labels, 0.2, 42)
    assert split.x["test"][:, 0].tolist() == test.tolist()
    assert split.x["val"][:, 0].tolist() == pool[stratified_split(labels[pool], 0.1, 43)[1]].tolist()


@pytest.mark.parametrize(
    ("names", "together"),
    [(["a/icon_16.png", "a/icon_32.png", "a/icon@2x.png", "a/icon-64x64.png"], True),
     (["a/cat.jpg", "a/cat (2).jpg", "a/cat_1.jpg"], True),
     (["a/01.png", "a/02.png"], False), (["a/icon.png", "b/icon.png"], False)],
)  # fmt: skip
def test_image_files_differing_by_a_size_or_index_suffix_are_one_group(names: list[str], together: bool) -> None:
    assert (len({name_group(name) for name in names}) == 1) is together


def test_predict_fills_new_rows_as_training_did_and_says_when_a_header_does_not_match(penguins: Path) -> None:
    raw = raw_of(penguins, TableOptions("species", feature_columns=("island", "bill_length_mm", "date_egg")))
    labelled = split_dataset(raw, 0.2, 0.34, 42)
    assert raw.table is not None
    x, record = encode_splits(labelled.x, raw.table, True, labelled.sources)
    _, meta = scale_splits(replace(raw, table=record), replace(labelled, x=x))
    meta = load_meta(meta.dump(), "meta.json")
    batch = parse_csv("id,date_egg,island,bill_length_mm\nq1,2008-01-01,Dream,NA\nq2,,Biscoe,40\n", Path("n.csv"),
                      meta, "id")  # fmt: skip
    assert batch.labels == ("q1", "q2") and np.isfinite(batch.x).all()
    bill = meta.feature_names.index("bill_length_mm")
    expected = (record.fill["bill_length_mm"] - meta.scaling.min[bill]) / meta.scaling.range[bill]
    assert batch.x[0, bill] == pytest.approx(expected)
    with pytest.raises(PipelineError, match=r"n.csv: the first row names the columns \['Island', 'Bill', 'Date'\]"):
        parse_csv("Island,Bill,Date\nDream,40,2008-01-01\n", Path("n.csv"), meta)


def test_results_as_csv_rows_and_misclassified_examples_most_confident_first() -> None:
    assert csv_rows(["a.png"], [[("cat", 0.75), ("dog", 0.25)]]) == [
        {"input": "a.png", "class_1": "cat", "probability_1": 0.75, "class_2": "dog", "probability_2": 0.25}
    ]
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    rows = misclassified_rows(["a.png", "b.png", "c.png", "d.png"], probabilities, np.array([0, 0, 0, 1]), ("x", "y"))
    assert [(r["source"], r["predicted"], r["probability"]) for r in rows] == [
        ("c.png", "y", 0.8), ("d.png", "x", 0.7), ("b.png", "y", 0.6)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "is_date"),
    [("11/03/2007", True), ("11.03.2007", True), ("2007/03/11", True), ("3-11-07", True), ("1.2.3", False),
     ("1.2.34", False), ("10.2", False)],
)  # fmt: skip
def test_dates_in_other_orders_are_told_from_version_numbers(value: str, is_date: bool) -> None:
    """A non-ISO date is refused (its day is ambiguous); a version number such as 1.2.3 is text, not a date."""
    assert bool(OTHER_DATE.fullmatch(value)) is is_date


def test_an_image_folder_grouped_by_name_keeps_each_icon_in_one_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data.group_by_name: the same icon at two sizes (icon-c_16.png, icon-c_32.png) never lands in two splits."""
    monkeypatch.chdir(tmp_path)
    for label in ("circle", "square"):
        for icon in range(12):
            for size in (16, 32):
                path = Path("data/own/icons") / label / f"icon-{chr(97 + icon)}_{size}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (size, size), 40 * (icon % 6)).save(path)
    raw_folder = tmp_path / "raw"
    raw_folder.mkdir()
    (raw_folder / folders.INDEX_FILE).write_text(json.dumps(folders.index_folder(Path("data/own/icons"))))
    for group_by_name, expect_apart in ((True, True), (False, False)):
        manifest = {"dataset": "image_folder", "source": "data/own/icons", "group_by_name": group_by_name}
        (raw_folder / RAW_MANIFEST).write_text(json.dumps(manifest))
        splits = split_dataset(REGISTRY["image_folder"].read(raw_folder), 0.25, 0.25, seed=3)
        split_of: dict[str, set[str]] = {}
        for split, rows in splits.x.items():
            for path, _ in rows:
                split_of.setdefault(folders.name_group(str(path)), set()).add(split)
        apart = all(len(found) == 1 for found in split_of.values())
        assert apart is expect_apart, split_of  # ungrouped, some icon's two sizes are split up (seed 3)
