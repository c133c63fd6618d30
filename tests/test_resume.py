"""Training killed mid-run resumes from its last completed epoch and ends exactly where an uninterrupted run ends.

Real processes, real signals: the train stage (or `dvc repro`) is started as a
subprocess, killed once its resume state shows a few finished epochs, and run again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline import paths
from tests.harness import ENV, VENV_BIN, copy_repo, dvc, edit_params, make_prepared_repo, stage

pytestmark = pytest.mark.slow  # training runs killed and resumed, as subprocesses

EPOCHS = 15
# Dropout makes the run depend on the random-generator state, which a resume must restore too.
RUN_PARAMS = {
    "train.epochs": EPOCHS,
    "train.early_stopping_patience": 0,
    "train.mlp.dropout": 0.2,
    "train.lr_schedule": "cosine",  # the rate follows the step counter, which a resume must restore too
}


@pytest.fixture(scope="session")
def prepared_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits downloaded and preprocessed, train params set for these tests; copy before use."""
    return make_prepared_repo(tmp_path_factory.mktemp("prepared") / "repo", RUN_PARAMS)


def train_and_evaluate(repo: Path) -> subprocess.CompletedProcess:
    result = stage(repo, "train")
    assert result.returncode == 0, result.stderr
    assert stage(repo, "evaluate").returncode == 0
    return result


@pytest.fixture(scope="session")
def uninterrupted(prepared_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repo(prepared_base, tmp_path_factory.mktemp("uninterrupted") / "repo")
    train_and_evaluate(repo)
    return repo


@pytest.fixture(autouse=True)
def sigint_reaches_children() -> Iterator[None]:
    """As in a terminal, where Ctrl-C reaches the stage.

    A CI runner, or `cmd &` in a script, may start pytest with SIGINT ignored, and an ignored
    signal stays ignored in every child; a handled one is reset to the default at exec.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def saved_position(repo: Path) -> tuple[int, int]:
    """(epochs done, steps done within the next) in the resume state; (0, 0) before it is written."""
    state = repo / paths.RESUME_DIR / "state.npz"
    if not state.exists():
        return 0, 0
    # Only the small "meta" member: loading every array at each poll made the poll slower than an epoch of
    # digits, so on a loaded machine the run could finish between reaching `after_epochs` and the signal.
    with np.load(state, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
    return meta["epochs_done"], meta["steps_done"]


def epochs_saved(repo: Path) -> int:
    return saved_position(repo)[0]


def start_and_kill(
    args: list[str],
    repo: Path,
    sig: signal.Signals,
    after_epochs: int = 3,
    epochs: int = EPOCHS,
    *,
    within_epoch: bool = False,
) -> int:
    """Start `args`, send `sig` to its whole process group once `after_epochs` are saved; return epochs saved.

    `within_epoch`: only once the state was saved within an epoch (`train.checkpoint_minutes`, set tiny). The run
    is stopped (SIGSTOP) while the state is read, so that the signal lands on a state saved there.
    """
    process = subprocess.Popen(
        args,
        cwd=repo,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, f"finished before it could be killed:\n{process.stderr.read()}"
        assert time.monotonic() < deadline, "no epoch was saved within 120 s"
        if epochs_saved(repo) >= after_epochs:
            if not within_epoch:
                break
            os.killpg(process.pid, signal.SIGSTOP)
            if saved_position(repo)[1] > 0:
                break
            os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.02)
    os.killpg(process.pid, sig)
    if within_epoch:
        os.killpg(process.pid, signal.SIGCONT)  # a stopped process takes no signal but SIGKILL until continued
    process.wait(timeout=60)
    assert process.returncode != 0, "the run finished before the signal arrived"
    saved = epochs_saved(repo)
    assert after_epochs <= saved < epochs
    return saved


def assert_same_result(repo: Path, reference: Path) -> None:
    for output in ("metrics.json", "reports/train_history.csv"):
        assert (repo / output).read_bytes() == (reference / output).read_bytes(), output
    for name, weights in load_npz_weights(repo).items():
        np.testing.assert_array_equal(weights, load_npz_weights(reference)[name])


def load_npz_weights(repo: Path) -> dict[str, np.ndarray]:
    from pipeline.models import load_model

    return {v.path: v.numpy() for v in load_model(repo / paths.MODEL).weights}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_killed_train_stage_resumes_and_matches_uninterrupted_run(
    sig: signal.Signals, prepared_base: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    repo = copy_repo(prepared_base, tmp_path / "repo")
    saved = start_and_kill([sys.executable, "-m", "stages.train"], repo, sig)
    assert not (repo / "models").exists(), "a killed run must not leave a model behind"

    result = train_and_evaluate(repo)
    assert f"resuming at epoch {saved + 1} of {EPOCHS}" in result.stderr
    assert "Epoch 1/" not in result.stdout  # epochs already done are not trained again
    assert not (repo / paths.RESUME_DIR).exists(), "resume state must be cleared after a successful run"
    assert_same_result(repo, uninterrupted)


def test_killed_bf16_run_resumes_and_matches_uninterrupted_bf16_run(
    prepared_base: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    """train.precision=mixed_bfloat16: deterministic (two runs, one of them resumed, give the same bytes)
    and resumable, and not float32 under another name (its weights differ from the float32 run's)."""
    runs = []
    for name in ("uninterrupted", "resumed"):
        repo = copy_repo(prepared_base, tmp_path / name)
        edit_params(repo, **{"train.precision": "mixed_bfloat16"})
        if name == "resumed":
            saved = start_and_kill([sys.executable, "-m", "stages.train"], repo, signal.SIGKILL)
            assert f"resuming at epoch {saved + 1} of {EPOCHS}" in train_and_evaluate(repo).stderr
        else:
            train_and_evaluate(repo)
        runs.append(repo)
    assert_same_result(runs[1], runs[0])
    bf16, float32 = load_npz_weights(runs[0]), load_npz_weights(uninterrupted)
    assert any(not np.array_equal(bf16[name], float32[name]) for name in bf16)


def test_killed_dvc_repro_resumes_on_the_next_repro(prepared_base: Path, uninterrupted: Path, tmp_path: Path) -> None:
    repo = copy_repo(prepared_base, tmp_path / "repo")
    saved = start_and_kill([str(VENV_BIN / "dvc"), "repro"], repo, signal.SIGKILL)
    result = dvc(repo, "repro")
    assert f"resuming at epoch {saved + 1} of {EPOCHS}" in result.stderr + result.stdout
    assert_same_result(repo, uninterrupted)


def test_changed_param_makes_resume_state_stale(prepared_base: Path, tmp_path: Path) -> None:
    repo = copy_repo(prepared_base, tmp_path / "repo")
    start_and_kill([sys.executable, "-m", "stages.train"], repo, signal.SIGKILL)
    edit_params(repo, **{"train.learning_rate": 0.002})
    result = stage(repo, "train")
    assert result.returncode == 0, result.stderr
    assert "ignoring resume state" in result.stderr and "written for other params" in result.stderr
    assert "resuming" not in result.stderr
    assert re.search(r"^Epoch 1/15", result.stdout, re.MULTILINE)
    history = (repo / paths.TRAIN_HISTORY).read_text().splitlines()
    assert len(history) == 1 + EPOCHS and history[1].startswith("1,")


def test_changed_code_makes_resume_state_stale(prepared_base: Path, tmp_path: Path) -> None:
    """Any module the stage imports is part of the run: here preprocessing, whose `load_split` scales the data."""
    repo = copy_repo(prepared_base, tmp_path / "repo")
    start_and_kill([sys.executable, "-m", "stages.train"], repo, signal.SIGKILL)
    with open(repo / "pipeline/preprocessing.py", "a", encoding="utf-8") as module:
        module.write("# a changed line: the saved state belongs to the code before it\n")
    result = stage(repo, "train")
    assert result.returncode == 0, result.stderr
    assert "ignoring resume state" in result.stderr and "written for other params, code or data" in result.stderr
    assert "resuming" not in result.stderr
    assert re.search(r"^Epoch 1/15", result.stdout, re.MULTILINE)


def test_onednn_param_decides_over_the_environment(prepared_base: Path, tmp_path: Path) -> None:
    """Both runs under a shell that asks for oneDNN; the param turns it off in the second. oneDNN's convolutions
    round differently, so the weights differ only if the param reached TensorFlow (two runs with the same
    params are byte-identical: the test below)."""
    weights = []
    for onednn in (True, False):
        repo = copy_repo(prepared_base, tmp_path / str(onednn))
        cnn = {"train.model": "cnn", "train.epochs": 2, "train.steps_per_execution": 1}
        edit_params(repo, **cnn, **{"train.onednn": onednn})
        result = stage(repo, "train", env=ENV | {"TF_ENABLE_ONEDNN_OPTS": "1"})
        assert result.returncode == 0, result.stderr
        weights.append(load_npz_weights(repo))
    assert any(not np.array_equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_same_seed_gives_byte_identical_metrics(prepared_base: Path, uninterrupted: Path, tmp_path: Path) -> None:
    repo = copy_repo(prepared_base, tmp_path / "repo")
    train_and_evaluate(repo)
    assert_same_result(repo, uninterrupted)
