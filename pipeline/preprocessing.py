"""Pure array transforms of the preprocess stage: scale, split, one-hot. Arrays in, new arrays out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.datasets import RawDataset
from pipeline.errors import PipelineError


def scale_pixels(images: np.ndarray, pixel_max: float) -> np.ndarray:
    """Pixels to [0, 1] by the format's maximum (255, or 16 for digits), with a channel axis: (N, H, W, 1)."""
    return (images.astype(np.float32) / np.float32(pixel_max))[..., np.newaxis]


def fit_minmax(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature minimum and range of the training split (a constant feature gets range 1)."""
    low = features.min(axis=0)
    span = features.max(axis=0) - low
    return low, np.where(span > 0, span, 1.0)


def apply_minmax(features: np.ndarray, low: np.ndarray, span: np.ndarray) -> np.ndarray:
    # Validation/test values outside the training range land outside [0, 1] on purpose:
    # clipping would hide that the model sees something new.
    return ((features - low) / span).astype(np.float32)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    encoded = np.zeros((len(labels), n_classes), dtype=np.float32)
    encoded[np.arange(len(labels)), labels] = 1.0
    return encoded


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): `fraction` of each class held out, chosen with `seed`.

    Each class contributes round(fraction * its size) examples, so class
    proportions are the same on both sides (up to rounding). Both index arrays
    are sorted, so the split does not depend on anything but labels and seed.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_held = int(round(fraction * len(members)))
        held.append(rng.permutation(members)[:n_held])
    held_out = np.sort(np.concatenate(held))
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    if len(held_out) == 0 or len(kept) == 0:
        raise PipelineError(
            f"a fraction of {fraction} of {len(labels)} examples leaves one side of the split empty; "
            "choose a fraction nearer 0.5."
        )
    return kept, held_out


@dataclass(frozen=True)
class Split:
    x: np.ndarray
    y: np.ndarray  # one-hot, float32


def prepare_splits(
    raw: RawDataset, val_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, Split], dict[str, Any]]:
    """Scaled, one-hot train/val/test splits and the description later stages (and predict) need.

    The official test split is kept where there is one; otherwise a stratified
    test split is held out first. Validation is always carved from training data.
    Scaling is fitted on the training split only.
    """
    if raw.x_test is not None and raw.y_test is not None:
        x_pool, y_pool, x_test, y_test = raw.x_train, raw.y_train, raw.x_test, raw.y_test
        test_origin = "official"
    else:
        pool_idx, test_idx = stratified_split(raw.y_train, test_fraction, seed)
        x_pool, y_pool = raw.x_train[pool_idx], raw.y_train[pool_idx]
        x_test, y_test = raw.x_train[test_idx], raw.y_train[test_idx]
        test_origin = f"stratified {test_fraction} of the data, seed {seed}"
    # A different stream than the test split's, so changing one fraction does not reshuffle the other.
    train_idx, val_idx = stratified_split(y_pool, val_fraction, seed + 1)
    parts = {
        "train": (x_pool[train_idx], y_pool[train_idx]),
        "val": (x_pool[val_idx], y_pool[val_idx]),
        "test": (x_test, y_test),
    }
    if raw.kind == "image":
        if raw.pixel_max is None:
            raise PipelineError(f"{raw.name}: image dataset without a pixel maximum; the registry entry is incomplete.")
        scaling: dict[str, Any] = {"method": "divide", "pixel_max": raw.pixel_max}
        scaled = {name: scale_pixels(x, raw.pixel_max) for name, (x, _) in parts.items()}
    else:
        low, span = fit_minmax(parts["train"][0])
        scaling = {"method": "minmax", "min": low.tolist(), "range": span.tolist()}
        scaled = {name: apply_minmax(x, low, span) for name, (x, _) in parts.items()}
    n_classes = len(raw.class_names)
    splits = {name: Split(scaled[name], one_hot(y, n_classes)) for name, (_, y) in parts.items()}
    meta = {
        "dataset": raw.name,
        "kind": raw.kind,
        "input_shape": list(splits["train"].x.shape[1:]),
        "class_names": list(raw.class_names),
        "feature_names": list(raw.feature_names),
        "scaling": scaling,
        "sizes": {name: len(split.x) for name, split in splits.items()},
        "test_split": test_origin,
        "val_split": f"stratified {val_fraction} of the training data, seed {seed + 1}",
    }
    return splits, meta
