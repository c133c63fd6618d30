"""The batches a model takes, as tf.data datasets: gathered from tensors held in memory, or read from the
memory-mapped shards of data/prepared (`prepared.StoredRows`) and scaled to float32 per batch.

Both give the same values batch for batch, so holding the data in memory (`train.feed`) changes the speed,
never a number (docs/data-on-disk.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from pipeline.prepared import StoredRows
from pipeline.resources import STREAM_BATCHES, check_working_set

# Keras batches validation arrays by 32 when fit is given no batch size (it is given datasets): streamed
# validation uses the same, so a streamed run's val_loss is the in-memory run's to the bit.
VALIDATION_BATCH = 32
READ_PARALLEL = 2  # batches read from the shards at once (in order: deterministic)
READ_AHEAD = 2  # batches read ahead of the model: bounded, each one batch_size examples


def held(x: np.ndarray | StoredRows, y: np.ndarray) -> tuple[Any, Any]:
    """`x` and `y` as the batches gather them: tensors (converted once, not per epoch) unless `x` stays on disk."""
    return (x if isinstance(x, StoredRows) else tf.convert_to_tensor(x)), tf.convert_to_tensor(y)


def reader(x: Any) -> Callable[[tf.Tensor], tf.Tensor]:
    """A batch of indices -> those examples of `x`, gathered from a tensor or read from the shards."""
    if not isinstance(x, StoredRows):
        return lambda idx: tf.gather(x, idx)
    row_shape = x.shape[1:]

    def read(idx: tf.Tensor) -> tf.Tensor:
        batch = tf.numpy_function(x.__getitem__, [idx], tf.float32, stateful=False)
        return tf.ensure_shape(batch, (None, *row_shape))

    return read


def gather(index_batches: tf.data.Dataset, x: Any, y: Any, transform: Callable | None = None) -> tf.data.Dataset:
    """(x, y) for every batch of indices, in order; `transform(x_batch, idx)` (augmentation) runs on each."""
    read = reader(x)
    if transform is None:
        step = lambda idx: (read(idx), tf.gather(y, idx))  # noqa: E731
    else:
        step = lambda idx: (transform(read(idx), idx), tf.gather(y, idx))  # noqa: E731
    if isinstance(x, StoredRows):
        return index_batches.map(step, num_parallel_calls=READ_PARALLEL, deterministic=True).prefetch(READ_AHEAD)
    return index_batches.map(step).prefetch(tf.data.AUTOTUNE)


def in_order(x: Any, y: Any, batch_size: int) -> tf.data.Dataset:
    """Every example of `x` once, in order, `batch_size` at a time (validation, prediction)."""
    indices = tf.data.Dataset.range(int(x.shape[0])).batch(batch_size)
    return gather(indices, x, y)


def validation_data(x: np.ndarray | StoredRows, y: np.ndarray) -> Any:
    """What `fit` validates on: arrays held in memory as they are (Keras batches them), else batches read in order."""
    return (x, y) if not isinstance(x, StoredRows) else in_order(*held(x, y), VALIDATION_BATCH)


def predict(model: Any, x: np.ndarray | StoredRows, batch_size: int, key: str = "evaluate.batch_size") -> np.ndarray:
    """The model's outputs for every example of `x`, in order; a split on disk is read batch by batch, after the
    check that the batches in flight fit in memory (`key` names the batch size to lower if not)."""
    if not isinstance(x, StoredRows):
        return model.predict(x, batch_size=batch_size, verbose=0)
    batch = batch_size * 4 * math.prod(x.shape[1:])
    check_working_set(STREAM_BATCHES * batch, f"{STREAM_BATCHES} batches of {batch_size} examples", f"lower {key}")
    no_labels = tf.zeros((len(x), 0))
    # One batch per call: with several, the steps of one call are independent in TensorFlow's graph, which then
    # reads all their batches at once (measured: 12 batches of 123 MB held together at steps_per_execution 64).
    steps, model.steps_per_execution = model.steps_per_execution, 1
    try:
        return model.predict(in_order(x, no_labels, batch_size).map(lambda xs, _: xs), verbose=0)
    finally:
        model.steps_per_execution = steps
