"""Pure preprocessing functions on small arrays made here."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.datasets import RawDataset
from pipeline.errors import PipelineError
from pipeline.images import Conversion
from pipeline.preprocessing import (
    apply_minmax,
    fit_minmax,
    one_hot,
    prepare_splits,
    scale_pixels,
    scale_splits,
    split_dataset,
    stored_pixels,
    stratified_split,
)


def test_scale_pixels_maps_to_unit_interval_with_channel_axis() -> None:
    images = np.array([[[0, 255], [128, 1]]], dtype=np.uint8)
    scaled = scale_pixels(images, 255.0)
    assert scaled.shape == (1, 2, 2, 1) and scaled.dtype == np.float32
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    assert scaled[0, 1, 0, 0] == pytest.approx(128 / 255)
    assert images[0, 0, 1] == 255  # the input is not changed


def test_minmax_is_fitted_on_train_and_applied_elsewhere() -> None:
    train = np.array([[1.0, 10.0], [3.0, 10.0]])
    low, span = fit_minmax(train)
    np.testing.assert_array_equal(apply_minmax(train, low, span), [[0.0, 0.0], [1.0, 0.0]])
    # A test value beyond the training range is not clipped; a constant feature does not divide by zero.
    np.testing.assert_allclose(apply_minmax(np.array([[5.0, 12.0]]), low, span), [[2.0, 2.0]])


def test_one_hot() -> None:
    encoded = one_hot(np.array([2, 0, 1, 2]), 3)
    np.testing.assert_array_equal(encoded, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert encoded.dtype == np.float32


def test_stratified_split_is_disjoint_complete_stratified_and_seeded() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(kept, held)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, held])), np.arange(100))
    assert np.bincount(labels[held]).tolist() == [10, 6, 4]
    again_kept, again_held = stratified_split(labels, 0.2, seed=3)
    np.testing.assert_array_equal(held, again_held)
    _, other_held = stratified_split(labels, 0.2, seed=4)
    assert not np.array_equal(held, other_held)


def test_stratified_split_refuses_an_empty_side() -> None:
    with pytest.raises(PipelineError, match="empty"):
        stratified_split(np.arange(10), 0.01, seed=0)


def image_dataset(with_test: bool) -> RawDataset:
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 4
    return RawDataset(
        name="toy",
        kind="image",
        x_train=rng.integers(0, 17, (200, 8, 8)).astype(np.uint8),
        y_train=labels,
        x_test=rng.integers(0, 17, (40, 8, 8)).astype(np.uint8) if with_test else None,
        y_test=np.arange(40) % 4 if with_test else None,
        class_names=("a", "b", "c", "d"),
        pixel_max=16.0,
    )


def test_official_test_split_is_kept_and_validation_comes_from_training_data() -> None:
    raw = image_dataset(with_test=True)
    splits, meta = prepare_splits(raw, val_fraction=0.1, test_fraction=0.5, seed=0)
    assert len(splits["test"].x) == 40  # test_fraction is ignored when there is an official test split
    assert len(splits["train"].x) + len(splits["val"].x) == 200
    assert meta.test_split == "official"
    np.testing.assert_array_equal(splits["test"].x, raw.x_test)  # stored as published; scaled on load
    assert splits["val"].y.sum(axis=0).tolist() == [5, 5, 5, 5]


def test_dataset_without_test_split_gets_stratified_test_and_val_splits() -> None:
    splits, meta = prepare_splits(image_dataset(with_test=False), val_fraction=0.1, test_fraction=0.2, seed=0)
    assert meta.sizes == {"train": 144, "val": 16, "test": 40}
    assert meta.input_shape == (8, 8, 1)
    for split in splits.values():
        assert split.x.dtype == np.uint8 and split.x.shape[1:] == (8, 8)
        assert split.y.shape[1] == 4 and np.all(split.y.sum(axis=1) == 1)
    # No example appears in two splits.
    rows = {name: {row.tobytes() for row in split.x} for name, split in splits.items()}
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"]


def test_tabular_scaling_uses_training_statistics_only() -> None:
    rng = np.random.default_rng(0)
    raw = RawDataset(
        name="tab", kind="tabular", x_train=rng.normal(5, 2, (120, 3)), y_train=np.arange(120) % 3,
        x_test=None, y_test=None, class_names=("x", "y", "z"), feature_names=("f1", "f2", "f3"),
    )  # fmt: skip
    splits, meta = prepare_splits(raw, val_fraction=0.2, test_fraction=0.25, seed=1)
    assert splits["train"].x.min(axis=0) == pytest.approx(0.0) and splits["train"].x.max(axis=0) == pytest.approx(1.0)
    assert meta.scaling.method == "minmax" and len(meta.scaling.min) == 3
    assert meta.feature_names == ("f1", "f2", "f3")


def test_image_files_are_split_by_label_then_described_for_decoding_into_the_shards() -> None:
    rows = np.array([[f"{i}.png", f"sha{i}"] for i in range(40)])
    raw = RawDataset("image_folder", "image_files", rows, np.arange(40) % 2, None, None, ("a", "b"), 255.0)
    labelled = split_dataset(raw, 0.25, 0.2, seed=0)  # by the labels alone: the rows are not opened
    assert sorted(np.concatenate(list(labelled.x.values()))[:, 0].tolist()) == sorted(rows[:, 0].tolist())
    with pytest.raises(PipelineError, match=r"^image_folder: image files need their decoded shape; .*\.$"):
        scale_splits(raw, labelled)
    splits, meta = scale_splits(raw, labelled, Conversion("rgb", (4, 4)).record(), (4, 4, 3))
    assert meta.kind == "image" and meta.input_shape == (4, 4, 3) and meta.image.color_mode == "rgb"
    assert meta.sizes == {name: len(split.x) for name, split in splits.items()} == {"train": 24, "val": 8, "test": 8}
    np.testing.assert_array_equal(splits["test"].x, labelled.x["test"])  # the rows the stage decodes, in order


@pytest.mark.parametrize(
    ("pixels", "problem"), [(np.full((2, 2), 0.5), "fraction"), (np.full((2, 2), -1.0), "negative"),
                            (np.full((2, 2), 256.0), "above 255"), (np.full((2, 2), np.nan), "nan")],
)  # fmt: skip
def test_pixels_a_uint8_cannot_hold_are_refused(pixels: np.ndarray, problem: str) -> None:
    with pytest.raises(PipelineError, match="whole numbers in 0..255"):
        stored_pixels(pixels[np.newaxis], "toy train split")
    np.testing.assert_array_equal(stored_pixels(np.full((1, 2, 2), 16.0), "toy"), np.full((1, 2, 2), 16, np.uint8))
