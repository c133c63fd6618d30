"""pipeline/layers.py: the fused batch normalisation computes what Keras's does, and model files name Keras's class."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from pipeline.layers import FusedBatchNormalization
from pipeline.models import save_model_atomic

IMAGES = np.random.default_rng(0).normal(2.0, 3.0, (16, 7, 7, 5)).astype("float32")
# A loss weighting each output differently: with equal weights the scale's gradient would be zero by construction.
LOSS_WEIGHTS = tf.constant(np.random.default_rng(1).normal(0.0, 1.0, IMAGES.shape).astype("float32"))


def twin_layers(shape: tuple[int, ...] = IMAGES.shape) -> tuple[layers.BatchNormalization, FusedBatchNormalization]:
    """Keras's layer and ours, built with the same (non-default) scale and offset."""
    keras_norm, fused_norm = layers.BatchNormalization(), FusedBatchNormalization()
    for norm in (keras_norm, fused_norm):
        norm.build(shape)
        norm.gamma.assign(np.linspace(0.5, 2.0, shape[-1]))
        norm.beta.assign(np.linspace(-1.0, 1.0, shape[-1]))
    return keras_norm, fused_norm


def test_training_steps_match_keras_outputs_gradients_and_moving_statistics() -> None:
    keras_norm, fused_norm = twin_layers()
    for step in range(3):  # the moving statistics move with each step
        batch = tf.constant(IMAGES * (step + 1) + step)
        results = []
        for norm in (keras_norm, fused_norm):
            with tf.GradientTape() as tape:
                tape.watch(batch)
                outputs = norm(batch, training=True)
                loss = tf.reduce_sum(outputs * LOSS_WEIGHTS)
            results.append([outputs, *tape.gradient(loss, [batch, norm.gamma, norm.beta])])
        for ours, theirs in zip(results[1], results[0], strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(fused_norm.moving_mean, keras_norm.moving_mean, rtol=1e-5)
        # Keras averages the biased variance; the kernel returns the unbiased one, which the layer converts.
        np.testing.assert_allclose(fused_norm.moving_variance, keras_norm.moving_variance, rtol=1e-5)
    assert not np.allclose(fused_norm.moving_variance, 1.0)  # the statistics did move


def test_inference_and_inputs_the_kernel_does_not_take_run_keras_own_computation() -> None:
    keras_norm, fused_norm = twin_layers()
    fused_norm.moving_mean.assign(np.arange(5.0))
    keras_norm.moving_mean.assign(np.arange(5.0))
    np.testing.assert_array_equal(fused_norm(IMAGES, training=False), keras_norm(IMAGES, training=False))
    table = IMAGES.reshape(-1, 5)  # rank 2: not NHWC images
    keras_flat, fused_flat = twin_layers(table.shape)
    np.testing.assert_array_equal(fused_flat(table, training=True), keras_flat(table, training=True))
    np.testing.assert_array_equal(fused_flat.moving_variance, keras_flat.moving_variance)


def test_under_mixed_bfloat16_the_layer_computes_in_bfloat16_from_float32_statistics() -> None:
    norm = FusedBatchNormalization(dtype="mixed_bfloat16")
    outputs = norm(tf.cast(IMAGES, "bfloat16"), training=True)
    assert outputs.dtype == tf.bfloat16 and norm.moving_mean.dtype == "float32"
    standardised = (IMAGES - IMAGES.mean(axis=(0, 1, 2))) / np.sqrt(IMAGES.var(axis=(0, 1, 2)) + 1e-3)
    np.testing.assert_allclose(tf.cast(outputs, "float32"), standardised, atol=0.1)


def test_a_saved_model_names_keras_class_and_loads_in_plain_keras(tmp_path: Path) -> None:
    inputs = keras.Input(IMAGES.shape[1:])
    model = keras.Model(inputs, layers.Dense(3)(layers.Flatten()(FusedBatchNormalization()(inputs))))
    model(IMAGES, training=True)  # moves the moving statistics off their initial values
    path = tmp_path / "model.keras"
    save_model_atomic(model, path)
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    saved = [(layer["module"], layer["class_name"]) for layer in config["config"]["layers"]]
    assert ("keras.layers", "BatchNormalization") in saved
    assert type(model.layers[1]) is FusedBatchNormalization  # still fused for further training
    loaded = keras.saving.load_model(path)  # Keras alone, without pipeline's loader
    assert type(loaded.layers[1]) is layers.BatchNormalization
    np.testing.assert_array_equal(loaded.predict(IMAGES, verbose=0), model.predict(IMAGES, verbose=0))


def test_a_failed_save_leaves_the_layers_fused(tmp_path: Path) -> None:
    inputs = keras.Input(IMAGES.shape[1:])
    model = keras.Model(inputs, FusedBatchNormalization()(inputs))
    with pytest.raises(ValueError):
        save_model_atomic(model, tmp_path / "model.h6")  # Keras refuses the suffix
    assert type(model.layers[1]) is FusedBatchNormalization
