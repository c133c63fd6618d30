"""preprocess: data/raw/ + params `preprocess.*` -> data/prepared/{train,val,test}.npz + meta.json.

Splits train / validation / test and one-hot encodes labels. Images are stored
as their uint8 pixels and divided by their maximum when train and evaluate load
them (meta.json records how); tabular features are scaled here by a min-max
fitted on the training split only. Images keep their (H, W) shape: the MLP
flattens them itself, so switching model does not rerun this stage.
"""

from __future__ import annotations

import argparse
import logging

from pipeline import paths
from pipeline.cli import run_stage
from pipeline.datasets import read_raw
from pipeline.files import atomic_directory, write_json_atomic, write_npz_atomic
from pipeline.params import PreprocessParams, load_params
from pipeline.preprocessing import prepare_splits

log = logging.getLogger("preprocess")


def main(args: argparse.Namespace) -> None:
    params = load_params(PreprocessParams)
    raw = read_raw(paths.RAW_DIR)
    splits, meta = prepare_splits(raw, params.val_fraction, params.test_fraction, params.seed)
    with atomic_directory(paths.PREPARED_DIR) as folder:
        for name, split in splits.items():
            write_npz_atomic(folder / paths.split_file(name).name, x=split.x, y=split.y)
        write_json_atomic(folder / paths.PREPARED_META.name, meta)
    log.info("%s: %s examples, input shape %s", raw.name, meta["sizes"], meta["input_shape"])


if __name__ == "__main__":
    run_stage(main, __doc__)
