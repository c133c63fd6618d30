"""Deterministic training that resumes where it was killed.

Why not Keras's BackupAndRestore + ModelCheckpoint + EarlyStopping: they do not
save the dropout generators' state, EarlyStopping's counters or the best
metric so far, and they write files in place (see docs/resume-and-determinism.md). Here one
callback keeps all of it in one state file, rewritten atomically after every
epoch and within long ones (`train.checkpoint_minutes`); pipeline/resume.py holds that file's format, the
callbacks that write it and the rule for resuming from it. The epoch order and the fit loop here, and those
callbacks, are one bit-exact contract.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from pipeline import feeding
from pipeline.augment import augment_batch, epoch_augmentation
from pipeline.io.atomic import write_csv_atomic, write_json_atomic
from pipeline.params import AugmentParams, TrainParams
from pipeline.prepared import StoredRows
from pipeline.resume import STATE_FILE, EpochEnd, MidEpochSave, Report, RunRecord, load_state

if TYPE_CHECKING:  # a one-process run never imports pipeline.distributed
    from pipeline.distributed import Role

log = logging.getLogger(__name__)


def model_params(params: TrainParams) -> TrainParams:
    """The params the model is built with. The JAX backend compiles the training step by itself (XLA);
    `jit_compile: false` there would mean running it op by op, far slower, so engine jax always compiles."""
    return params.model_copy(update={"jit_compile": True}) if params.distributed.engine == "jax" else params


def seed_everything(seed: int, *, deterministic_ops: bool = True) -> None:
    """Seed Python, NumPy and the backend, and (unless told not to) make TensorFlow's kernels deterministic.

    Keras turns XLA off when op determinism is on, so a run with `train.jit_compile: true`
    passes `deterministic_ops=False`; XLA on the CPU was measured bit-identical run to run
    without it (BENCHMARKS.md, section 1).
    """
    keras.utils.set_random_seed(seed)
    if deterministic_ops and keras.backend.backend() == "tensorflow":
        tf.config.experimental.enable_op_determinism()


def epoch_order(n_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of one epoch: a function of (seed, epoch) only, so a resumed run replays it.

    (Keras's own `shuffle=True` with a fixed seed repeats one order every epoch on
    the TensorFlow backend; measured: its input iterator is re-seeded each epoch.)
    """
    return np.random.default_rng([seed, epoch]).permutation(n_examples)


def epoch_dataset(
    x: Any,
    y: Any,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    drop_remainder: bool = False,
    augment: AugmentParams | None = None,
    role: Role | None = None,
    skip: int = 0,
) -> tf.data.Dataset:
    """The batches of one epoch, in its `epoch_order`; the last one may be partial unless `drop_remainder`.

    One finite dataset per epoch (rather than one stream for the whole run) lets Keras end
    every epoch exactly at its last batch whatever `steps_per_execution` is: the last group of
    steps simply runs short. `x` and `y` should already be what `feeding.held` makes (tensors, or `x` on disk
    as `prepared.StoredRows`, read per batch), so no epoch copies them.
    `augment` (images only) changes each image by its own draw for (seed, epoch, example index)
    (pipeline/augment.py); None, or every augmentation off, leaves the batches as they are.
    A distributed run's `role` keeps this process's slice of every batch (`shard_batches`).
    `skip` leaves out the epoch's first batches (those a run killed within the epoch had trained): only
    indices are skipped, nothing is read for them, and the rest are the same batches with the same draws.
    """
    x, y = feeding.held(x, y)  # a no-op for what fit_resumable passes
    order = epoch_order(int(x.shape[0]), seed, epoch)
    batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder).skip(skip)
    if role is not None:
        batches = shard_batches(batches, batch_size=batch_size, role=role)
    if augment is None or not augment.enabled:
        return feeding.gather(batches, x, y)
    rows = tf.constant(epoch_augmentation(augment, seed, epoch, tuple(x.shape)))
    return feeding.gather(batches, x, y, lambda images, idx: augment_batch(images, tf.gather(rows, idx), augment))


def full_batches_only(role: Role | None) -> bool:
    """The drop-remainder rule of a run, stated here only: a distributed run (`role` given) trains on full batches.

    A partial batch cannot be split evenly among the processes (`shard_batches`), so each epoch of a
    distributed run leaves out its last `len(x) % batch_size` examples (a different few each epoch:
    the order changes). A one-process run trains on every example; its last batch may be partial.
    """
    return role is not None


def batches_per_epoch(n_examples: int, batch_size: int, role: Role | None = None) -> int:
    """How many batches one epoch of the run takes (`epoch_dataset` under `full_batches_only`)."""
    return n_examples // batch_size if full_batches_only(role) else math.ceil(n_examples / batch_size)


def shard_batches(batches: tf.data.Dataset, *, batch_size: int, role: Role) -> tf.data.Dataset:
    """This process's slice of every batch of indices, whose batches must all be full (`full_batches_only`).

    The slices of all processes together form the one-process batch, in the same order; each process
    gathers (or reads from disk) its own examples only.
    """
    share = batch_size // role.count
    start, stop = role.index * share, (role.index + 1) * share
    return batches.map(lambda idx: idx[start:stop])


def live_metrics(progress: RunRecord, epochs: int) -> dict[str, Any]:
    """The run so far, as reports/live.json shows it while training goes on: a function of the progress only,
    so a resumed or watched run ends with the same bytes as one nobody interrupted or watched."""
    latest = progress.history[-1] if progress.history else {}
    return {
        "epoch": progress.epochs_done,
        "epochs": epochs,  # planned; early stopping may end the run before
        "finished": progress.finished,
        "best_epoch": progress.best_epoch,
        "best_val_accuracy": progress.best_val_accuracy,
        "latest": {name: value for name, value in latest.items() if name != "epoch"},
    }


def publish_progress(progress: RunRecord, *, epochs: int, live_path: Path, history_path: Path) -> None:
    """Write the history so far and then the live metrics, each atomically: a `Report` for `fit_resumable`.

    Readers from outside (`dvc exp show` on a queued run, `dvc plots show` in the run's workspace) see
    every epoch once it is saved. The writer is the process that saves the resume state, and only it.
    """
    write_csv_atomic(history_path, progress.history)
    write_json_atomic(live_path, live_metrics(progress, epochs))


def fit_resumable(
    model: keras.Model,
    train: tuple[np.ndarray | StoredRows, np.ndarray],
    val: tuple[np.ndarray | StoredRows, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    state_dir: Path,
    fingerprint: str,
    role: Role | None = None,
    class_weight: dict[int, float] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    report: Report | None = None,
    augment: AugmentParams | None = None,
    before_epoch: Callable[[int], None] | None = None,
    checkpoint_minutes: float = 0.0,
) -> RunRecord:
    """Fit `model` (compiled, seeded) and leave it holding its best epoch's weights.

    `train` and `val` are (x, one-hot y): x in memory, or on disk (`prepared.StoredRows`), read per batch.
    Resumes from `state_dir` when it holds the state of this very run
    (same `fingerprint`); the caller clears that state once the model is saved.
    With a distributed engine (`role`), every process runs this on its share of each
    batch, and only process 0 writes the state. `class_weight` (see `class_weights`)
    weighs each training example's loss by its class; None leaves the loss as it is.
    `callbacks` are Keras callbacks of the caller's, e.g. to time or log epochs
    (bench/timed_train.py): every epoch's `fit` runs them after the one that keeps the best
    epoch and saves the state. Each epoch is its own `fit` call, so their
    `on_train_begin`/`on_train_end` come once per epoch too.
    `report` (e.g. `publish_progress`) is called by the writer with the progress after every saved
    epoch, and once after a resume restored it: DVC deletes a stage's outputs before it runs, so a
    resumed run rebuilds them from the state at once. `augment` changes the training images only
    (`epoch_dataset`); validation sees them as they are. `before_epoch` (e.g. a backbone's
    `enter_phase`) is called with each epoch's index before it runs, and with that of the epoch the
    state was saved in before a resume restores the optimizer built for it. `checkpoint_minutes` (not 0)
    also saves the state within an epoch, after the group of steps that ends that long after the last save;
    a run resumed from there trains only that epoch's later batches, and ends with the same bytes.
    """
    state_path = state_dir / STATE_FILE
    batches = max(1, batches_per_epoch(len(train[0]), batch_size, role))
    restored = load_state(state_path, model, fingerprint, before_epoch, batches_per_epoch=batches)
    progress, best, metrics = restored if restored else (RunRecord(fingerprint=fingerprint), [], [])
    writer = role is None or role.writes_outputs
    if role is not None:
        role.agree(progress.epochs_done, "the number of epochs already done (the resume state)")
        role.agree(progress.steps_done, "the step reached within the epoch (the resume state)")
    if restored and progress.finished:
        log.info("training had already finished (epoch %d); exporting the best model", progress.epochs_done)
    elif restored and progress.steps_done:
        log.info(
            "resuming at epoch %d of %d, step %d of %d, from %s",
            progress.epochs_done + 1, epochs, progress.steps_done + 1, batches, state_path,
        )  # fmt: skip
    elif restored:
        log.info("resuming at epoch %d of %d from %s", progress.epochs_done + 1, epochs, state_path)
    x_train, y_train = feeding.held(*train)  # once: every epoch's batches gather from these
    epoch_end = EpochEnd(state_path, progress, best, patience, epochs, save=writer, report=report, metrics=metrics)
    ours: list[keras.callbacks.Callback] = [epoch_end]
    if writer and checkpoint_minutes:
        ours.append(MidEpochSave(epoch_end, checkpoint_minutes * 60, batches))
    if restored and writer and report:
        report(progress)
    # One `fit` call per epoch, each on that epoch's own finite dataset (see `epoch_dataset`); Keras keeps
    # its compiled train step between calls, and `epochs`/`initial_epoch` keep its "Epoch k/N" log right.
    for epoch in range(progress.epochs_done, epochs):
        if progress.finished:
            break
        if before_epoch:
            before_epoch(epoch)
        if epoch_end.metrics:  # a state saved within this epoch: its metrics' sums go back in on_epoch_begin
            # TensorFlow builds the compiled metrics when it traces the first step, after on_epoch_begin; built
            # here, on labels standing in for predictions (their values do not matter: every sum is assigned).
            model.compute_metrics(None, y_train[:1], y_train[:1])
        dataset = epoch_dataset(
            x_train,
            y_train,
            batch_size=batch_size,
            seed=seed,
            epoch=epoch,
            drop_remainder=full_batches_only(role),
            augment=augment,
            role=role,
            skip=progress.steps_done,  # not 0 only in an epoch resumed from a state saved within it
        )
        model.fit(
            dataset,
            epochs=epochs,
            initial_epoch=epoch,
            validation_data=feeding.validation_data(*val),
            shuffle=False,  # the dataset is already in its epoch's order
            class_weight=class_weight,
            callbacks=[*ours, *callbacks],
            # A progress bar on a terminal; one line per epoch in CI logs; from process 0 only.
            verbose=(1 if sys.stdout.isatty() else 2) if writer else 0,
        )
    model.set_weights(best)
    log.info("best epoch %d: val_accuracy %.4f", progress.best_epoch, progress.best_val_accuracy)
    return progress


def class_weights(labels_one_hot: np.ndarray, method: str) -> dict[int, float] | None:
    """Per-class loss weights from the training split: None (all 1) or scikit-learn's "balanced".

    balanced: n_examples / (n_classes * count of the class), so every class adds the same total
    weight to the loss however many examples it has. A class absent from the split gets 1 (written here:
    scikit-learn's compute_class_weight refuses such a class, and NumPy's bincount is the whole of it).
    """
    if method == "none":
        return None
    counts = labels_one_hot.sum(axis=0).astype(np.float64)
    n_classes = len(counts)
    total = counts.sum()
    return {i: float(total / (n_classes * count)) if count else 1.0 for i, count in enumerate(counts)}
