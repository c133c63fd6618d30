"""download: params `data.*` -> data/raw/ (the dataset's files as published, plus dataset.json).

digits and iris come from scikit-learn's bundled copies (no network);
mnist and fashion_mnist are fetched from `data.source` (default: the canonical
Keras URLs), retried, verified against their published checksums and written
atomically: on any failure data/raw/ is left as it was.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline import paths
from pipeline.cli import run_stage
from pipeline.datasets import KERAS_DATASETS_URL, RAW_MANIFEST, get_spec, write_bundled
from pipeline.download import fetch_dataset
from pipeline.files import atomic_directory, write_json_atomic
from pipeline.params import DataParams, load_params

log = logging.getLogger("download")


def download(params: DataParams, folder: Path) -> None:
    """Put the dataset's files and its manifest into `folder` and check that they read back."""
    spec = get_spec(params.dataset)
    if spec.files:
        source = params.source or KERAS_DATASETS_URL
        fetch_dataset(spec.files, source, folder, params.checksums)
    else:
        source = "scikit-learn (bundled)"
        write_bundled(folder, spec.name)
    write_json_atomic(folder / RAW_MANIFEST, {"dataset": spec.name, "source": source})
    raw = spec.read(folder)  # a file that verifies but does not parse must fail here, not in preprocess
    log.info(
        "%s: %d training and %s test examples from %s",
        spec.name,
        len(raw.x_train),
        len(raw.x_test) if raw.x_test is not None else "no official",
        source,
    )


def main(args: argparse.Namespace) -> None:
    params = load_params(DataParams)
    with atomic_directory(paths.RAW_DIR) as folder:
        download(params, folder)


if __name__ == "__main__":
    run_stage(main, __doc__)
