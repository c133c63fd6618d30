"""train: data/prepared/{train,val}.npz + params `train.*` -> models/model.keras, models/summary.json,
reports/train_history.csv.

Builds the model named by `train.model`, fits it with a per-epoch reshuffle,
keeps the epoch with the best validation accuracy, stops early when asked, and
resumes from its last completed epoch if it was killed (state in .resume/train/).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from pipeline import cpu, distributed, paths
from pipeline.cli import run_stage
from pipeline.files import read_json, write_csv_atomic, write_json_atomic
from pipeline.params import TrainParams, load_params
from pipeline.preprocessing import load_split

log = logging.getLogger("train")


def main(args: argparse.Namespace) -> None:
    params = load_params(TrainParams)
    distributed.check_config(params)
    bf16_flags = cpu.bf16_flags()  # the speed of train.precision=mixed_bfloat16 depends on them (docs/bf16.md)
    for warning in params.cpu_speed_warnings(bf16_flags):
        log.warning(warning)
    if hint := params.cpu_speed_hint(bf16_flags):
        log.info(hint)
    if distributed.launches_here(params.distributed):  # the `local` launcher: start the processes, watch them
        distributed.launch_local(params.distributed, sys.argv[1:])
        return
    # Before Keras is imported: the engine picks its backend. (TensorFlow takes seconds to import; a typo should not.)
    distributed.select_backend(params.distributed)
    select_onednn(params.onednn)
    with distributed.membership(params.distributed) as role:
        model, progress = train_model(params, role)
        if role.writes_outputs:  # the other processes of a distributed run write nothing
            from pipeline import models

            distributed.stop_distributing()
            models.save_model_atomic(model, paths.MODEL)
            write_json_atomic(paths.MODEL_SUMMARY, models.summarize_model(model) | {"best_epoch": progress.best_epoch})
            write_csv_atomic(paths.TRAIN_HISTORY, progress.history)
            shutil.rmtree(paths.RESUME_DIR, ignore_errors=True)  # the run is complete: nothing to resume


def select_onednn(enabled: bool) -> None:
    """TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads: the param decides, not the shell's environment."""
    if "tensorflow" in sys.modules:  # e.g. main() called from a notebook that already ran Keras
        log.warning("train.onednn cannot apply: TensorFlow was loaded earlier in this process and keeps its setting")
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if enabled else "0"


def train_model(params: TrainParams, role: distributed.Role) -> tuple[Any, Any]:
    """Build and fit the model (this process's share of it, in a distributed run); returns it and its Progress."""
    from pipeline import models, training

    meta = read_json(paths.PREPARED_META)
    train, val = (load_split(paths.split_file(name), meta["scaling"]) for name in ("train", "val"))
    model_params = distributed.model_params(params)
    training.seed_everything(params.seed, deterministic_ops=not model_params.jit_compile)
    # The length of a cosine schedule; a distributed run drops each epoch's last partial batch (fit_resumable).
    distributed_run = params.distributed.engine != "none"
    steps_per_epoch = max(
        1, training.batches_per_epoch(len(train[0]), params.batch_size, drop_remainder=distributed_run)
    )
    model = models.build_model(
        model_params, meta["input_shape"], len(meta["class_names"]), steps_per_epoch=steps_per_epoch
    )
    # A change to any input, to this code, or to a param makes a saved resume state stale.
    inputs = [paths.split_file("train"), paths.split_file("val"), paths.PREPARED_META]
    code = [Path(__file__), Path(training.__file__), Path(models.__file__), Path(distributed.__file__)]
    progress = training.fit_resumable(
        model, train, val,
        epochs=params.epochs, batch_size=params.batch_size, patience=params.early_stopping_patience,
        seed=params.seed, state_dir=paths.RESUME_DIR,
        fingerprint=training.run_fingerprint(distributed.fingerprint_params(params), inputs + code),
        role=role if params.distributed.engine != "none" else None,
    )  # fmt: skip
    return model, progress


if __name__ == "__main__":
    run_stage(main, __doc__)
