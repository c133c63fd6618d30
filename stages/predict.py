"""predict: a trained model + its meta.json + new inputs -> the top classes and their probabilities per input.

Inputs are converted exactly as the training data was. Image models (grayscale or RGB, built-in
datasets or your image folder) take image files of any size and format (converted to the model's
colour mode, resized to its input, scaled by 255), folders of them, and `.npy` arrays of raw pixels
(digits 0..16, MNIST 0..255; (H, W) or (H, W, 3), one image or a stack). Table models (iris, your CSV
table) take CSV files of raw values, one row per example, text columns as text and dates as ISO dates,
a header naming the columns (any order, other columns such as the label ignored), missing cells filled
where the model was trained with preprocess.missing=impute; and `.npy` arrays of raw features.

Prints one line per input (`--json`: one JSON document); `--output preds.csv` writes a CSV file
instead, one row per input (its file name, or its `--id-column` value for tables), atomically. Not a
pipeline stage: run it by hand, e.g. `python -m stages.predict digit.png --top-k 3`.

`--model` also takes the export stage's formats (models/export/: the SavedModel folder,
model.tflite, model.onnx), each run through its own runtime; the serving.json beside
them then describes the input, so an exported folder works without data/prepared.

Temperature scaling (docs/quality-gate.md): the exported formats have it baked in; a .keras model gets
the temperature of the serving.json beside it, or, for models/model.keras, that of models/temperature.json
when params.yaml's export.temperature is true. So every format prints the same probabilities.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.calibration import apply_temperature, read_temperature
from pipeline.cli import run_stage
from pipeline.errors import PipelineError, counted
from pipeline.export import description_beside
from pipeline.inputs import read_inputs
from pipeline.io.atomic import write_csv_atomic
from pipeline.meta import PreparedMeta, ServingDescription
from pipeline.params import ExportParams, load_params
from pipeline.prediction import (
    as_records,
    check_model_matches,
    check_probabilities,
    check_top_k,
    csv_rows,
    format_text,
    top_classes,
)
from pipeline.preprocessing import read_meta

log = logging.getLogger("predict")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="image, .npy or .csv files, or folders of images"
    )
    parser.add_argument("--top-k", type=int, default=1, help="show the K most probable classes (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text lines")
    parser.add_argument(
        "--output",
        type=Path,
        help="write a CSV file instead of printing: one row per input (input, then class and probability 1..K)",
    )
    parser.add_argument(
        "--id-column", default="", help="tables: the header's column naming each row in the output (default: its line)"
    )
    parser.add_argument(
        "--invert",
        action="store_true",
        help="invert image files first: for dark ink on a light background (the training images are light on dark)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=paths.MODEL,
        help="a .keras, .tflite or .onnx file or a SavedModel folder (default: %(default)s)",
    )
    parser.add_argument(
        "--meta",
        type=Path,
        help=f"the input description (default: the serving.json beside an exported model, else {paths.PREPARED_META})",
    )


def load_description(meta_path: Path) -> PreparedMeta:
    """meta.json, or the serving.json of an export: the same record, read by the same loader."""
    if not meta_path.is_file():
        raise PipelineError(f"{meta_path} not found; run the pipeline first (dvc repro) or pass --meta.")
    return read_meta(meta_path)


def keras_temperature(model_path: Path, meta: PreparedMeta) -> float:
    """The temperature to apply to a .keras model's probabilities: the one its export's formats have baked in."""
    if isinstance(meta, ServingDescription):
        return meta.temperature
    beside = model_path.parent / paths.TEMPERATURE.name
    if beside.is_file() and paths.PARAMS.is_file() and load_params(ExportParams).temperature:
        return read_temperature(beside)
    return 1.0


def main(args: argparse.Namespace) -> None:
    meta = load_description(args.meta or description_beside(args.model) or paths.PREPARED_META)
    check_top_k(args.top_k, meta)
    if args.output and args.json:
        raise PipelineError("--output writes a CSV file and --json prints JSON; give one of them.")
    if args.id_column and meta.kind != "tabular":
        raise PipelineError(f"--id-column names a column of a CSV table; this {meta.kind} model takes no tables.")
    batch = read_inputs(args.inputs, meta, invert=args.invert, id_column=args.id_column)
    if not args.model.exists():
        raise PipelineError(f"{args.model} not found; run the train stage first (dvc repro train) or pass --model.")
    from pipeline.runtimes import open_model  # imports the model's runtime: only once every input has passed

    model = open_model(args.model)
    check_model_matches(model.input_shape, model.n_outputs, meta)
    probabilities = model.predict(batch.x)
    if model.format == "keras" and (temperature := keras_temperature(args.model, meta)) != 1.0:
        probabilities = apply_temperature(probabilities, temperature).astype(np.float32)
    check_probabilities(probabilities, args.model)
    ranked = top_classes(probabilities, meta.class_names, args.top_k)
    if args.output:
        write_csv_atomic(args.output, csv_rows(batch.labels, ranked))
        log.info("%s: %s", args.output, counted(len(batch.labels), "prediction"))
    elif args.json:
        sys.stdout.write(json.dumps(as_records(batch.labels, ranked), indent=2, allow_nan=False) + "\n")
    else:
        sys.stdout.write(format_text(batch.labels, ranked))


if __name__ == "__main__":
    run_stage(main, __doc__, add_arguments)
