"""train.distributed: real processes on 127.0.0.1, started by the stage's own `local` launcher.

Two processes fail together and fast when one of them dies, resume together, and end with the model
one process trains (to a stated tolerance), written once; a bad configuration is one sentence.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.io.reading import load_npz
from pipeline.params import TrainParams, parse_section
from tests.harness import ENV, PROJECT_ROOT, copy_repo, edit_params, make_prepared_repo, stage

pytestmark = pytest.mark.slow  # training in several processes

EPOCHS = 6
RUN_PARAMS = {
    "train.epochs": EPOCHS,
    "train.early_stopping_patience": 0,
    "train.mlp.hidden_units": [32],
    "train.mlp.dropout": 0.2,  # the dropout generators' state must be identical on every process, and resumed
    "train.distributed.engine": "jax",
}
# Two processes sum each batch's gradient in two halves and then across processes; one process sums it
# in one pass. Float addition is not associative, so the weights may differ in the last bits
# (measured: at most 1.1e-7 after 3 epochs of digits). The bound leaves a wide margin above that and
# stays far below any difference that a wrong batch split or a missing gradient average would cause.
WEIGHT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits downloaded and preprocessed, engine jax; copy before use."""
    return make_prepared_repo(tmp_path_factory.mktemp("dist-prepared") / "repo", RUN_PARAMS)


@pytest.fixture(scope="module")
def one_process(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repo(prepared, tmp_path_factory.mktemp("dist-one") / "repo")
    edit_params(repo, **{"train.distributed.processes": 1})
    result = stage(repo, "train", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return repo


@dataclass
class KilledAndResumed:
    """A two-process run whose process 1 was killed mid-training, then the rerun that finished it."""

    repo: Path
    killed: subprocess.CompletedProcess  # the launcher that lost a process (stderr only)
    seconds_to_fail: float
    epochs_saved: int
    steps_saved: int  # within the next epoch: the state was saved there (train.checkpoint_minutes, set tiny)
    survivor_outlived: bool
    left_behind: list[str]  # a model or scratch files after the failed run
    rerun: subprocess.CompletedProcess


def saved_position(repo: Path) -> tuple[int, int]:
    """(epochs done, steps done within the next) in the resume state."""
    state = repo / paths.RESUME_DIR / "state.npz"
    try:
        meta = json.loads(str(load_npz(state)["meta"]))
    except (PipelineError, KeyError):  # not written yet
        return 0, 0
    return meta["epochs_done"], meta["steps_done"]


def training_process(launcher_pid: int, index: int) -> int:
    """The pid of the launcher's child that runs process `index`."""
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == launcher_pid and f"PIPELINE_TRAIN_PROCESS_ID={index}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no training process {index} under the launcher {launcher_pid}")


@pytest.fixture(scope="module")
def two_processes(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> KilledAndResumed:
    """One two-process run serves every test below: training processes are the slow part of this suite.

    Process 0 saves the state after every step; process 1 is killed once that state was saved within an epoch
    (both are stopped while it is read), so the rerun resumes within an epoch."""
    repo = copy_repo(prepared, tmp_path_factory.mktemp("dist-two") / "repo")
    edit_params(repo, **{
        "train.distributed.processes": 2, "train.checkpoint_minutes": 1e-6, "train.steps_per_execution": 1,
    })  # fmt: skip
    log = repo.parent / "stderr.txt"
    with open(log, "w") as stderr:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "stages.train"], cwd=repo, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr
        )
        deadline = time.monotonic() + 240
        while True:
            assert launcher.poll() is None, f"finished before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no epoch was saved within 240 s"
            if saved_position(repo)[0] >= 2:
                pids = [training_process(launcher.pid, index) for index in (0, 1)]
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                if saved_position(repo)[1] > 0:
                    break
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            time.sleep(0.02)
        survivor = pids[0]
        os.kill(pids[1], signal.SIGKILL)
        killed_at = time.monotonic()
        os.kill(survivor, signal.SIGCONT)
        launcher.wait(timeout=60)
    seconds_to_fail = time.monotonic() - killed_at
    killed = subprocess.CompletedProcess(launcher.args, launcher.returncode, "", log.read_text())
    left_behind = [str(p.relative_to(repo)) for p in [*repo.glob("models/*"), *repo.rglob("*.tmp*")]]
    saved = saved_position(repo)
    rerun = stage(repo, "train", timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return KilledAndResumed(
        repo, killed, seconds_to_fail, *saved, Path(f"/proc/{survivor}").exists(), left_behind, rerun
    )


def weights(repo: Path) -> dict[str, np.ndarray]:
    from pipeline.models import load_model

    return {v.path: v.numpy() for v in load_model(repo / paths.MODEL).weights}


def workspace_files(repo: Path) -> set[str]:
    return {str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts}


def test_killed_process_fails_the_stage_within_seconds(two_processes: KilledAndResumed) -> None:
    run = two_processes
    assert run.killed.returncode == 1
    errors = re.findall(r"^\S+ ERROR (.*)$", run.killed.stderr, re.MULTILINE)  # the launcher's own lines
    assert errors == ["training process 1 was killed by SIGKILL; stopped the other processes."]
    assert run.seconds_to_fail < 10, f"the stage took {run.seconds_to_fail:.1f} s to fail"
    assert not run.survivor_outlived, "process 0 outlived the launcher"
    assert run.left_behind == [], "a failed run left a model or a scratch file"
    assert 2 <= run.epochs_saved < EPOCHS


def test_rerun_resumes_at_the_step_saved_and_finishes(two_processes: KilledAndResumed) -> None:
    run = two_processes
    batches = json.loads((run.repo / paths.split_manifest("train")).read_text())["count"] // 32  # full ones only
    resumed_at = f"resuming at epoch {run.epochs_saved + 1} of {EPOCHS}, step {run.steps_saved + 1} of {batches}"
    assert resumed_at in run.rerun.stderr
    assert "Epoch 1/" not in run.rerun.stdout  # epochs already done are not trained again
    assert run.rerun.stdout.count(f"Epoch {EPOCHS}/{EPOCHS}") == 1  # printed by process 0 only
    assert not (run.repo / paths.RESUME_DIR).exists(), "resume state must be cleared after a successful run"


def test_two_processes_train_the_one_process_model(one_process: Path, two_processes: KilledAndResumed) -> None:
    repo = two_processes.repo
    reference = weights(one_process)
    for name, value in weights(repo).items():
        np.testing.assert_allclose(value, reference[name], rtol=0, atol=WEIGHT_TOLERANCE, err_msg=name)
    two_history = (repo / paths.TRAIN_HISTORY).read_text().splitlines()
    one_history = (one_process / paths.TRAIN_HISTORY).read_text().splitlines()
    assert len(two_history) == 1 + EPOCHS
    # The same batches in the same order, before and after the resume: the accuracies are exactly
    # equal, the losses to the last bits.
    for two_row, one_row in zip(two_history[1:], one_history[1:], strict=True):
        two, one = (np.array(row.split(","), dtype=float) for row in (two_row, one_row))
        assert two[[0, 1, 3]].tolist() == one[[0, 1, 3]].tolist()
        np.testing.assert_allclose(two, one, rtol=1e-5)
    # Process 0 wrote the outputs; process 1 wrote nothing, anywhere in the workspace.
    assert workspace_files(repo) == workspace_files(one_process)
    assert [p.name for p in repo.rglob("*.keras")] == ["model.keras"]
    # The model has the usual format: evaluate reads it unchanged (on the default TensorFlow backend).
    result = stage(repo, "evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((repo / paths.METRICS).read_text())["test"]["accuracy"] > 0.8


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"engine": "none", "processes": 2}, "'train.distributed.processes' is 2, but engine 'none' trains in one"),
        ({"engine": "jax", "processes": 3}, "'train.batch_size' is 32, which 3 processes cannot split evenly"),
    ],
)
def test_distributed_section_is_checked_with_the_rest_of_train(changes: dict[str, object], message: str) -> None:
    """A combination no single key's rule catches fails where every other param error does: in parse_section."""
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["train"]
    raw["distributed"] |= changes
    with pytest.raises(PipelineError, match=re.escape(message)):
        parse_section(TrainParams, raw, "params.yaml")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


BAD_CONFIGS = [
    ({"train.distributed.processes": 0}, "'train.distributed.processes' is 0, but it must be an integer from 1 to"),
    (
        {"train.distributed.processes": 2, "train.batch_size": 33},
        "'train.batch_size' is 33, which 2 processes cannot split evenly",
    ),
    (
        {"train.distributed.engine": "none", "train.distributed.processes": 2},
        "engine 'none' trains in one process",
    ),
    ({"train.distributed.coordinator": "localhost"}, "'train.distributed.coordinator' is 'localhost', but it must be"),
    (
        # Process 1 of a Kubernetes indexed job, whose process 0 never came up.
        {
            "train.distributed.processes": 2,
            "train.distributed.launcher": "external",
            "train.distributed.coordinator": "127.0.0.1:PORT",
            "train.distributed.join_timeout": 2,
        },
        "process 1 of 2 could not reach the coordinator at 127.0.0.1:PORT within 2 s (Connection refused)",
    ),
]


@pytest.mark.parametrize(("changes", "message"), BAD_CONFIGS, ids=["zero", "batch", "engine", "address", "coordinator"])
def test_bad_distributed_config_is_one_sentence(changes: dict[str, object], message: str, project_repo: Path) -> None:
    port = str(closed_port())
    changes = {"train.distributed.engine": "jax"} | {
        key: value.replace("PORT", port) if isinstance(value, str) else value for key, value in changes.items()
    }
    edit_params(project_repo, **changes)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "stages.train"],
        cwd=project_repo,
        env=ENV | {"JOB_COMPLETION_INDEX": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    errors = re.findall(r"^\S+ ERROR (.*)$", result.stderr, re.MULTILINE)
    assert len(errors) == 1 and message.replace("PORT", port) in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (project_repo / "models").exists()
    assert time.monotonic() - started < 60
