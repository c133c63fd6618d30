"""Metric computations and the misclassified grid, checked against hand-computed values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluation import accuracy, confusion_matrix, macro_f1, misclassified_grid, per_class_scores, rounded_loss
from pipeline.io.atomic import write_json_atomic


def test_confusion_and_per_class_scores_by_hand() -> None:
    true = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    counts = confusion_matrix(true, pred, 3)
    np.testing.assert_array_equal(counts, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    scores = per_class_scores(counts, ["a", "b", "c"])
    assert scores["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert scores["b"]["precision"] == 0.5 and scores["b"]["recall"] == 0.5
    assert scores["c"]["precision"] == 0.5 and scores["c"]["recall"] == 1.0
    assert macro_f1(scores) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_metrics_json_reads_27_of_30_as_0_9(tmp_path: Path) -> None:
    """Issue #31: Keras's float32 accuracy wrote 0.8999999761581421; the counts give the decimal a person expects."""
    true = np.arange(30) % 3
    pred = true.copy()
    pred[[0, 1, 2]] = (true[[0, 1, 2]] + 1) % 3  # 3 of 30 wrong, one per class
    counts = confusion_matrix(true, pred, 3)
    scores = per_class_scores(counts, ["a", "b", "c"])
    metrics = {"accuracy": accuracy(counts), "macro_f1": macro_f1(scores), "loss": rounded_loss(0.31415926535)}
    write_json_atomic(tmp_path / "metrics.json", {"test": metrics, "per_class": scores})
    text = (tmp_path / "metrics.json").read_text()
    written = set(re.findall(r'"(\w+)": ([-0-9.e]+)', text))  # each number as it is written in the file
    assert {("accuracy", "0.9"), ("macro_f1", "0.9"), ("loss", "0.314159")} <= written, text
    assert {("precision", "0.9"), ("recall", "0.9"), ("f1", "0.9")} <= written, text
    assert {value for _, value in written} == {"0.9", "0.314159", "10"}, text
    assert json.loads(text)["test"]["accuracy"] == 27 / 30


def test_ratios_print_short_and_stay_close() -> None:
    counts = confusion_matrix(np.array([0, 0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 1, 2, 2, 2]), 3)
    scores = per_class_scores(counts, ["a", "b", "c"])
    for value in (accuracy(counts), macro_f1(scores), *(v for row in scores.values() for v in row.values())):
        assert type(value) in (int, float) and len(repr(value)) <= 12, value  # Python numbers, not numpy's
    assert accuracy(counts) == pytest.approx(5 / 7, abs=1e-10) and repr(accuracy(counts)) == "0.7142857143"


def test_class_never_predicted_scores_zero_not_nan() -> None:
    scores = per_class_scores(confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2), ["a", "b"])
    assert scores["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_grid_shows_only_misclassified_images() -> None:
    """Correctly classified images are black, each misclassified one its own gray: every tile must be the gray of
    the next misclassified image, in order, up to `max_images`; a black tile would be a correct image shown."""
    true = np.arange(30) % 3
    pred = true.copy()
    pred[[0, 1, 4, 7, 10, 20, 25, 29]] = 0  # index 0 is of class 0 already: it stays correctly classified
    wrong = np.flatnonzero(true != pred)
    assert len(wrong) == 7
    images = np.zeros((30, 8, 8, 1), dtype=np.float32)
    images[wrong] = (0.3 + 0.1 * np.arange(len(wrong)))[:, None, None, None].astype(np.float32)
    cell, caption = 96, 28
    for max_images in (5, 50):
        grid = misclassified_grid(
            images, true_labels=true, predicted_labels=pred, class_names=["x", "y", "z"], max_images=max_images
        )
        shown = wrong[:max_images]
        assert grid.size == (5 * cell, -(-len(shown) // 5) * (cell + caption))
        pixels = np.asarray(grid)
        for slot, index in enumerate(shown):
            left, top = (slot % 5) * cell, (slot // 5) * (cell + caption)
            tile = pixels[top + 4 : top + cell - 4, left + 4 : left + cell - 4]
            gray = int(np.uint8(images[index, 0, 0, 0] * 255.0))
            assert tile.min() == tile.max() == gray, f"slot {slot}: not misclassified image {index}"
