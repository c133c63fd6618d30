"""Deterministic training that resumes where it was killed.

Why not Keras's BackupAndRestore + ModelCheckpoint + EarlyStopping: they do not
save the dropout generators' state, EarlyStopping's counters or the best
metric so far, and they write files in place (see docs/resume-and-determinism.md). Here one
callback keeps all of it in one state file, rewritten atomically after every
epoch, and the resume rule sits beside the save rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.errors import PipelineError
from pipeline.files import atomic_path, load_npz, write_csv_atomic, write_json_atomic
from pipeline.params import EXECUTION_ONLY, TrainParams, section_as_dict

if TYPE_CHECKING:  # a one-process run never imports pipeline.distributed
    from pipeline.distributed import Role

log = logging.getLogger(__name__)

STATE_FILE = "state.npz"


def model_params(params: TrainParams) -> TrainParams:
    """The params the model is built with. The JAX backend compiles the training step by itself (XLA);
    `jit_compile: false` there would mean running it op by op, ~20x slower, so engine jax always compiles."""
    return dataclasses.replace(params, jit_compile=True) if params.distributed.engine == "jax" else params


def fingerprint_params(params: TrainParams) -> dict[str, Any]:
    """The `train` params that shape the result, as `run_fingerprint` takes them: not the `EXECUTION_ONLY` keys
    (a resumed run may come back on other nodes, with another coordinator address, or run more steps per call)."""
    values = section_as_dict(params)
    for dotted in EXECUTION_ONLY:
        *parents, last = dotted.split(".")[1:]  # below "train"
        section = values
        for key in parents:
            section = section[key]
        del section[last]
    return values


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
    x: tf.Tensor, y: tf.Tensor, *, batch_size: int, seed: int, epoch: int, drop_remainder: bool = False
) -> tf.data.Dataset:
    """The batches of one epoch, in its `epoch_order`; the last one may be partial unless `drop_remainder`.

    One finite dataset per epoch (rather than one stream for the whole run) lets Keras end
    every epoch exactly at its last batch whatever `steps_per_execution` is: the last group of
    steps simply runs short. `x` and `y` should already be tensors, so no epoch copies them.
    """
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    order = epoch_order(int(x.shape[0]), seed, epoch)
    return (
        tf.data.Dataset.from_tensor_slices(order)
        .batch(batch_size, drop_remainder=drop_remainder)
        .map(lambda idx: (tf.gather(x, idx), tf.gather(y, idx)))
        .prefetch(tf.data.AUTOTUNE)
    )


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


def shard_batches(dataset: tf.data.Dataset, *, batch_size: int, role: Role) -> tf.data.Dataset:
    """This process's slice of every batch of `dataset`, whose batches must all be full (`full_batches_only`).

    The slices of all processes together form the one-process batch, in the same order.
    """
    share = batch_size // role.count
    start, stop = role.index * share, (role.index + 1) * share
    return dataset.map(lambda x, y: (x[start:stop], y[start:stop]))


@dataclass
class Progress:
    """Everything about a run that is not a tensor: saved with the tensors after every epoch."""

    fingerprint: str
    epochs_done: int = 0
    best_val_accuracy: float = -math.inf
    best_val_loss: float = math.inf
    best_epoch: int = 0
    wait: int = 0  # epochs since the best one, for early stopping
    finished: bool = False
    # The per-epoch history lives in the resume state, not in a DVCLive callback: after a resume it is
    # rebuilt from this one file, so reports/train_history.csv has exactly one writer.
    history: list[dict[str, float]] = field(default_factory=list)


def _model_layout(model: keras.Model) -> list[str]:
    # Restoring by position is only safe into an identically built model. Shapes and dtypes, not
    # variable paths: Keras numbers auto-named layers per process, so paths differ between two builds.
    return [f"{tuple(v.shape)}:{v.dtype}" for v in model.variables]


def save_state(path: Path, model: keras.Model, best_weights: list[np.ndarray], progress: Progress) -> None:
    """One file holding weights, dropout RNG states, optimizer slots, best weights and counters."""
    arrays: dict[str, Any] = {f"model_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    arrays |= {f"optimizer_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.optimizer.variables)}
    arrays |= {f"best_{i}": w for i, w in enumerate(best_weights)}
    meta = asdict(progress) | {"layout": _model_layout(model)}
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def _set_aside(path: Path, why: str) -> None:
    """Move a damaged state out of the way (kept for a look, until a finished run clears .resume/train)."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    log.warning("ignoring %s; set aside as %s, training from scratch", why, aside)


# What each counter of Progress must be in a saved state (a hand-edited or damaged file is refused, not trusted).
_PROGRESS_TYPES: dict[str, type | tuple[type, ...]] = {
    "epochs_done": int, "best_val_accuracy": (int, float), "best_val_loss": (int, float), "best_epoch": int,
    "wait": int, "finished": bool, "history": list,
}  # fmt: skip


def _state_problem(arrays: dict[str, np.ndarray], meta: dict[str, Any], model: keras.Model) -> str | None:
    """What is wrong with a state written for this run and this layout, or None: checked before anything is assigned."""
    if set(meta) != set(_PROGRESS_TYPES):
        return f"has the counters {sorted(meta)} instead of {sorted(_PROGRESS_TYPES)}"
    for key, kind in _PROGRESS_TYPES.items():
        value = meta[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"holds {key}={value!r}, not a {getattr(kind, '__name__', 'number')}"
    if not all(isinstance(row, dict) for row in meta["history"]) or meta["epochs_done"] < 0:
        return "holds an impossible history or epoch count"
    expected = {f"model_{i}": v for i, v in enumerate(model.variables)}
    expected |= {f"optimizer_{i}": v for i, v in enumerate(model.optimizer.variables)}
    expected |= {f"best_{i}": v for i, v in enumerate(model.weights)}
    if set(arrays) != set(expected):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        return f"lacks the arrays {missing} or has unexpected ones {extra}"
    for key, variable in expected.items():
        if arrays[key].shape != tuple(variable.shape) or arrays[key].dtype != np.dtype(variable.dtype):
            return f"holds {key} of shape {arrays[key].shape} ({arrays[key].dtype}), not {tuple(variable.shape)}"
    return None


def load_state(path: Path, model: keras.Model, fingerprint: str) -> tuple[Progress, list[np.ndarray]] | None:
    """Restore `model` (and its optimizer) from `path` if it belongs to this exact run; else None.

    A state that cannot be read or does not hold what this run saves (truncated, hand-edited) is
    set aside as `state.npz.corrupt` with a warning, and training starts fresh.
    """
    if not path.exists():
        return None
    try:
        arrays = load_npz(path)
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict):
            raise ValueError("its meta is not a JSON object")
    except (PipelineError, OSError, ValueError, KeyError) as err:
        _set_aside(path, f"unreadable resume state {path} ({err})")
        return None
    if meta.pop("fingerprint", None) != fingerprint:
        log.warning(
            "ignoring resume state %s: it was written for other params, code or data; training from scratch", path
        )
        return None
    if meta.pop("layout", None) != _model_layout(model):
        log.warning("ignoring resume state %s: the model's layout differs; training from scratch", path)
        return None
    model.optimizer.build(model.trainable_variables)  # optimizers build lazily; their slots must exist first
    problem = _state_problem(arrays, meta, model)
    if problem is not None:
        _set_aside(path, f"damaged resume state {path}: it {problem}")
        return None
    for i, variable in enumerate(model.variables):
        variable.assign(arrays[f"model_{i}"])
    for i, variable in enumerate(model.optimizer.variables):
        variable.assign(arrays[f"optimizer_{i}"])
    best = [arrays[f"best_{i}"] for i in range(len(model.weights))]
    return Progress(fingerprint=fingerprint, **meta), best


Report = Callable[[Progress], None]


def live_metrics(progress: Progress, epochs: int) -> dict[str, Any]:
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


def publish_progress(progress: Progress, *, epochs: int, live_path: Path, history_path: Path) -> None:
    """Write the history so far and then the live metrics, each atomically: a `Report` for `fit_resumable`.

    Readers from outside (`dvc exp show` on a queued run, `dvc plots show` in the run's workspace) see
    every epoch once it is saved. The writer is the process that saves the resume state, and only it.
    """
    write_csv_atomic(history_path, progress.history)
    write_json_atomic(live_path, live_metrics(progress, epochs))


class _EpochEnd(keras.callbacks.Callback):
    """Track the best epoch and early stopping, then save the whole state (and report it), after every epoch."""

    def __init__(
        self,
        state_path: Path,
        progress: Progress,
        best: list[np.ndarray],
        patience: int,
        epochs: int,
        *,
        save: bool,
        report: Report | None = None,
    ):
        super().__init__()
        self.state_path, self.progress, self.best, self.patience, self.epochs, self.save = (
            state_path, progress, best, patience, epochs, save,
        )  # fmt: skip
        self.report = report

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        progress = self.progress
        progress.history.append({"epoch": epoch + 1} | {k: float(v) for k, v in sorted(logs.items())})
        val_accuracy, val_loss = float(logs["val_accuracy"]), float(logs["val_loss"])
        # Accuracy on a small validation split ties often; the lower loss breaks the tie.
        if (val_accuracy, -val_loss) > (progress.best_val_accuracy, -progress.best_val_loss):
            progress.best_val_accuracy, progress.best_val_loss = val_accuracy, val_loss
            progress.best_epoch, progress.wait = epoch + 1, 0
            self.best[:] = [np.asarray(w.numpy()) for w in self.model.weights]
        else:
            progress.wait += 1
        progress.epochs_done = epoch + 1
        if self.patience and progress.wait >= self.patience:
            log.info("early stopping: no better val_accuracy for %d epochs", self.patience)
            progress.finished = True
        if progress.epochs_done >= self.epochs:
            progress.finished = True
        self.model.stop_training = True  # this `fit` call is this one epoch; fit_resumable starts the next
        if self.save:  # one writer: in a distributed run every process holds the same state
            save_state(self.state_path, self.model, self.best, progress)
            if self.report:  # after the save: what it shows is never ahead of what a resume restores
                self.report(progress)


def fit_resumable(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
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
) -> Progress:
    """Fit `model` (compiled, seeded) and leave it holding its best epoch's weights.

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
    resumed run rebuilds them from the state at once.
    """
    state_path = state_dir / STATE_FILE
    restored = load_state(state_path, model, fingerprint)
    progress, best = restored if restored else (Progress(fingerprint=fingerprint), [])
    writer = role is None or role.writes_outputs
    if role is not None:
        role.agree(progress.epochs_done, "the number of epochs already done (the resume state)")
    if restored and progress.finished:
        log.info("training had already finished (epoch %d); exporting the best model", progress.epochs_done)
    elif restored:
        log.info("resuming at epoch %d of %d from %s", progress.epochs_done + 1, epochs, state_path)
    x_train, y_train = (tf.convert_to_tensor(a) for a in train)  # once: every epoch's batches gather from these
    epoch_end = _EpochEnd(state_path, progress, best, patience, epochs, save=writer, report=report)
    if restored and writer and report:
        report(progress)
    # One `fit` call per epoch, each on that epoch's own finite dataset (see `epoch_dataset`); Keras keeps
    # its compiled train step between calls, and `epochs`/`initial_epoch` keep its "Epoch k/N" log right.
    for epoch in range(progress.epochs_done, epochs):
        if progress.finished:
            break
        dataset = epoch_dataset(
            x_train, y_train, batch_size=batch_size, seed=seed, epoch=epoch, drop_remainder=full_batches_only(role)
        )
        if role is not None:
            dataset = shard_batches(dataset, batch_size=batch_size, role=role)
        model.fit(
            dataset,
            epochs=epochs,
            initial_epoch=epoch,
            validation_data=val,
            shuffle=False,  # the dataset is already in its epoch's order
            class_weight=class_weight,
            callbacks=[epoch_end, *callbacks],
            # A progress bar on a terminal; one line per epoch in CI logs; from process 0 only.
            verbose=(1 if sys.stdout.isatty() else 2) if writer else 0,
        )
    model.set_weights(best)
    log.info("best epoch %d: val_accuracy %.4f", progress.best_epoch, progress.best_val_accuracy)
    return progress


def code_files(entry_point: Path) -> list[Path]:
    """The code a run's fingerprint covers: `entry_point` (the stage's file) and every module of `pipeline`.

    Every module of the package, not a hand-kept list of the ones the stage imports (it once named
    four of the ten, missing `preprocessing.load_split`, which scales the data): nothing to keep in
    sync, and the same list whichever engine runs and whoever calls the stage. It is a superset of
    the train stage's code deps in dvc.yaml, so a change to any of them makes a saved state stale;
    the cost of the superset is that editing a module the stage does not import (evaluation.py)
    also discards an interrupted run's state, i.e. retrains from scratch: never a wrong resume.
    """
    return [entry_point, *sorted(Path(__file__).parent.glob("*.py"))]


def class_weights(labels_one_hot: np.ndarray, method: str) -> dict[int, float] | None:
    """Per-class loss weights from the training split: None (all 1) or scikit-learn's "balanced".

    balanced: n_examples / (n_classes * count of the class), so every class adds the same total
    weight to the loss however many examples it has. A class absent from the split gets 1.
    """
    if method == "none":
        return None
    counts = labels_one_hot.sum(axis=0).astype(np.float64)
    n_classes = len(counts)
    total = counts.sum()
    return {i: float(total / (n_classes * count)) if count else 1.0 for i, count in enumerate(counts)}


def run_fingerprint(params: dict[str, Any], files: list[Path]) -> str:
    """Identity of a run: its params, the bytes of its inputs and code, and the library versions."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for path in files:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    digest.update(f"keras {keras.__version__} tf {tf.__version__} numpy {np.__version__}".encode())
    digest.update(keras.backend.backend().encode())
    return digest.hexdigest()
