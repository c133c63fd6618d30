"""evaluate: models/model.keras + data/prepared/ (the test and val splits) + params `evaluate.*` -> metrics.json,
models/temperature.json, reports/confusion.csv, per_class.csv, roc.csv, precision_recall.csv, reliability.csv,
misclassified.png and misclassified.csv (each misclassified test example's file or table line, true and
predicted class, most confident first).

The only stage that scores the model on the test split. The temperature is fitted on the validation
split, never on the test split (pipeline/calibration.py). Last, the quality gate (`evaluate.gate`): a
model below a threshold fails the stage, after every file is written, so the user sees why and the
export stage, which depends on models/temperature.json, does not run (docs/quality-gate.md).
"""

from __future__ import annotations

import argparse
import io
import logging

from pipeline import paths
from pipeline.calibration import calibration_figures, reliability_bins, temperature_scaling
from pipeline.cli import run_stage
from pipeline.errors import PipelineError, counted
from pipeline.evaluation import (
    MISCLASSIFIED_COLUMNS,
    accuracy,
    confusion_matrix,
    macro_f1,
    misclassified_grid,
    misclassified_rows,
    per_class_scores,
    placeholder_image,
    rounded_loss,
    split_digest,
)
from pipeline.io.atomic import write_bytes_atomic, write_csv_atomic, write_json_atomic
from pipeline.io.reading import read_json
from pipeline.params import EvaluateParams, load_params
from pipeline.prepared import open_split
from pipeline.preprocessing import read_meta
from pipeline.quality import gate_failures, gate_sentence
from pipeline.ranking import class_curves, macro, top_k_accuracy

log = logging.getLogger("evaluate")


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def training_loss(model, y_true, probabilities) -> float:
    """The model's own loss (train.loss) on the test split, from the probabilities already predicted.

    Not `model.evaluate`: that is a second pass of the network over the whole test split, for one number.
    """
    import keras
    import numpy as np

    loss = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
    return float(np.mean(keras.ops.convert_to_numpy(loss(y_true, probabilities))))


def test_metrics(model, test, probabilities, *, val_probabilities, val_labels, class_names, summary) -> tuple:
    """metrics.json's content, and what the reports draw: the per-class curves' rows, the scaled probabilities."""
    true_labels, predicted_labels = test.labels, probabilities.argmax(axis=1)
    counts = confusion_matrix(true_labels, predicted_labels, len(class_names))
    per_class = per_class_scores(counts, class_names)
    curve_scores, roc_rows, pr_rows = class_curves(probabilities, true_labels, class_names)
    for name in class_names:  # a binary model's negative class has no curve of its own: its cells stay empty
        per_class[name] |= curve_scores.get(name, {"roc_auc": None, "average_precision": None})
    calibration, scaled = temperature_scaling(val_probabilities, val_labels, probabilities, true_labels)
    metrics = {
        "test": {
            "loss": rounded_loss(training_loss(model, test.y, probabilities)),
            "accuracy": accuracy(counts),
            "macro_f1": macro_f1(per_class),
            "top_k_accuracy": top_k_accuracy(probabilities, true_labels),
            "roc_auc_macro": macro(curve_scores, "roc_auc"),
            "average_precision_macro": macro(curve_scores, "average_precision"),
        }
        | calibration_figures(probabilities, true_labels),
        "calibration": calibration,
        "per_class": per_class,
        "model": {"params": summary["params_total"], "best_epoch": summary["best_epoch"]},
        "test_split": split_digest(test.x, test.y),
    }
    return metrics, roc_rows, pr_rows, scaled


def write_reports(metrics, roc_rows, pr_rows, scaled, *, probabilities, test, meta, params) -> int:
    """Every file of the stage but metrics.json; returns the number of mistakes."""
    class_names, temperature = meta.class_names, metrics["calibration"]["temperature"]
    x_test, true_labels, predicted_labels = test.x, test.labels, probabilities.argmax(axis=1)
    write_json_atomic(paths.TEMPERATURE, {"temperature": temperature, "fitted_on": f"{paths.PREPARED_DIR} (val split)"})
    write_csv_atomic(paths.ROC, roc_rows)
    write_csv_atomic(paths.PRECISION_RECALL, pr_rows)
    write_csv_atomic(
        paths.RELIABILITY,
        [{"probabilities": "as trained"} | row for row in reliability_bins(probabilities, true_labels)]
        + [{"probabilities": f"temperature {temperature:g}"} | row for row in reliability_bins(scaled, true_labels)],
    )
    pairs = zip(true_labels, predicted_labels, strict=True)
    write_csv_atomic(paths.CONFUSION, [{"actual": class_names[t], "predicted": class_names[p]} for t, p in pairs])
    write_csv_atomic(paths.PER_CLASS, [{"class": name} | row for name, row in metrics["per_class"].items()])
    sources = test.sources()
    mistakes = misclassified_rows(sources, probabilities, true_labels, class_names)
    write_csv_atomic(paths.MISCLASSIFIED_LIST, mistakes, MISCLASSIFIED_COLUMNS)
    grid = (
        misclassified_grid(
            x_test,
            true_labels=true_labels,
            predicted_labels=predicted_labels,
            class_names=class_names,
            max_images=params.misclassified_max,
            sources=sources,
        )
        if meta.kind == "image"
        else placeholder_image(f"{meta.dataset} is tabular: no images to show")
    )
    write_bytes_atomic(paths.MISCLASSIFIED, png_bytes(grid))
    return len(mistakes)


def main(args: argparse.Namespace) -> None:
    params = load_params(EvaluateParams)
    # TensorFlow: imported only once the params are known to be good.
    from pipeline import feeding
    from pipeline.models import check_model_fits, load_model

    meta, summary = read_meta(paths.PREPARED_META), read_json(paths.MODEL_SUMMARY)
    model = load_model(paths.MODEL)
    check_model_fits(model, paths.MODEL, meta.input_shape, len(meta.class_names))
    test, val = open_split("test", meta), open_split("val", meta)  # read batch by batch: only probabilities whole
    probabilities = feeding.predict(model, test.x, params.batch_size)
    val_probabilities = feeding.predict(model, val.x, params.batch_size)
    metrics, roc_rows, pr_rows, scaled = test_metrics(
        model, test, probabilities, val_probabilities=val_probabilities, val_labels=val.labels,
        class_names=meta.class_names, summary=summary,
    )  # fmt: skip
    write_json_atomic(paths.METRICS, metrics)
    mistakes = write_reports(metrics, roc_rows, pr_rows, scaled, probabilities=probabilities, test=test, meta=meta,
                             params=params)  # fmt: skip
    test_scores, scaled_ece = metrics["test"], metrics["calibration"]["temperature_scaled"]["ece"]
    log.info(
        "test accuracy %.4f, macro F1 %.4f on %s; %s; ECE %.4f, %.4f at temperature %g (fitted on validation)",
        test_scores["accuracy"], test_scores["macro_f1"], counted(len(test.labels), "example"),
        f"{counted(mistakes, 'mistake')} in {paths.MISCLASSIFIED_LIST}", test_scores["ece"], scaled_ece,
        metrics["calibration"]["temperature"],
    )  # fmt: skip
    if failures := gate_failures(test_scores, params.gate.thresholds()):
        raise PipelineError(
            gate_sentence(
                failures,
                f"{paths.METRICS} and reports/ are written to show why, and the export stage will not run "
                "(models/export is unchanged); improve the model or change evaluate.gate in params.yaml.",
            )
        )


if __name__ == "__main__":
    run_stage(main, __doc__)
