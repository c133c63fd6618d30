"""preprocess: data/raw/ + params `preprocess.*` -> data/prepared/{train,val,test}.npz + meta.json.

Splits train / validation / test and one-hot encodes labels. Images are stored
as their uint8 pixels and divided by their maximum when train and evaluate load
them (meta.json records how); tabular features are scaled here by a min-max
fitted on the training split only. Images keep their (H, W) shape: the MLP
flattens them itself, so switching model does not rerun this stage. Your own
image folder is decoded here, from the files the download stage indexed, to
`preprocess.image_size` and `preprocess.color_mode` (docs/own-data.md).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from pipeline import paths
from pipeline.cli import run_stage
from pipeline.datasets import RawDataset, read_raw
from pipeline.decoding import decode_splits
from pipeline.errors import PipelineError
from pipeline.images import Conversion
from pipeline.io.atomic import atomic_directory, write_json_atomic, write_npz_atomic
from pipeline.params import PreprocessParams, load_params
from pipeline.preprocessing import scale_splits, split_dataset

log = logging.getLogger("preprocess")


def check_image_options(raw: RawDataset, params: PreprocessParams) -> None:
    """image_size and color_mode convert image files; a built-in dataset keeps its published pixels."""
    if raw.kind != "image_files" and (params.image_size or params.color_mode != "grayscale"):
        raise PipelineError(
            f"preprocess.image_size={list(params.image_size)} and preprocess.color_mode={params.color_mode} apply "
            f"to data.dataset=image_folder only; {raw.name} keeps its published grayscale size: set [] and grayscale."
        )


def main(args: argparse.Namespace) -> None:
    params = load_params(PreprocessParams)
    raw = read_raw(paths.RAW_DIR)
    check_image_options(raw, params)
    conversion = Conversion(params.color_mode, tuple(params.image_size) or None)  # type: ignore[arg-type]
    # In this order: split by the labels alone, decode each split's image files once, then scale.
    labelled = split_dataset(raw, params.val_fraction, params.test_fraction, params.seed)
    if raw.kind == "image_files":
        labelled = replace(labelled, x=decode_splits(labelled.x, conversion, params.memory_limit_mb))
    splits, meta = scale_splits(raw, labelled, conversion.record() if raw.kind != "tabular" else None)
    with atomic_directory(paths.PREPARED_DIR) as folder:
        for name, split in splits.items():
            write_npz_atomic(folder / paths.split_file(name).name, x=split.x, y=split.y)
        write_json_atomic(folder / paths.PREPARED_META.name, meta.dump())
    log.info("%s: %s examples, input shape %s", raw.name, meta.sizes, list(meta.input_shape))


if __name__ == "__main__":
    run_stage(main, __doc__, loads_tensorflow=False)
