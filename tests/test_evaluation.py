"""Metric computations and the misclassified grid, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation import confusion_matrix, macro_f1, misclassified_grid, per_class_scores


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


def test_class_never_predicted_scores_zero_not_nan() -> None:
    scores = per_class_scores(confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2), ["a", "b"])
    assert scores["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_grid_shows_only_misclassified_images() -> None:
    images = np.random.default_rng(0).random((30, 8, 8, 1)).astype(np.float32)
    true = np.arange(30) % 3
    pred = true.copy()
    pred[[1, 4, 7, 10, 20, 25, 29]] = 0  # 7 wrong, one of which (index 0 class) is already 0 -> stays right
    wrong = int((true != pred).sum())
    grid = misclassified_grid(
        images, true_labels=true, predicted_labels=pred, class_names=["x", "y", "z"], max_images=5
    )
    cell = 96
    assert grid.size == (5 * cell, 1 * (cell + 28))  # capped at 5 of the `wrong` ones
    assert wrong > 5
    full = misclassified_grid(
        images, true_labels=true, predicted_labels=pred, class_names=["x", "y", "z"], max_images=50
    )
    assert full.size == (5 * cell, -(-wrong // 5) * (cell + 28))
