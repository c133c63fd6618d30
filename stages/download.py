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

import numpy as np

from pipeline import paths
from pipeline.cli import run_stage
from pipeline.datasets import KERAS_DATASETS_URL, RAW_MANIFEST, get_spec
from pipeline.download import fetch_any_form
from pipeline.files import atomic_directory, write_json_atomic, write_npz_atomic
from pipeline.params import DataParams, load_params

log = logging.getLogger("download")


def bundled_arrays(name: str) -> dict[str, np.ndarray]:
    """scikit-learn's bundled copy of `name` as arrays (imported here only: it costs ~1 s)."""
    from sklearn import datasets

    if name == "digits":
        digits = datasets.load_digits()
        return {
            "x": digits.images.astype(np.uint8),  # integer intensities 0..16
            "y": digits.target.astype(np.int64),
            "class_names": np.array([str(c) for c in digits.target_names]),
            "pixel_max": np.array(16.0),
        }
    iris = datasets.load_iris()
    return {
        "x": iris.data.astype(np.float64),
        "y": iris.target.astype(np.int64),
        "class_names": np.array([str(c) for c in iris.target_names]),
        "feature_names": np.array(iris.feature_names),
    }


def download(params: DataParams, folder: Path) -> None:
    """Put the dataset's files and its manifest into `folder` and check that they read back."""
    spec = get_spec(params.dataset)
    if spec.files:
        source = params.source or KERAS_DATASETS_URL
        fetch_any_form((spec.files, *spec.other_forms), source, folder, params.checksums)
    else:
        source = "scikit-learn (bundled)"
        write_npz_atomic(folder / f"{spec.name}.npz", **bundled_arrays(spec.name))
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
