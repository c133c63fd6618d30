"""evaluate: models/model.keras + data/prepared/test.npz + params `evaluate.*` -> metrics.json,
reports/confusion.csv, reports/per_class.csv, reports/misclassified.png and reports/misclassified.csv (each
misclassified test example's file or table line, true and predicted class, most confident first).

The only stage that touches the test split.
"""

from __future__ import annotations

import argparse
import io
import logging

from pipeline import paths
from pipeline.cli import run_stage
from pipeline.errors import counted
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
)
from pipeline.io.atomic import write_bytes_atomic, write_csv_atomic, write_json_atomic
from pipeline.io.reading import load_sources, read_json
from pipeline.params import EvaluateParams, load_params
from pipeline.preprocessing import load_checked_split, read_meta

log = logging.getLogger("evaluate")


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main(args: argparse.Namespace) -> None:
    params = load_params(EvaluateParams)
    # TensorFlow: imported only once the params are known to be good.
    from pipeline.models import check_model_fits, load_model

    meta, summary = read_meta(paths.PREPARED_META), read_json(paths.MODEL_SUMMARY)
    class_names = meta.class_names
    x_test, y_test = load_checked_split(paths.split_file("test"), meta)
    model = load_model(paths.MODEL)
    check_model_fits(model, paths.MODEL, meta.input_shape, len(class_names))
    scores = model.evaluate(x_test, y_test, batch_size=params.batch_size, verbose=0, return_dict=True)
    probabilities = model.predict(x_test, batch_size=params.batch_size, verbose=0)
    true_labels, predicted_labels = y_test.argmax(axis=1), probabilities.argmax(axis=1)
    counts = confusion_matrix(true_labels, predicted_labels, len(class_names))
    per_class = per_class_scores(counts, class_names)
    metrics = {
        "test": {"loss": rounded_loss(scores["loss"]), "accuracy": accuracy(counts), "macro_f1": macro_f1(per_class)},
        "per_class": per_class,
        "model": {"params": summary["params_total"], "best_epoch": summary["best_epoch"]},
    }
    write_json_atomic(paths.METRICS, metrics)
    pairs = zip(true_labels, predicted_labels, strict=True)
    write_csv_atomic(paths.CONFUSION, [{"actual": class_names[t], "predicted": class_names[p]} for t, p in pairs])
    write_csv_atomic(paths.PER_CLASS, [{"class": name} | row for name, row in per_class.items()])
    sources = load_sources(paths.split_file("test"), len(x_test))
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
    log.info(
        "test accuracy %.4f, macro F1 %.4f on %s; %s",
        metrics["test"]["accuracy"],
        metrics["test"]["macro_f1"],
        counted(len(x_test), "example"),
        f"{counted(int((true_labels != predicted_labels).sum()), 'mistake')} in {paths.MISCLASSIFIED_LIST}",
    )


if __name__ == "__main__":
    run_stage(main, __doc__)
