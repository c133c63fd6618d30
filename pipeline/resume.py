"""What a killed training run leaves behind, and whether the next run may resume from it.

After every epoch, and within an epoch every `train.checkpoint_minutes`, the train stage saves one state file
(`save_state`): the weights, the dropout generators' states, the optimizer's slots, the best epoch's weights and
the counters (`RunRecord`); saved within an epoch, also the step reached and the sums the metrics have
accumulated over the epoch's steps so far (`restore_metrics` puts them back).
The next run restores it (`load_state`) only if it was written by this very run: the same
fingerprint (`run_fingerprint` of the params that shape the result, the inputs, the code and the
library versions) and the same model layout. A state that cannot be read or does not hold what a
run saves is set aside, not trusted. pipeline/training.py's `fit_resumable` calls both, and runs the
callbacks that save (`EpochEnd`, `MidEpochSave`): the save rule next to the resume rule. Longer than most
modules on purpose, for that reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.code_deps import ROOT, import_closure
from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path
from pipeline.io.reading import load_npz
from pipeline.params import EXECUTION_ONLY, TrainParams, section_as_dict

log = logging.getLogger(__name__)

STATE_FILE = "state.npz"


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


@dataclass
class RunRecord:
    """Everything about a run that is not a tensor: saved with the tensors after every epoch."""

    fingerprint: str
    epochs_done: int = 0
    best_val_accuracy: float = -math.inf
    best_val_loss: float = math.inf
    best_epoch: int = 0
    wait: int = 0  # epochs since the best one, for early stopping
    finished: bool = False
    steps_done: int = 0  # steps of epoch `epochs_done + 1` trained when saved within it; 0 when saved at its end
    # The per-epoch history lives in the resume state, not in a DVCLive callback: after a resume it is
    # rebuilt from this one file, so reports/train_history.csv has exactly one writer.
    history: list[dict[str, float]] = field(default_factory=list)


def _model_layout(model: keras.Model) -> list[str]:
    # Restoring by position is only safe into an identically built model. Shapes and dtypes, not
    # variable paths: Keras numbers auto-named layers per process, so paths differ between two builds.
    return [f"{tuple(v.shape)}:{v.dtype}" for v in model.variables]


def save_state(path: Path, model: keras.Model, best_weights: list[np.ndarray], progress: RunRecord) -> None:
    """One file holding weights, dropout RNG states, optimizer slots, best weights and counters; within an epoch
    (`progress.steps_done` > 0), also the metrics' accumulators (the loss and accuracy summed over its steps)."""
    arrays: dict[str, Any] = {f"model_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    arrays |= {f"optimizer_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.optimizer.variables)}
    arrays |= {f"best_{i}": w for i, w in enumerate(best_weights)}
    if progress.steps_done:
        arrays |= {f"metrics_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.metrics_variables)}
    meta = asdict(progress) | {"layout": _model_layout(model)}
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def _set_aside(path: Path, why: str) -> None:
    """Move a damaged state out of the way (kept for a look, until a finished run clears .resume/train)."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    log.warning("ignoring %s; set aside as %s, training from scratch", why, aside)


# What each counter of RunRecord must be in a saved state (a hand-edited or damaged file is refused, not trusted).
_PROGRESS_TYPES: dict[str, type | tuple[type, ...]] = {
    "epochs_done": int, "best_val_accuracy": (int, float), "best_val_loss": (int, float), "best_epoch": int,
    "wait": int, "finished": bool, "history": list, "steps_done": int,
}  # fmt: skip


def _counters_problem(meta: dict[str, Any], batches_per_epoch: int) -> str | None:
    """What is wrong with a state's counters (RunRecord), or None."""
    if set(meta) != set(_PROGRESS_TYPES):
        return f"has the counters {sorted(meta)} instead of {sorted(_PROGRESS_TYPES)}"
    for key, kind in _PROGRESS_TYPES.items():
        value = meta[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"holds {key}={value!r}, not a {getattr(kind, '__name__', 'number')}"
    if not all(isinstance(row, dict) for row in meta["history"]) or meta["epochs_done"] < 0:
        return "holds an impossible history or epoch count"
    if not 0 <= meta["steps_done"] < batches_per_epoch:
        return f"holds steps_done={meta['steps_done']}, not a step within an epoch of {batches_per_epoch} batches"
    return None


def _arrays_problem(arrays: dict[str, np.ndarray], model: keras.Model, mid_epoch: bool) -> str | None:
    """What is wrong with a state's arrays for this model and its optimizer, or None. The metrics' accumulators
    (a state saved within an epoch) are checked against the metrics once `fit` has built them (`restore_metrics`)."""
    metrics = sorted(key for key in arrays if key.startswith("metrics_"))
    if metrics != sorted(f"metrics_{i}" for i in range(len(metrics))) or bool(metrics) != mid_epoch:
        return f"holds the metric accumulators {metrics}, {'saved within' if mid_epoch else 'at the end of'} an epoch"
    expected = {f"metrics_{i}": arrays[f"metrics_{i}"] for i in range(len(metrics))}
    expected |= {f"model_{i}": v for i, v in enumerate(model.variables)}
    expected |= {f"optimizer_{i}": v for i, v in enumerate(model.optimizer.variables)}
    expected |= {f"best_{i}": v for i, v in enumerate(model.weights)}
    if set(arrays) != set(expected):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        return f"lacks the arrays {missing} or has unexpected ones {extra}"
    for key, variable in expected.items():
        if arrays[key].shape != tuple(variable.shape) or arrays[key].dtype != np.dtype(variable.dtype):
            return f"holds {key} of shape {arrays[key].shape} ({arrays[key].dtype}), not {tuple(variable.shape)}"
    return None


def load_state(
    path: Path,
    model: keras.Model,
    fingerprint: str,
    before_restore: Callable[[int], None] | None = None,
    *,
    batches_per_epoch: int,
) -> tuple[RunRecord, list[np.ndarray], list[np.ndarray]] | None:
    """Restore `model` (and its optimizer) from `path` if it belongs to this exact run; else None.

    Returns the counters, the best epoch's weights and, for a state saved within an epoch, the metrics'
    accumulators, which `fit` resets when the epoch begins: `restore_metrics` puts them back after that.
    A state that cannot be read or does not hold what this run saves (truncated, hand-edited) is
    set aside as `state.npz.corrupt` with a warning, and training starts fresh. `before_restore` is
    called with the index of the epoch the state was saved in (the last one finished, or the one it was
    saved within) before its optimizer's variables are restored: a model whose trainable layers change
    between epochs (pipeline/backbones.py) sets that epoch's, for which the saved optimizer was built.
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
    problem = _counters_problem(meta, batches_per_epoch)
    if problem is None and before_restore is not None:
        before_restore(meta["epochs_done"] if meta["steps_done"] else max(meta["epochs_done"] - 1, 0))
    if problem is None:
        model.optimizer.build(model.trainable_variables)  # optimizers build lazily; their slots must exist first
        problem = _arrays_problem(arrays, model, mid_epoch=meta["steps_done"] > 0)
    if problem is not None:
        _set_aside(path, f"damaged resume state {path}: it {problem}")
        return None
    for i, variable in enumerate(model.variables):
        variable.assign(arrays[f"model_{i}"])
    for i, variable in enumerate(model.optimizer.variables):
        variable.assign(arrays[f"optimizer_{i}"])
    best = [arrays[f"best_{i}"] for i in range(len(model.weights))]
    metrics = [arrays[f"metrics_{i}"] for i in range(sum(key.startswith("metrics_") for key in arrays))]
    return RunRecord(fingerprint=fingerprint, **meta), best, metrics


def restore_metrics(model: keras.Model, values: list[np.ndarray], path: Path) -> None:
    """Put back the metrics' accumulators of a state saved within an epoch, once `fit` has built and reset them.

    The rest of the state was checked when it was loaded; these only now that the metrics exist (their variables
    are made on first use: fit_resumable uses them once before). A state of this very run (its fingerprint) always
    matches: only a hand-made one fails.
    """
    variables = model.metrics_variables
    saved = [(value.shape, value.dtype) for value in values]
    if saved != [(tuple(v.shape), np.dtype(v.dtype)) for v in variables]:
        raise PipelineError(
            f"the resume state {path} holds {len(values)} metric accumulators that do not fit this model's "
            f"{len(variables)}; delete {path.parent} to train from scratch."
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


# ----------------------------------------------------------------------------- saving as training goes

Report = Callable[[RunRecord], None]


class EpochEnd(keras.callbacks.Callback):
    """Track the best epoch and early stopping, then save the whole state (and report it), after every epoch.
    Within an epoch: save it when `MidEpochSave` asks, and carry on from a state saved there."""

    def __init__(
        self,
        state_path: Path,
        progress: RunRecord,
        best: list[np.ndarray],
        patience: int,
        epochs: int,
        *,
        save: bool,
        report: Report | None = None,
        metrics: list[np.ndarray] | None = None,
    ):
        super().__init__()
        self.state_path, self.progress, self.best, self.patience, self.epochs, self.save = (
            state_path, progress, best, patience, epochs, save,
        )  # fmt: skip
        self.report = report
        self.metrics = metrics or []  # the accumulators of a state saved within an epoch, until restored
        self.first_step = 0  # the epoch's steps trained before this `fit` call began (by a killed run)
        self.saved_at = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Keras has just reset the metrics (`fit` calls reset_metrics right before on_epoch_begin). A resumed epoch
        # carries on the sums of the steps the killed run trained, so it logs the uninterrupted run's loss and accuracy.
        self.first_step = self.progress.steps_done
        if self.metrics:
            restore_metrics(self.model, self.metrics, self.state_path)
            self.metrics = []

    def save_within_epoch(self, steps_done: int) -> None:
        self.progress.steps_done = steps_done
        self._save()

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
        progress.steps_done = 0
        self.model.stop_training = True  # this `fit` call is this one epoch; fit_resumable starts the next
        if self.save:  # one writer: in a distributed run every process holds the same state
            self._save()
            if self.report:  # after the save: what it shows is never ahead of what a resume restores
                self.report(progress)

    def _save(self) -> None:
        save_state(self.state_path, self.model, self.best, self.progress)  # `model` syncs a JAX run's state first
        self.saved_at = time.monotonic()


class MidEpochSave(keras.callbacks.Callback):
    """Have `keeper` save the state within an epoch once `seconds` have passed since its last save.

    Keras calls `on_train_batch_end` after each group of `steps_per_execution` steps, with the group's last step
    counted from the `fit` call's first: the model's state is whole there. Never after an epoch's last group, which
    the epoch's own save follows. Only the writer has one, and only when `train.checkpoint_minutes` is not 0.
    """

    def __init__(self, keeper: EpochEnd, seconds: float, batches: int):
        super().__init__()
        self.keeper, self.seconds, self.batches = keeper, seconds, batches

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        steps_done = self.keeper.first_step + batch + 1
        if steps_done < self.batches and time.monotonic() - self.keeper.saved_at >= self.seconds:
            self.keeper.save_within_epoch(steps_done)


def code_files(entry_point: Path) -> list[Path]:
    """The code a run's fingerprint covers: the train stage's file and every module it imports, as dvc.yaml lists
    them (`pipeline.code_deps`): editing a module the stage does not run keeps an interrupted run's state."""
    return [ROOT / path for path in import_closure(entry_point)]


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
