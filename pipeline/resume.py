"""What a killed training run leaves behind, and whether the next run may resume from it.

After every epoch the train stage saves one state file (`save_state`): the weights, the dropout
generators' states, the optimizer's slots, the best epoch's weights and the counters (`RunRecord`).
The next run restores it (`load_state`) only if it was written by this very run: the same
fingerprint (`run_fingerprint` of the params that shape the result, the inputs, the code and the
library versions) and the same model layout. A state that cannot be read or does not hold what a
run saves is set aside, not trusted. pipeline/training.py's `fit_resumable` calls both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
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
    # The per-epoch history lives in the resume state, not in a DVCLive callback: after a resume it is
    # rebuilt from this one file, so reports/train_history.csv has exactly one writer.
    history: list[dict[str, float]] = field(default_factory=list)


def _model_layout(model: keras.Model) -> list[str]:
    # Restoring by position is only safe into an identically built model. Shapes and dtypes, not
    # variable paths: Keras numbers auto-named layers per process, so paths differ between two builds.
    return [f"{tuple(v.shape)}:{v.dtype}" for v in model.variables]


def save_state(path: Path, model: keras.Model, best_weights: list[np.ndarray], progress: RunRecord) -> None:
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


# What each counter of RunRecord must be in a saved state (a hand-edited or damaged file is refused, not trusted).
_PROGRESS_TYPES: dict[str, type | tuple[type, ...]] = {
    "epochs_done": int, "best_val_accuracy": (int, float), "best_val_loss": (int, float), "best_epoch": int,
    "wait": int, "finished": bool, "history": list,
}  # fmt: skip


def _counters_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a state's counters (RunRecord), or None."""
    if set(meta) != set(_PROGRESS_TYPES):
        return f"has the counters {sorted(meta)} instead of {sorted(_PROGRESS_TYPES)}"
    for key, kind in _PROGRESS_TYPES.items():
        value = meta[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"holds {key}={value!r}, not a {getattr(kind, '__name__', 'number')}"
    if not all(isinstance(row, dict) for row in meta["history"]) or meta["epochs_done"] < 0:
        return "holds an impossible history or epoch count"
    return None


def _arrays_problem(arrays: dict[str, np.ndarray], model: keras.Model) -> str | None:
    """What is wrong with a state's arrays for this model and its optimizer, or None."""
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


def load_state(
    path: Path, model: keras.Model, fingerprint: str, before_restore: Callable[[int], None] | None = None
) -> tuple[RunRecord, list[np.ndarray]] | None:
    """Restore `model` (and its optimizer) from `path` if it belongs to this exact run; else None.

    A state that cannot be read or does not hold what this run saves (truncated, hand-edited) is
    set aside as `state.npz.corrupt` with a warning, and training starts fresh. `before_restore` is
    called with the epochs the state has done before its optimizer's variables are restored: a model
    whose trainable layers change between epochs (pipeline/backbones.py) sets those of the last one
    saved, for which the saved optimizer was built.
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
    problem = _counters_problem(meta)
    if problem is None and before_restore is not None:
        before_restore(meta["epochs_done"])
    if problem is None:
        model.optimizer.build(model.trainable_variables)  # optimizers build lazily; their slots must exist first
        problem = _arrays_problem(arrays, model)
    if problem is not None:
        _set_aside(path, f"damaged resume state {path}: it {problem}")
        return None
    for i, variable in enumerate(model.variables):
        variable.assign(arrays[f"model_{i}"])
    for i, variable in enumerate(model.optimizer.variables):
        variable.assign(arrays[f"optimizer_{i}"])
    best = [arrays[f"best_{i}"] for i in range(len(model.weights))]
    return RunRecord(fingerprint=fingerprint, **meta), best


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
