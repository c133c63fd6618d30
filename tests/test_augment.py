"""Seeded image augmentation: draws from (seed, epoch, example) only, the geometry, and the epoch's batches."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import yaml

from pipeline import training
from pipeline.augment import affine_transforms, augment_batch, draw_augmentation, epoch_augmentation
from pipeline.params import AugmentParams, TrainParams, parse_section
from tests.harness import PROJECT_ROOT

OFF = parse_section(TrainParams, yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["train"]).augment
ALL = OFF.model_copy(
    update={"flip": "horizontal", "rotation_degrees": 15.0, "translation": 0.1, "zoom": 0.1, "contrast": 0.3}
)
IDENTITY = np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32)


def test_the_shipped_augmentation_is_off() -> None:
    assert not OFF.enabled
    assert np.array_equal(epoch_augmentation(OFF, 1, 0, (5, 8, 8, 1)), np.tile([*IDENTITY, 1.0], (5, 1)))


def test_draws_are_a_function_of_seed_epoch_and_example() -> None:
    first = draw_augmentation(ALL, seed=7, epoch=2, n_examples=50)
    again = draw_augmentation(ALL, seed=7, epoch=2, n_examples=50)
    assert all(np.array_equal(first[key], again[key]) for key in first)
    for other in (draw_augmentation(ALL, 7, 3, 50), draw_augmentation(ALL, 8, 2, 50)):
        assert not np.array_equal(first["angle"], other["angle"])
    assert 0 < first["flip"].sum() < 50
    assert np.all(np.abs(first["angle"]) <= np.deg2rad(15.0)) and np.all(np.abs(first["shift_x"]) <= 0.1)
    # Turning one augmentation off leaves the others' draws as they were.
    no_flip = draw_augmentation(ALL.model_copy(update={"flip": "none"}), 7, 2, 50)
    assert not no_flip["flip"].any() and np.array_equal(no_flip["angle"], first["angle"])


def one_draw(**values: float | bool) -> dict[str, np.ndarray]:
    draw = {"flip": False, "angle": 0.0, "shift_y": 0.0, "shift_x": 0.0, "scale": 1.0, "contrast": 1.0} | values
    return {key: np.array([value]) for key, value in draw.items()}


def transform(image: np.ndarray, **values: float | bool) -> np.ndarray:
    """`image` (H, W) through `augment_batch` with one draw of the given values."""
    height, width = image.shape
    draw = one_draw(**values)
    rows = np.concatenate([affine_transforms(draw, height, width), draw["contrast"][:, None]], axis=1)
    return augment_batch(tf.constant(image[None, :, :, None]), tf.constant(rows, tf.float32), ALL).numpy()[0, :, :, 0]


IMAGE = np.random.default_rng(0).random((6, 8)).astype(np.float32)


def test_the_identity_draw_leaves_the_image_as_it_is() -> None:
    np.testing.assert_array_equal(affine_transforms(one_draw(), 6, 8)[0], IDENTITY)
    np.testing.assert_allclose(transform(IMAGE), IMAGE, atol=1e-6)


def test_flip_mirrors_left_to_right() -> None:
    np.testing.assert_allclose(transform(IMAGE, flip=True), IMAGE[:, ::-1], atol=1e-6)


def test_translation_shifts_by_whole_pixels() -> None:
    shifted = transform(IMAGE, shift_x=2 / 8, shift_y=-1 / 6)  # 2 pixels right, 1 up, zeros come in
    expected = np.zeros_like(IMAGE)
    expected[:-1, 2:] = IMAGE[1:, :-2]
    np.testing.assert_allclose(shifted, expected, atol=1e-6)


def test_a_half_turn_turns_the_image_upside_down() -> None:
    np.testing.assert_allclose(transform(IMAGE, angle=np.pi), IMAGE[::-1, ::-1], atol=1e-5)


def test_contrast_scales_about_the_mean_and_stays_in_range() -> None:
    flat = transform(IMAGE, contrast=0.0)
    np.testing.assert_allclose(flat, np.full_like(IMAGE, IMAGE.mean()), atol=1e-6)
    strong = transform(IMAGE, contrast=5.0)
    assert strong.min() == 0.0 and strong.max() == 1.0


@pytest.mark.parametrize("augment", [None, OFF])
def test_augmentation_off_gives_the_unaugmented_batches(augment: AugmentParams | None) -> None:
    x = np.random.default_rng(1).random((10, 8, 8, 1)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)
    batches = training.epoch_dataset(x, y, batch_size=4, seed=3, epoch=1, augment=augment)
    order = training.epoch_order(10, seed=3, epoch=1)
    np.testing.assert_array_equal(np.concatenate([bx.numpy() for bx, _ in batches]), x[order])


def test_augmented_epochs_replay_byte_for_byte_and_labels_stay_paired() -> None:
    x = np.random.default_rng(1).random((10, 8, 8, 1)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)

    def epoch(number: int) -> tuple[np.ndarray, np.ndarray]:
        batches = list(training.epoch_dataset(x, y, batch_size=4, seed=3, epoch=number, augment=ALL))
        return np.concatenate([bx.numpy() for bx, _ in batches]), np.concatenate([by.numpy() for _, by in batches])

    images, labels = epoch(1)
    order = training.epoch_order(10, seed=3, epoch=1)
    np.testing.assert_array_equal(labels, y[order])
    assert images.tobytes() == epoch(1)[0].tobytes()  # a resumed run redraws the same images
    assert not np.array_equal(images, x[order])
    assert images.tobytes() != epoch(2)[0].tobytes()
    # Each example's change is its own draw's, whatever batch it lands in: batch size changes no image.
    rebatched = training.epoch_dataset(x, y, batch_size=3, seed=3, epoch=1, augment=ALL)
    assert np.concatenate([bx.numpy() for bx, _ in rebatched]).tobytes() == images.tobytes()
