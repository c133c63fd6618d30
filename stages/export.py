"""export: models/model.keras + models/temperature.json + data/prepared/ (the test split) + params `export.*`
-> models/export/ (model.keras, serving.json and one SavedModel / .tflite / .onnx per format)
+ reports/export_parity.json.

With `export.temperature`, the evaluate stage's temperature is baked into every format and recorded in
serving.json. Either way export runs after evaluate (models/temperature.json is its dep in dvc.yaml), so a
model that fails evaluate's quality gate is never exported.

Each format is read back through its own runtime and checked against model.keras on the
whole test split (docs/export.md, "Ship the model"). The test split is only compared
here, never scored: evaluate stays the one stage that measures the model on it.
"""

from __future__ import annotations

import argparse
import logging

from pipeline import paths
from pipeline.calibration import read_temperature
from pipeline.cli import run_stage
from pipeline.errors import PipelineError, counted
from pipeline.io.atomic import write_json_atomic
from pipeline.params import ExportParams, load_params
from pipeline.prepared import open_split
from pipeline.preprocessing import read_meta

log = logging.getLogger("export")


def main(args: argparse.Namespace) -> None:
    params = load_params(ExportParams)
    if not paths.MODEL.is_file():
        raise PipelineError(f"{paths.MODEL} not found; run the train stage first (dvc repro train).")
    from pipeline.export import export_model  # TensorFlow: imported only once the params are known to be good
    from pipeline.models import load_model

    temperature = read_temperature(paths.TEMPERATURE) if params.temperature else 1.0
    meta = read_meta(paths.PREPARED_META)
    x_test = open_split("test", meta).x  # read batch by batch by each runtime's parity check
    model = load_model(paths.MODEL)
    figures = export_model(
        model,
        paths.MODEL,
        meta,
        x_test,
        formats=params.formats,
        tolerance=params.tolerance,
        dest=paths.EXPORT_DIR,
        temperature=temperature,
    )
    write_json_atomic(paths.EXPORT_PARITY, figures)
    if "float32_twin" in figures:
        log.info(
            "model.keras computes in a lower precision: the formats are its float32 twin, within %.2g of it",
            figures["float32_twin"]["max_abs_diff"],
        )
    if temperature != 1.0:
        log.info("every format gives its probabilities at temperature %g (serving.json records it)", temperature)
    for name in params.formats:
        log.info(
            "%s: probabilities within %.2g of model.keras, top-1 identical on %s",
            name,
            figures[name]["max_abs_diff"],
            counted(len(x_test), "test example"),
        )


if __name__ == "__main__":
    run_stage(main, __doc__)
