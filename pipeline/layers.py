"""Keras's BatchNormalization, trained on TensorFlow's fused kernel.

Keras 3 computes batch normalisation in training from separate ops (the batch's moments, then the normalisation),
which on the CPU made it cost nearly as much as the convolutions it follows; TensorFlow's FusedBatchNormV3 does the
same arithmetic in one kernel (BENCHMARKS.md, row 1f). Hand-written for that reason only: the layer is Keras's own
in everything else (weights, config, inference, the moving statistics' rule), and model files name Keras's class
(`keras_classes`), so a saved model loads in plain Keras and exports as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
from keras import layers


class FusedBatchNormalization(layers.BatchNormalization):
    """`layers.BatchNormalization` whose training step on the TensorFlow backend runs one fused kernel per call.

    Where the kernel does not apply (another backend, a mask, renormalisation, inputs other than NHWC images),
    Keras's own computation runs, as it does in inference.
    """

    def call(self, inputs, training=None, mask=None):
        fused = (
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.backend() == "tensorflow"
        )
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")  # as Keras does: statistics in float32 whatever the layer computes in
        channels = x.shape[-1]
        scale = self.gamma if self.scale else tf.ones(channels)
        offset = self.beta if self.center else tf.zeros(channels)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, epsilon=self.epsilon, is_training=True)
        # The kernel returns the batch's unbiased variance (n - 1); Keras's moving variance averages the biased one.
        count = tf.cast(tf.size(x) // channels, "float32")
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


@contextlib.contextmanager
def keras_classes(model: keras.Model) -> Iterator[keras.Model]:
    """`model` with its fused layers as Keras's BatchNormalization while the block runs (to save it): a file that
    names only Keras's classes loads without this module. Same weights and config; only the training step differs."""
    fused = [layer for layer in model.layers if type(layer) is FusedBatchNormalization]
    for layer in fused:
        layer.__class__ = layers.BatchNormalization
    try:
        yield model
    finally:
        for layer in fused:
            layer.__class__ = FusedBatchNormalization
