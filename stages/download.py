"""download: params `data.*` -> data/raw/ (the dataset's files as published, plus dataset.json).

digits and iris come from scikit-learn's bundled copies (no network);
mnist and fashion_mnist are fetched from `data.source` (default: the canonical
Keras URLs), retried, verified against their published checksums and written
atomically: on any failure data/raw/ is left as it was. Your own data
(image_folder, csv) is read from `data.source` under data/own/: an image folder
is indexed (paths and sha256 of its images, not copies), a CSV table is checked
and copied (docs/own-data.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipeline import folders, paths, tables
from pipeline.cli import run_stage
from pipeline.datasets import KERAS_DATASETS_URL, RAW_MANIFEST, get_spec, write_bundled
from pipeline.errors import PipelineError, counted
from pipeline.io.atomic import atomic_directory, write_bytes_atomic, write_json_atomic
from pipeline.io.download import fetch_any_form
from pipeline.params import DataParams, load_params

log = logging.getLogger("download")


def snapshot_own_data(params: DataParams, source: Path, folder: Path) -> dict[str, Any]:
    """Index the image folder, or check and copy the CSV table, at `source` into `folder`; returns manifest keys."""
    if params.dataset == "image_folder":
        index = folders.index_folder(source)
        write_json_atomic(folder / folders.INDEX_FILE, index)
        log.info("%s: %s, %s", source, index["layout"], index["skipped"])
        return {"group_by_name": params.group_by_name}
    if not source.is_file():
        raise PipelineError(f"data.source: {source} is not a file; data.dataset=csv needs a CSV file.")
    data = tables.read_bytes(source)
    # The columns are chosen here, where the table is read: a wrong name fails the first stage, and changing the
    # choice reruns only this quick copy. What becomes of missing values is preprocess's (preprocess.missing).
    options = tables.TableOptions(params.label_column, params.drop_columns, params.feature_columns, params.group_column)
    table = tables.parse_table(tables.decode_text(data, source), source, options)  # errors name the user's file
    write_bytes_atomic(folder / tables.TABLE_FILE, data)
    log.info("%s: %d rows, feature columns %s", source, len(table.labels), ", ".join(table.record.columns))
    return options.manifest()


def download(params: DataParams, folder: Path) -> None:
    """Put the dataset's files and its manifest into `folder` and check that they read back."""
    spec = get_spec(params.dataset)
    extra: dict[str, Any] = {}
    if spec.files:
        source = params.source or KERAS_DATASETS_URL
        fetch_any_form((spec.files, *spec.other_forms), source, folder, params.checksums)
    elif spec.name in ("image_folder", "csv"):
        own = folders.own_source(params.source)
        source = str(own)
        extra = snapshot_own_data(params, own, folder)
    else:
        source = "scikit-learn (bundled)"
        write_bundled(folder, spec.name)
    write_json_atomic(folder / RAW_MANIFEST, {"dataset": spec.name, "source": source} | extra)
    raw = spec.read(folder)  # a file that verifies but does not parse must fail here, not in preprocess
    log.info(
        "%s: %d training and %s from %s",
        spec.name,
        len(raw.x_train),
        counted(len(raw.x_test), "test example") if raw.x_test is not None else "no official test examples",
        source,
    )


def main(args: argparse.Namespace) -> None:
    params = load_params(DataParams)
    with atomic_directory(paths.RAW_DIR) as folder:
        download(params, folder)


if __name__ == "__main__":
    run_stage(main, __doc__, loads_tensorflow=False)
