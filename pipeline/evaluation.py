"""Pure metric computations and the misclassified-images grid of the evaluate stage."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def confusion_matrix(true_labels: np.ndarray, predicted_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j] = examples of class i predicted as class j."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (true_labels, predicted_labels), 1)
    return counts


def ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator as a Python float that prints as the decimal a person expects (27/30: 0.9).

    Rounded to 10 places, far finer than one example in any test split, so that a mean of ratios (macro F1)
    prints 0.95 rather than 0.9500000000000001; 0.0 where there is nothing to divide by.
    """
    return round(numerator / denominator, 10) if denominator else 0.0


def accuracy(counts: np.ndarray) -> float:
    """Correct predictions over all predictions, from the confusion matrix's counts (not Keras's float32 metric)."""
    return ratio(int(np.trace(counts)), int(counts.sum()))


def per_class_scores(counts: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class, each a ratio of the counts; 0.0 where it has no denominator."""
    hits, predicted, actual = np.diag(counts).tolist(), counts.sum(axis=0).tolist(), counts.sum(axis=1).tolist()
    return {
        name: {
            "precision": ratio(hits[i], predicted[i]),
            "recall": ratio(hits[i], actual[i]),
            "f1": ratio(2 * hits[i], predicted[i] + actual[i]),  # 2PR/(P+R), written in counts
            "support": actual[i],
        }
        for i, name in enumerate(class_names)
    }


def macro_f1(scores: dict[str, dict[str, float]]) -> float:
    return round(sum(row["f1"] for row in scores.values()) / len(scores), 10)


def rounded_loss(loss: float) -> float:
    # 6 significant digits: Keras computes the loss in float32 (about 7), and the digits past them are noise.
    return float(f"{loss:.6g}")


MISCLASSIFIED_COLUMNS = ("source", "true", "predicted", "probability")


def misclassified_rows(
    sources: Sequence[str], probabilities: np.ndarray, true_labels: np.ndarray, class_names: Sequence[str]
) -> list[dict[str, object]]:
    """reports/misclassified.csv: each misclassified example's source, true and predicted class and the predicted
    class's probability, the most confident mistakes first (ties in test order)."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != true_labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return [
        {
            "source": str(sources[i]),
            "true": class_names[true_labels[i]],
            "predicted": class_names[predicted[i]],
            "probability": round(float(p), 6),
        }  # fmt: skip
        for i, p in sorted(zip(wrong, confidence, strict=True), key=lambda pair: -pair[1])
    ]


def misclassified_grid(
    images: np.ndarray,
    *,
    true_labels: np.ndarray,
    predicted_labels: np.ndarray,
    class_names: Sequence[str],
    max_images: int,
    sources: Sequence[str] = (),
    cell: int = 96,
) -> Image.Image:
    """A grid of the first `max_images` misclassified images (values in [0, 1]) captioned true/predicted, and
    with `sources`, each one's file name.

    Images of shape (N, H, W, 1) give a grayscale grid; (N, H, W, 3) a colour one.
    """
    wrong = np.flatnonzero(true_labels != predicted_labels)[:max_images]
    font = ImageFont.load_default()
    caption = 41 if len(sources) else 28
    columns = max(1, min(5, len(wrong)))
    rows = max(1, -(-len(wrong) // columns))
    mode = "RGB" if images.shape[-1] == 3 else "L"
    grid = Image.new(mode, (columns * cell, rows * (cell + caption)), color="white")
    draw = ImageDraw.Draw(grid)
    if len(wrong) == 0:
        draw.text((4, 4), "no misclassified test images", fill="black", font=font)
    for slot, index in enumerate(wrong):
        pixels = np.clip(images[index] * 255.0, 0, 255).astype(np.uint8)
        pixels = pixels.squeeze(-1) if mode == "L" else pixels
        tile = Image.fromarray(pixels).resize((cell - 8, cell - 8), Image.NEAREST)
        left, top = (slot % columns) * cell, (slot // columns) * (cell + caption)
        grid.paste(tile, (left + 4, top + 4))
        draw.text((left + 4, top + cell - 2), f"true {class_names[true_labels[index]]}", fill="black", font=font)
        draw.text((left + 4, top + cell + 11), f"pred {class_names[predicted_labels[index]]}", fill="black", font=font)
        if len(sources):
            name = str(sources[index]).replace("\\", "/").rsplit("/", 1)[-1]
            name = name if len(name) <= 15 else name[:6] + "~" + name[-8:]  # a cell holds ~15 characters
            draw.text((left + 4, top + cell + 24), name, fill="black", font=font)
    return grid


def placeholder_image(message: str) -> Image.Image:
    """Stands in for the grid where there are no images (tabular data), so the declared plot always exists."""
    image = Image.new("L", (360, 40), color=255)
    ImageDraw.Draw(image).text((8, 12), message, fill=0, font=ImageFont.load_default())
    return image


def split_digest(x: Any, y: np.ndarray) -> dict[str, Any]:
    """The test split's size and a sha256 of its arrays: promote compares only models measured on the same split.

    Of the arrays, not of test.npz: the file's bytes change with the zip's timestamps, the arrays do not.
    """
    digest = hashlib.sha256()
    for array in (x, y):  # `x` may be a split on disk (`prepared.StoredRows`): hashed as read, 16 MB at a time
        digest.update(str((array.dtype.str, array.shape)).encode())
        rows = max(1, 2**24 // max(1, array.dtype.itemsize * math.prod(array.shape[1:])))
        for start in range(0, len(array), rows):
            digest.update(memoryview(np.ascontiguousarray(array[start : start + rows])).cast("B"))
    return {"examples": len(x), "sha256": digest.hexdigest()}
