"""train: data/prepared/ (the train and val splits) + params `train.*` -> models/model.keras, models/summary.json,
reports/train_history.csv, reports/live.json (the last two rewritten after every epoch, for watching).

Builds the model named by `train.model`, fits it with a per-epoch reshuffle,
keeps the epoch with the best validation accuracy, stops early when asked, and
resumes from its last saved state if it was killed (state in .resume/train/: after every epoch, and every
train.checkpoint_minutes within one).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import cpu, paths
from pipeline.cli import run_stage
from pipeline.errors import PipelineError
from pipeline.io.atomic import write_csv_atomic, write_json_atomic
from pipeline.io.lock import exclusive_lock
from pipeline.params import BACKBONES, RECIPE_KEYS, TrainParams, load_params
from pipeline.prepared import open_split
from pipeline.preprocessing import read_meta
from pipeline.resources import hold_in_memory

if TYPE_CHECKING:
    from pipeline.distributed import Role

log = logging.getLogger("train")


def main(args: argparse.Namespace, *, callbacks: Callable[[], Sequence[Any]] = tuple) -> None:
    """Run the stage. `callbacks` is the extension point for tools that watch training (bench/timed_train.py):
    a function called once, after TensorFlow has loaded (so that it can build Keras callbacks without loading
    TensorFlow before this stage has set its environment), returning callbacks that run after every epoch's
    own (`pipeline.training.fit_resumable`). Processes that the `local` launcher starts run without them."""
    params = load_params(TrainParams)
    with workspace_lock(params.distributed):
        run_training(params, callbacks)


def workspace_lock(dist: Any) -> contextlib.AbstractContextManager:
    """Two runs in one workspace would write one resume state: the second is refused with one sentence.

    The local launcher holds the lock for the processes it starts; processes a scheduler starts (srun,
    mpirun, Kubernetes) are the scheduler's to place, and take none.
    """
    if dist.engine != "none" and dist.processes > 1:
        from pipeline import launcher

        if not launcher.launches_here(dist):
            return contextlib.nullcontext()
    return exclusive_lock(paths.TRAIN_LOCK, "train stage")


def run_training(params: TrainParams, callbacks: Callable[[], Sequence[Any]] = tuple) -> None:
    bf16_flags = cpu.bf16_flags()  # the speed of train.precision=mixed_bfloat16 depends on them (docs/bf16.md)
    for warning in cpu.speed_warnings(params, bf16_flags):
        log.warning(warning)
    if hint := cpu.speed_hint(params, bf16_flags):
        log.info(hint)
    if params.distributed.engine != "none":
        train_distributed(params, sys.argv[1:], callbacks)
        return
    select_onednn(params.onednn)  # before TensorFlow is imported (it takes seconds to import; a typo should not)
    model, progress = train_model(params, callbacks=callbacks)
    save_outputs(model, progress)


def train_distributed(params: TrainParams, argv: list[str], callbacks: Callable[[], Sequence[Any]] = tuple) -> None:
    """A run of engine jax: start the processes (launcher `local`), or be one of them and train."""
    from pipeline import distributed, launcher

    if launcher.launches_here(params.distributed):  # start the training processes, watch them
        launcher.launch_local(params.distributed, argv)
        return
    distributed.select_backend(params.distributed)  # before Keras is imported: the engine picks its backend
    select_onednn(params.onednn)
    with distributed.membership(params.distributed) as role:
        model, progress = train_model(params, role, callbacks=callbacks)
        if role.writes_outputs:  # the other processes write nothing
            distributed.stop_distributing()
            save_outputs(model, progress)


def select_onednn(enabled: bool) -> None:
    """TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads: the param decides, not the shell's environment."""
    if "tensorflow" in sys.modules:  # e.g. main() called from a notebook that already ran Keras
        log.warning("train.onednn cannot apply: TensorFlow was loaded earlier in this process and keeps its setting")
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if enabled else "0"


def train_model(
    params: TrainParams, role: Role | None = None, *, callbacks: Callable[[], Sequence[Any]] = tuple
) -> tuple[Any, Any]:
    """Build and fit the model (this process's share of it, given the `role` of a distributed run)."""
    meta = read_meta(paths.PREPARED_META)
    check_augmentation(params, meta.input_shape)  # before TensorFlow loads: a wrong param is refused at once
    from pipeline import models, resume, training

    extra_callbacks = callbacks()  # TensorFlow has loaded now (see main)
    recipe = params.effective()  # fast_cnn's own batch size, epochs and optimizer
    train, val = (feed_split(split, params.feed, recipe.batch_size, meta) for split in ("train", "val"))
    if recipe is not params:
        log.info(recipe_line(params))
    model_params = training.model_params(params)
    training.seed_everything(params.seed, deterministic_ops=not model_params.jit_compile)
    steps_per_epoch = max(1, training.batches_per_epoch(len(train[0]), recipe.batch_size, role))  # a schedule's length
    model = models.build_model(model_params, meta.input_shape, len(meta.class_names), steps_per_epoch=steps_per_epoch)
    # A change to any input, to the code, or to a param makes a saved resume state stale. A split's manifest holds
    # each of its files' sha256, checked against the file when it was opened.
    inputs = [paths.split_manifest("train"), paths.split_manifest("val"), paths.PREPARED_META, *backbone_file(params)]
    code = resume.code_files(Path(__file__))
    phases = None
    if params.model in BACKBONES:  # the frozen phase, then fine-tuning (pipeline/backbones.py)
        from pipeline import backbones

        phases = partial(backbones.enter_phase, model, model_params, steps_per_epoch=steps_per_epoch)
    progress = training.fit_resumable(
        model, train, val,
        epochs=recipe.epochs, batch_size=recipe.batch_size, patience=params.early_stopping_patience,
        seed=params.seed, state_dir=paths.RESUME_DIR,
        fingerprint=resume.run_fingerprint(resume.fingerprint_params(params), inputs + code),
        role=role, callbacks=extra_callbacks, augment=params.augment, before_epoch=phases,
        checkpoint_minutes=params.checkpoint_minutes,
        class_weight=training.class_weights(train[1], params.class_weight),
        report=partial(
            training.publish_progress,
            epochs=recipe.epochs, live_path=paths.LIVE_METRICS, history_path=paths.TRAIN_HISTORY,
        ),
    )  # fmt: skip
    return model, progress


def feed_split(name: str, feed: str, batch_size: int, meta: Any) -> tuple[Any, Any]:
    """One split as training takes it, (x, one-hot y): x held in memory as float32, or read from disk per batch
    (`train.feed`, `resources.hold_in_memory`); the same values either way."""
    split = open_split(name, meta)
    example = 4 * math.prod(meta.input_shape)
    if hold_in_memory(feed, example * len(split.x), example * batch_size, name):
        return split.x.load(), split.y
    return split.x, split.y


def backbone_file(params: TrainParams) -> list[Path]:
    """The weights file a backbone starts from, if train.backbone.weights names one: an input of the run."""
    weights = params.backbone.weights
    return [Path(weights)] if params.model in BACKBONES and weights not in ("imagenet", "none") else []


def check_augmentation(params: TrainParams, input_shape: Sequence[int]) -> None:
    """Refused rather than ignored: a table cannot be flipped or rotated, and a run that silently trained without
    the augmentation its params record would be mislabelled in `dvc exp show`."""
    if params.augment.enabled and len(input_shape) != 3:
        raise PipelineError(
            f"train.augment changes images, but the prepared data has shape {tuple(input_shape)} (a table); "
            "set every train.augment key to its default (none or 0) for this dataset."
        )


def recipe_line(params: TrainParams) -> str:
    """The log's one line saying that fast_cnn trains with its own recipe, not train's keys of the same names."""
    recipe = params.fast_cnn
    return (
        f"train.model=fast_cnn trains with train.fast_cnn's recipe (batch_size {recipe.batch_size}, epochs "
        f"{recipe.epochs}, {recipe.optimizer} betas {recipe.beta_1}/{recipe.beta_2}, {recipe.lr_schedule} learning "
        f"rate {recipe.learning_rate}); train.{', train.'.join(RECIPE_KEYS)} apply to the other models"
    )


def save_outputs(model: Any, progress: Any) -> None:
    """The model, its summary and the training history; then the resume state goes: the run is complete."""
    from pipeline import models

    models.save_model_atomic(model, paths.MODEL)
    write_json_atomic(paths.MODEL_SUMMARY, models.summarize_model(model) | {"best_epoch": progress.best_epoch})
    write_csv_atomic(paths.TRAIN_HISTORY, progress.history)
    shutil.rmtree(paths.RESUME_DIR, ignore_errors=True)


if __name__ == "__main__":
    run_stage(main, __doc__)
