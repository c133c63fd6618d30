"""Seeded image augmentation for training: random flips, rotations, translations, zooms and contrast.

Every example's random draw is a function of (seed, epoch, example index) only (`draw_augmentation`), not of a
random generator's state: a resumed run, which restarts at an epoch boundary, redraws exactly what the killed
run drew, and a rerun draws the same. The draws become one affine matrix per image (`affine_transforms`, NumPy)
applied by TensorFlow's ImageProjectiveTransformV3 inside the epoch's input pipeline (`augment_batch`), never
by layers in the model: the saved and exported models hold no augmentation, so evaluate, export and predict see
the images as they are. (Keras's RandomFlip/RandomRotation layers would be in the model, with a generator
state the resume would have to restore.)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipeline.params import AugmentParams

# The draws' own stream of NumPy's seed sequence: [seed, epoch] alone is the epoch's order (training.epoch_order).
_STREAM = 1


def draw_augmentation(params: AugmentParams, seed: int, epoch: int, n_examples: int) -> dict[str, np.ndarray]:
    """Each example's draw for one epoch, indexed by example: flip (bool), angle (radians), shift_y and shift_x
    (fractions of the side), scale and contrast factors. A draw that is off is its identity value."""
    rng = np.random.default_rng([seed, epoch, _STREAM])
    uniform = rng.uniform(-1.0, 1.0, size=(5, n_examples))  # all five always drawn: one key's value moves no other
    flip = rng.random(n_examples) < 0.5
    return {
        "flip": flip if params.flip == "horizontal" else np.zeros(n_examples, bool),
        "angle": np.deg2rad(params.rotation_degrees) * uniform[0],
        "shift_y": params.translation * uniform[1],
        "shift_x": params.translation * uniform[2],
        "scale": 1.0 + params.zoom * uniform[3],
        "contrast": 1.0 + params.contrast * uniform[4],
    }


def affine_transforms(draw: dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
    """The (N, 8) float32 matrices ImageProjectiveTransformV3 takes: each maps an output pixel (x, y) to the input
    pixel it reads, (a0 x + a1 y + a2, b0 x + b1 y + b2), for the image mirrored (flip), then rotated by `angle`
    and scaled by `scale` about its centre, then shifted. All draws at identity give the identity."""
    cos, sin, scale = np.cos(draw["angle"]), np.sin(draw["angle"]), draw["scale"]
    mirror = np.where(draw["flip"], -1.0, 1.0)
    # Forward: out = scale * R (D (in - c)) + c + t, so in = D R^T (out - c - t) / scale + c (D: the mirror).
    a0, a1 = mirror * cos / scale, mirror * sin / scale
    b0, b1 = -sin / scale, cos / scale
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    ox, oy = cx + draw["shift_x"] * width, cy + draw["shift_y"] * height
    a2 = cx - a0 * ox - a1 * oy
    b2 = cy - b0 * ox - b1 * oy
    zeros = np.zeros_like(a0)
    return np.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1).astype(np.float32)


def epoch_augmentation(params: AugmentParams, seed: int, epoch: int, images_shape: tuple[int, ...]) -> np.ndarray:
    """One row per example of the epoch: its 8 transform coefficients and its contrast factor, (N, 9) float32."""
    n_examples, height, width = images_shape[:3]
    draw = draw_augmentation(params, seed, epoch, n_examples)
    contrast = draw["contrast"].astype(np.float32)[:, None]
    return np.concatenate([affine_transforms(draw, height, width), contrast], axis=1)


def augment_batch(images: tf.Tensor, rows: tf.Tensor, params: AugmentParams) -> tf.Tensor:
    """A batch of images (B, H, W, C) in 0..1, changed by their `epoch_augmentation` rows (B, 9)."""
    if params.flip != "none" or params.rotation_degrees or params.translation or params.zoom:
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=rows[:, :8],
            output_shape=tf.shape(images)[1:3],
            fill_value=0.0,  # the background of MNIST-like images; photos get black corners, as Keras's layers
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
    if params.contrast:
        mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
        factor = tf.reshape(rows[:, 8], (-1, 1, 1, 1))
        images = tf.clip_by_value((images - mean) * factor + mean, 0.0, 1.0)
    return images
