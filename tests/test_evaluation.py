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
