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
import functools
import logging

from pipeline import paths
from pipeline.cli import run_stage
from pipeline.datasets import RawDataset, read_raw
from pipeline.errors import PipelineError
from pipeline.folders import decode_splits
from pipeline.images import Conversion
from pipeline.io.atomic import atomic_directory, write_json_atomic, write_npz_atomic
from pipeline.params import PreprocessParams, load_params
from pipeline.preprocessing import prepare_splits

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
    decode = functools.partial(decode_splits, conversion=conversion, memory_limit_mb=params.memory_limit_mb)
    splits, meta = prepare_splits(
        raw, params.val_fraction, params.test_fraction, params.seed,
        decode=decode, image_record=conversion.record() if raw.kind == "image_files" else None,
    )  # fmt: skip
    with atomic_directory(paths.PREPARED_DIR) as folder:
        for name, split in splits.items():
            write_npz_atomic(folder / paths.split_file(name).name, x=split.x, y=split.y)
        write_json_atomic(folder / paths.PREPARED_META.name, meta)
    log.info("%s: %s examples, input shape %s", raw.name, meta["sizes"], meta["input_shape"])


if __name__ == "__main__":
    run_stage(main, __doc__, loads_tensorflow=False)
