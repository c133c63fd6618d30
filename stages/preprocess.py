"""preprocess: data/raw/ + params `preprocess.*` -> data/prepared/: each split's .npy shards, meta.json, manifest.json.

Splits train / validation / test and one-hot encodes labels. Images are stored
as their uint8 pixels and divided by their maximum when train and evaluate load
them (meta.json records how); tabular features are scaled here by a min-max
fitted on the training split only. Images keep their (H, W) shape: the MLP
flattens them itself, so switching model does not rerun this stage. Your own
image folder is decoded here, from the files the download stage indexed, to
`preprocess.image_size` and `preprocess.color_mode`; your table's missing values
are refused, dropped or imputed here (`preprocess.missing`), its text and date
columns encoded after the split (docs/own-data.md). Each split is stored as
shards of at most `preprocess.shard_mb`, images decoded straight into them
chunk by chunk (docs/data-on-disk.md); the test split also records where each
example comes from, for evaluate's reports/misclassified.csv.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

import numpy as np

from pipeline import paths
from pipeline.cli import run_stage
from pipeline.columns import complete_rows, encode_splits, encoded_names, missing_summary
from pipeline.datasets import RawDataset, read_raw
from pipeline.decoding import decode_chunks, first_shape
from pipeline.errors import PipelineError, counted
from pipeline.images import Conversion
from pipeline.io.atomic import atomic_directory, write_json_atomic
from pipeline.params import PreprocessParams, load_params
from pipeline.prepared import write_splits
from pipeline.preprocessing import LabelledSplits, scale_splits, split_dataset

log = logging.getLogger("preprocess")


def image_options(raw: RawDataset, params: PreprocessParams) -> Conversion:
    """image_size and color_mode convert image files; a built-in dataset keeps its published pixels, and a table
    has none: there they are ignored with a note (left over from an image run, they change nothing)."""
    conversion = Conversion(params.color_mode, tuple(params.image_size) or None)  # type: ignore[arg-type]
    if raw.kind == "image_files" or not (params.image_size or params.color_mode != "grayscale"):
        return conversion
    if raw.kind == "tabular":
        log.info(
            "preprocess.image_size and preprocess.color_mode apply to image folders only; ignored for %s", raw.name
        )
        return Conversion("grayscale", None)
    raise PipelineError(
        f"preprocess.image_size={list(params.image_size)} and preprocess.color_mode={params.color_mode} apply "
        f"to data.dataset=image_folder only; {raw.name} keeps its published grayscale size: set [] and grayscale."
    )


def table_rows(raw: RawDataset, missing: str) -> RawDataset:
    """Your table's rows that preprocess.missing keeps (`columns.complete_rows`), with a log line of what it did."""
    assert raw.table is not None and raw.lines is not None
    summary = missing_summary(raw.x_train, raw.y_train, raw.table.columns, raw.label_column)
    keep = complete_rows(
        raw.x_train, raw.y_train, raw.table, missing, lines=raw.lines, names=(raw.origin, raw.label_column)
    )
    if not summary:
        return raw
    dropped = int((~keep).sum())
    log.info(
        "%s: missing values (preprocess.missing=%s) in %s, by column: %s; %s dropped",
        raw.origin, missing, counted(int(np.isnan(raw.x_train).any(axis=1).sum() + (raw.y_train < 0).sum()), "row"),
        summary, counted(dropped, "row"),
    )  # fmt: skip
    kept = {name: getattr(raw, name)[keep] for name in ("x_train", "y_train", "lines")}
    return replace(raw, **kept, groups=raw.groups[keep] if raw.groups is not None else None)


def encode_table(raw: RawDataset, labelled: LabelledSplits, impute: bool) -> tuple[RawDataset, LabelledSplits]:
    """The splits' coded rows as features, missing cells imputed from the training split (`columns.encode_splits`)."""
    assert raw.table is not None
    features, record = encode_splits(labelled.x, raw.table, impute, labelled.sources)
    if record.fill:
        filled = ", ".join(f"{int(np.isnan(x).sum())} {name}" for name, x in labelled.x.items())
        shown = ", ".join(f"'{column}' {value:g}" if isinstance(value, float) else f"'{column}' {value}"
                          for column, value in record.fill.items())  # fmt: skip
        log.info("%s: imputed the missing cells (%s) with the training split's %s", raw.origin, filled, shown)
    return replace(raw, table=record, feature_names=encoded_names(record)), replace(labelled, x=features)


def main(args: argparse.Namespace) -> None:
    params = load_params(PreprocessParams)
    raw = read_raw(paths.RAW_DIR)
    conversion = image_options(raw, params)
    if raw.table is not None:
        raw = table_rows(raw, params.missing)
    # In this order: split by the labels alone, decode each split's image files once (or encode the table's
    # rows, imputing from the training split only), then scale.
    labelled = split_dataset(raw, params.val_fraction, params.test_fraction, params.seed)
    files = raw.kind == "image_files"
    shape = first_shape(labelled.x, conversion) if files else ()
    if raw.table is not None:
        raw, labelled = encode_table(raw, labelled, params.missing == "impute")
    if raw.groups is not None:
        log.info("%s: %s, each in one split", raw.origin, counted(len(np.unique(raw.groups)), "group"))
    splits, meta = scale_splits(raw, labelled, conversion.record() if raw.kind != "tabular" else None, shape)
    chunks = (
        decode_chunks(labelled.x, conversion, shape, params.memory_limit_mb) if files
        else ((name, split.x) for name, split in splits.items())
    )  # fmt: skip
    with atomic_directory(paths.PREPARED_DIR) as folder:
        write_splits(
            folder, chunks, labels=labelled.labels, row_shape=shape or splits["train"].x.shape[1:],
            dtype="uint8" if meta.kind == "image" else "float32", shard_mb=params.shard_mb,
            sources={"test": labelled.sources["test"]},
        )  # fmt: skip
        write_json_atomic(folder / paths.PREPARED_META.name, meta.dump())
    sizes = ", ".join(f"{counted(size, 'example')} {name}" for name, size in meta.sizes.items())
    log.info("%s: %s; input shape %s", raw.name, sizes, list(meta.input_shape))


if __name__ == "__main__":
    run_stage(main, __doc__, loads_tensorflow=False)
