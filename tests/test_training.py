"""The resumable training loop, called directly on tiny arrays."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import yaml

from pipeline import models, paths, resume, training
from pipeline.distributed import Role
from pipeline.io.reading import load_npz
from pipeline.params import TrainParams, parse_section
from pipeline.prepared import open_split, read_manifest
from tests.harness import PROJECT_ROOT, copy_repo, edit_params, run
from tests.test_augment import ALL
from tests.test_prepared import image_meta, write_drawn

BASE = parse_section(TrainParams, yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["train"])


def test_epoch_order_is_a_permutation_that_changes_every_epoch_and_replays() -> None:
    first, second = training.epoch_order(100, seed=1, epoch=0), training.epoch_order(100, seed=1, epoch=1)
    assert sorted(first) == list(range(100))
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, training.epoch_order(100, seed=1, epoch=0))


def test_epoch_dataset_batches_one_epoch_in_its_own_order() -> None:
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10, dtype=np.float32)[:, None]
    batches = list(training.epoch_dataset(x, y, batch_size=4, seed=3, epoch=1))
    assert [len(bx) for bx, _ in batches] == [4, 4, 2]
    np.testing.assert_array_equal(
        np.concatenate([bx.numpy()[:, 0] for bx, _ in batches]), training.epoch_order(10, seed=3, epoch=1)
    )
    for bx, by in batches:
        np.testing.assert_array_equal(bx.numpy(), by.numpy())  # features and labels stay paired
    full = list(training.epoch_dataset(x, y, batch_size=4, seed=3, epoch=1, drop_remainder=True))
    assert [len(bx) for bx, _ in full] == [4, 4]
    # The run's rule: one process takes every example, a distributed run full batches only.
    assert training.batches_per_epoch(10, 4) == len(batches)
    assert training.batches_per_epoch(10, 4, Role(index=0, count=2)) == len(full)


def test_streamed_epochs_read_every_example_once_as_the_in_memory_epochs_do(tmp_path: Path) -> None:
    """Batches read from many small shards (`train.feed: stream`) are the in-memory batches, value for value:
    every example exactly once per epoch, in that epoch's order, augmented alike, and sliced alike per process."""
    write_drawn(tmp_path)
    split = open_split("train", image_meta(), tmp_path)
    assert len(read_manifest("train", tmp_path).shards) == 7
    held = split.x.load()
    for epoch, augment in ((0, None), (1, None), (2, ALL)):
        streamed = list(training.epoch_dataset(split.x, split.y, batch_size=16, seed=3, epoch=epoch, augment=augment))
        in_memory = list(training.epoch_dataset(held, split.y, batch_size=16, seed=3, epoch=epoch, augment=augment))
        assert [len(bx) for bx, _ in streamed] == [16] * 6 + [4]
        for (sx, sy), (mx, my) in zip(streamed, in_memory, strict=True):
            np.testing.assert_array_equal(sx.numpy(), mx.numpy())
            np.testing.assert_array_equal(sy.numpy(), my.numpy())
        if augment is None:  # every example exactly once, in the epoch's order
            order = training.epoch_order(100, seed=3, epoch=epoch)
            np.testing.assert_array_equal(np.concatenate([bx.numpy() for bx, _ in streamed]), held[order])
    slices = [
        list(training.epoch_dataset(split.x, split.y, batch_size=16, seed=3, epoch=1, drop_remainder=True, role=role))
        for role in (Role(index=0, count=2), Role(index=1, count=2))
    ]
    whole = list(training.epoch_dataset(held, split.y, batch_size=16, seed=3, epoch=1, drop_remainder=True))
    for (first, _), (second, _), (full, _) in zip(*slices, whole, strict=True):
        np.testing.assert_array_equal(np.concatenate([first.numpy(), second.numpy()]), full.numpy())


def test_an_epoch_resumed_within_feeds_exactly_its_remaining_batches(tmp_path: Path) -> None:
    """`skip` (a state saved within an epoch): the batches after the step saved, with the augmentation draws they
    had, read from disk or held in memory, whole or one process's slice."""
    write_drawn(tmp_path)
    split = open_split("train", image_meta(), tmp_path)
    for x, role in ((split.x, None), (split.x.load(), Role(index=1, count=2))):
        same = {"batch_size": 16, "seed": 3, "epoch": 2, "augment": ALL, "role": role,
                "drop_remainder": training.full_batches_only(role)}  # fmt: skip
        whole = list(training.epoch_dataset(x, split.y, **same))
        rest = list(training.epoch_dataset(x, split.y, skip=4, **same))
        assert len(rest) == len(whole) - 4 == training.batches_per_epoch(len(split.y), 16, role) - 4 > 0
        for (rest_x, rest_y), (whole_x, whole_y) in zip(rest, whole[4:], strict=True):
            np.testing.assert_array_equal(rest_x.numpy(), whole_x.numpy())
            np.testing.assert_array_equal(rest_y.numpy(), whole_y.numpy())


def tiny_problem() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.random((64, 4)).astype(np.float32)
    labels = (x[:, 0] > 0.5).astype(int)
    y = np.eye(2, dtype=np.float32)[labels]
    return (x[:48], y[:48]), (x[48:], y[48:])


def fit(state_dir: Path, epochs: int, fingerprint: str = "run-1", steps_per_execution: int = 1, **more: Any):
    params = BASE.model_copy(
        update={
            "mlp": BASE.mlp.model_copy(update={"hidden_units": (8,), "dropout": 0.1}),
            "steps_per_execution": steps_per_execution,
        }
    )
    training.seed_everything(params.seed)
    model = models.build_model(params, (4,), 2)
    train, val = tiny_problem()
    progress = training.fit_resumable(
        model, train, val, epochs=epochs, batch_size=16, patience=0, seed=1, state_dir=state_dir,
        fingerprint=fingerprint, **more,
    )  # fmt: skip
    return model, progress


class StopAfter(keras.callbacks.Callback):
    """Stops training with an exception, as a kill would, after the group of steps ending at `step` of `epoch`:
    after the state saved there (it runs after fit_resumable's own callbacks)."""

    def __init__(self, epoch: int, step: int):
        super().__init__()
        self.stop_epoch, self.stop_step, self.epoch = epoch, step, -1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if (self.epoch, batch) == (self.stop_epoch, self.stop_step):
            raise KeyboardInterrupt


@pytest.mark.slow
@pytest.mark.parametrize(("steps_per_execution", "resumes_at"), [(1, 2), (2, 3)])
def test_a_run_stopped_within_an_epoch_resumes_at_the_step_saved_and_ends_the_same(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, steps_per_execution: int, resumes_at: int
) -> None:
    """3 steps an epoch, a state saved after every group of steps (1 or 2 of them), stopped after the second epoch's
    first group. The rerun trains that epoch's remaining steps only, and ends as the uninterrupted run: weights,
    step counter, and each epoch's logged train loss and accuracy (summed across the stop: Keras's metrics)."""
    whole, whole_progress = fit(tmp_path / "whole", epochs=3)
    every_group = {"checkpoint_minutes": 1e-9, "steps_per_execution": steps_per_execution}
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "stopped", epochs=3, callbacks=[StopAfter(epoch=1, step=steps_per_execution - 1)], **every_group)
    meta = json.loads(str(load_npz(tmp_path / "stopped" / resume.STATE_FILE)["meta"]))
    assert (meta["epochs_done"], meta["steps_done"]) == (1, resumes_at - 1)
    with caplog.at_level(logging.INFO):
        resumed, progress = fit(tmp_path / "stopped", epochs=3, **every_group)
    assert f"resuming at epoch 2 of 3, step {resumes_at} of 3, from" in caplog.text
    assert progress.history == whole_progress.history
    assert int(resumed.optimizer.iterations.numpy()) == 3 * 3
    for one, other in zip(whole.variables, resumed.variables, strict=True):
        np.testing.assert_array_equal(one.numpy(), other.numpy())


@pytest.mark.slow
def test_finished_run_is_not_trained_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, progress = fit(tmp_path, epochs=3)
    assert progress.finished and len(progress.history) == 3
    # As if killed after the last epoch but before the model was exported: the state is still there.
    with caplog.at_level(logging.INFO):
        again, progress_again = fit(tmp_path, epochs=3)
    assert "already finished" in caplog.text
    assert progress_again.history == progress.history
    for before, after in zip(model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(before.numpy(), after.numpy())


@pytest.mark.slow
def test_best_epoch_weights_are_kept(tmp_path: Path) -> None:
    model, progress = fit(tmp_path, epochs=4)
    best = max(progress.history, key=lambda row: (row["val_accuracy"], -row["val_loss"]))
    assert progress.best_epoch == best["epoch"]
    val_x, val_y = tiny_problem()[1]
    scores = model.evaluate(val_x, val_y, verbose=0, return_dict=True)
    assert scores["accuracy"] == pytest.approx(best["val_accuracy"])


@pytest.mark.slow
def test_state_of_another_run_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fit(tmp_path, epochs=2, fingerprint="run-1")
    with caplog.at_level(logging.INFO):
        _, progress = fit(tmp_path, epochs=2, fingerprint="run-2")
    assert "ignoring resume state" in caplog.text
    assert [row["epoch"] for row in progress.history] == [1, 2]


@pytest.mark.slow
def test_unreadable_state_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / resume.STATE_FILE).write_bytes(b"not an npz")
    with caplog.at_level(logging.INFO):
        _, progress = fit(tmp_path, epochs=1)
    assert "ignoring unreadable resume state" in caplog.text
    assert progress.epochs_done == 1


@pytest.mark.slow
def test_steps_per_execution_changes_speed_not_results(tmp_path: Path) -> None:
    # 48 examples / batch 16 = 3 steps per epoch: N=2 does not divide it, N=5 exceeds it. Every epoch must
    # still end at its own last batch (the next epoch's order starts fresh), so the weights equal N=1's.
    weights = {}
    for n in (1, 2, 5):
        model, progress = fit(tmp_path / str(n), epochs=3, steps_per_execution=n)
        assert int(model.optimizer.iterations.numpy()) == 3 * 3
        weights[n] = [w.numpy() for w in model.weights]
    for n in (2, 5):
        for one, other in zip(weights[1], weights[n], strict=True):
            np.testing.assert_array_equal(one, other)


@pytest.mark.slow
def test_jit_compile_param_really_compiles_with_xla() -> None:
    # Op determinism makes Keras drop XLA silently, so the train stage leaves it off when jit_compile is on.
    # A fresh process: op determinism, once enabled by another test, cannot be switched off.
    probe = (
        "import yaml; from pipeline import models, training; "
        "from pipeline.params import TrainParams, parse_section; "
        "p = parse_section(TrainParams, yaml.safe_load(open('params.yaml'))['train']); "
        "p = p.model_copy(update={'jit_compile': True}); "
        "training.seed_everything(1, deterministic_ops=not p.jit_compile); "
        "print(models.build_model(p, (4,), 2).jit_compile)"
    )
    assert run([sys.executable, "-c", probe], PROJECT_ROOT).stdout.strip().splitlines()[-1] == "True"


def test_onednn_param_warns_when_tensorflow_is_already_loaded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As when main() runs in a notebook that already used Keras: the setting cannot apply, and says so."""
    from stages.train import select_onednn

    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # restored after the test
    assert "tensorflow" in sys.modules  # this module imports it
    with caplog.at_level(logging.WARNING):
        select_onednn(True)
    assert "train.onednn cannot apply" in caplog.text


def test_one_process_run_does_not_pass_through_the_distributed_modules(digits_run: Path, tmp_path: Path) -> None:
    """Engine none: the train stage's params go stage -> training -> models -> files, never through distribution.

    Nor does it load the integrations pipeline/__init__.py hides (scikit-learn for Keras, JAX for TF Lite/Orbax)."""
    repo = copy_repo(digits_run, tmp_path / "repo")
    edit_params(repo, **{"train.epochs": 2})
    probe = (
        "import argparse, sys; from stages import train; train.main(argparse.Namespace(quiet=True)); "
        "print(sorted(m for m in sys.modules if m in ('pipeline.distributed', 'pipeline.launcher', 'sklearn', 'jax')))"
    )
    result = run([sys.executable, "-c", probe], repo)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert len((repo / paths.TRAIN_HISTORY).read_text().splitlines()) == 1 + 2  # it did train, just now


def test_resume_fingerprint_covers_exactly_the_code_deps_of_the_train_stage() -> None:
    # dvc.yaml's code deps are the modules the stage imports (tests/test_dvc_yaml.py checks that).
    deps = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    covered = {str(path.relative_to(PROJECT_ROOT)) for path in resume.code_files(PROJECT_ROOT / "stages/train.py")}
    assert {dep for dep in deps if dep.endswith(".py")} == covered


def test_execution_only_params_leave_the_resume_fingerprint_alone() -> None:
    """A resumed run may come back with other execution settings (more steps per call, another coordinator)."""
    other = BASE.model_copy(
        update={
            "steps_per_execution": 1,
            "checkpoint_minutes": 0.5,
            "distributed": BASE.distributed.model_copy(
                update={"launcher": "external", "coordinator": "h:1", "join_timeout": 9}
            ),
        }
    )
    assert resume.fingerprint_params(other) == resume.fingerprint_params(BASE)
    assert resume.fingerprint_params(BASE.model_copy(update={"seed": 7})) != resume.fingerprint_params(BASE)


@pytest.mark.slow
def test_callbacks_of_the_caller_run_after_each_epoch_is_saved(tmp_path: Path) -> None:
    """The extension point bench/timed_train.py uses: a caller's callback sees every epoch, its state already saved."""
    import keras

    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            meta = json.loads(str(load_npz(tmp_path / resume.STATE_FILE)["meta"]))
            seen.append((epoch + 1, meta["epochs_done"], "val_accuracy" in (logs or {})))

    params = BASE.model_copy(update={"mlp": BASE.mlp.model_copy(update={"hidden_units": (8,)})})
    training.seed_everything(params.seed)
    train, val = tiny_problem()
    training.fit_resumable(
        models.build_model(params, (4,), 2), train, val, epochs=3, batch_size=16, patience=0, seed=1,
        state_dir=tmp_path, fingerprint="run-1", callbacks=[Watch()],
    )  # fmt: skip
    assert seen == [(1, 1, True), (2, 2, True), (3, 3, True)]
