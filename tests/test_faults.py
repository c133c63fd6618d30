"""Faults during stages: a SIGKILL at every step of a directory swap or mid-decode, a full disk, read-only outputs,
two runs at once.

Real signals, a real tmpfs and real read-only mounts (the tests that mount need root, as in CI's container).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.io.atomic import atomic_directory, recover_directory
from tests.harness import ENV, PROJECT_ROOT, edit_params, make_prepared_repo, make_project_repo, stage

pytestmark = pytest.mark.slow  # stages killed, starved of disk and run twice at once, as subprocesses

# Run in a subprocess: an audit hook SIGKILLs the process just before its Nth file-system call
# (mkdir, scandir, open, rename, remove, rmdir, ...), so every step of the swap gets its own kill.
_SWAP_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from pipeline.io.atomic import atomic_directory
    dest, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    calls = []
    def kill_before_call(event, args):
        if (event.startswith(("os.", "shutil.")) or event == "open") and event != "os.kill":
            calls.append(event)
            if len(calls) > kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    sys.addaudithook(kill_before_call)
    with atomic_directory(dest) as folder:
        for name in ("a.txt", "b.txt"):
            (folder / name).write_text("new")
    """
)


def _contents(folder: Path) -> dict[str, str] | None:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())} if folder.is_dir() else None


@pytest.mark.parametrize("had_old_version", [True, False], ids=["replacing", "first-write"])
def test_a_sigkill_at_every_step_of_a_directory_swap_loses_nothing(tmp_path: Path, had_old_version: bool) -> None:
    old, new = {"a.txt": "old"}, {"a.txt": "new", "b.txt": "new"}
    env = ENV | {"PYTHONPATH": str(PROJECT_ROOT)}
    seen_new = False
    for kill_at in range(100):
        parent = tmp_path / f"kill{kill_at}"
        dest = parent / "prepared"
        dest.mkdir(parents=True)
        if had_old_version:
            (dest / "a.txt").write_text("old")
        else:
            dest.rmdir()
        child = subprocess.run(
            [sys.executable, "-c", _SWAP_CHILD, str(dest), str(kill_at)],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        finished = child.returncode == 0
        assert finished or child.returncode == -signal.SIGKILL, child.stderr
        recover_directory(dest)  # what the next run (or a reader) does first
        state = _contents(dest)
        allowed = [new] if seen_new else [old if had_old_version else None, new]
        assert state in allowed, f"killed before file-system call {kill_at}: {state}"
        seen_new = state == new
        with atomic_directory(dest) as folder:  # the next run: it leaves exactly one directory, its own
            (folder / "c.txt").write_text("next")
        assert sorted(p.name for p in parent.iterdir()) == ["prepared"]
        assert _contents(dest) == {"c.txt": "next"}
        if finished:
            break
    assert finished and kill_at > 10, "the swap should take more than a few file-system calls"


# ----------------------------------------------------------------------------- full disks and read-only outputs


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here (root in a container that allows it is needed): {result.stderr.strip()}")


@contextlib.contextmanager
def tmpfs(target: Path, size: str) -> Iterator[Path]:
    """A real, small tmpfs mounted at `target` for the block."""
    target.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target))
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@contextlib.contextmanager
def read_only(target: Path) -> Iterator[Path]:
    """`target` made read-only for the block by a read-only bind mount of itself (chmod does not stop root)."""
    target.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(target), str(target))
    try:
        _mount("-o", "remount,ro,bind", str(target))
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill `folder`'s file system up to `leave` free bytes."""
    stats = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - leave))
    return filler


def one_error(result: subprocess.CompletedProcess, *phrases: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_or_read_only_data_disk_is_one_sentence_and_keeps_earlier_outputs(project_repo: Path) -> None:
    data = project_repo / "data"
    with tmpfs(data, "1m"):
        assert stage(project_repo, "download").returncode == 0
        raw = _files(data / "raw")
        filler = fill(data, leave=20_000)  # the prepared splits take ~120 KB: refused before a byte is written
        refused = one_error(stage(project_repo, "preprocess"), "the prepared splits in data/prepared take", "free some")
        assert _files(data / "raw") == raw
        assert sorted(p.name for p in data.iterdir()) == ["filler", "raw"], "a scratch folder was left behind"
        filler.unlink()
        # Room for the splits' bytes but not for their files' blocks: the check passes and the write hits ENOSPC.
        needed = int(re.search(r"take (\d+) bytes", refused).group(1))
        filler = fill(data, leave=needed + 8192)
        one_error(stage(project_repo, "preprocess"), "cannot write data/prepared", "ENOSPC", "free some space")
        assert _files(data / "raw") == raw
        assert sorted(p.name for p in data.iterdir()) == ["filler", "raw"], "a scratch folder was left behind"
        filler.unlink()  # space freed: the rerun goes through
        assert stage(project_repo, "preprocess").returncode == 0
        prepared = _files(data / "prepared")
        subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
        try:
            one_error(stage(project_repo, "download"), "cannot write data", "EROFS", "read-write")
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(data)], check=True)
        assert _files(data / "raw") == raw and _files(data / "prepared") == prepared


def test_train_on_a_full_or_read_only_disk_fails_in_one_sentence_and_the_rerun_resumes(tmp_path: Path) -> None:
    repo = make_prepared_repo(tmp_path / "repo", {"train.epochs": 1})
    with tmpfs(repo / ".resume", "64k") as resume:  # no room for the resume state after the first epoch
        fill(resume, leave=4096)
        one_error(stage(repo, "train"), "cannot write .resume/train/state.npz", "ENOSPC")
    assert not (repo / "models" / "model.keras").exists()
    (repo / ".resume/train").mkdir(parents=True, exist_ok=True)  # the full tmpfs held the first one
    (repo / ".resume/train/state.npz").write_bytes(b"PK\x03\x04 half a state")  # as a crashed disk might leave it
    with read_only(repo / "models"):  # sets that aside, trains, saves its state, cannot export
        result = stage(repo, "train")
        one_error(result, "cannot write models/model.keras", "EROFS")
        assert "set aside" in result.stderr and "training from scratch" in result.stderr
    assert (repo / ".resume/train/state.npz").exists(), "the finished epoch's state must survive the failed export"
    with read_only(repo / "reports"):  # exports the model from the saved state, cannot write its history
        result = stage(repo, "train")
        one_error(result, "cannot write reports/train_history.csv", "EROFS")
        assert "already finished" in result.stderr, "the rerun should resume, not train again"
    result = stage(repo, "train")
    assert result.returncode == 0 and "already finished" in result.stderr, result.stderr
    assert (repo / "reports/train_history.csv").exists() and not (repo / ".resume/train").exists()


# ----------------------------------------------------------------------------- two runs at once


def start_stage(repo: Path, name: str) -> subprocess.Popen:
    """A stage started in the background, its output discarded: the test signals it."""
    return subprocess.Popen(
        [sys.executable, "-m", f"stages.{name}"],
        cwd=repo,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _locked(path: Path) -> bool:
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def test_a_second_train_in_the_same_workspace_is_refused_and_a_killed_one_leaves_no_lock(tmp_path: Path) -> None:
    # Prepared data and many epochs: the first run holds the lock while it trains, not only while it starts.
    project_repo = make_prepared_repo(tmp_path / "repo", {"train.epochs": 500, "train.early_stopping_patience": 0})
    lock = project_repo / ".resume" / "train.lock"
    first = start_stage(project_repo, "train")
    try:
        deadline = time.monotonic() + 30
        while not (lock.exists() and _locked(lock)):
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        second = stage(project_repo, "train", timeout=30)
        assert first.poll() is None, "the first run ended too soon for this test to mean anything"
        one_error(second, "another train stage is running", ".resume/train.lock")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert not _locked(lock), "the kernel releases the lock of a killed run"


def _parent_and_state(pid: int) -> tuple[int, str] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0]


def _decoding_processes(stage_pid: int) -> list[int]:
    """The stage's children that run the decoding pool (multiprocessing's spawn), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (_parent_and_state(int(entry.name)) or (0, ""))[0] == stage_pid:
            with contextlib.suppress(OSError):
                if b"spawn_main" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    return (_parent_and_state(pid) or (0, "Z"))[1] != "Z"  # gone, or a zombie nobody reaped yet


def test_a_killed_preprocess_leaves_no_decoding_process_behind(tmp_path: Path) -> None:
    """SIGKILLed mid-decode (the OOM killer, a CI timeout), the stage cannot stop its pool: the kernel must."""
    repo = make_project_repo(tmp_path / "repo")
    folder = repo / "data/own/big"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "a/0.png", compress_level=1)
    for i in range(1, 2000):  # the same file 2,000 times, two decoding processes' worth of seconds
        os.link(folder / "a/0.png", folder / f"{'ab'[i % 2]}/{i}.png")
    edit_params(
        repo, **{"data.dataset": "image_folder", "data.source": "data/own/big", "preprocess.image_size": [8, 8]}
    )
    assert stage(repo, "download").returncode == 0
    preprocess = start_stage(repo, "preprocess")
    try:
        deadline = time.monotonic() + 60
        while len(workers := _decoding_processes(preprocess.pid)) < 2:
            assert preprocess.poll() is None and time.monotonic() < deadline, "preprocess never started decoding"
            time.sleep(0.02)
        time.sleep(0.5)  # into the decoding
        assert preprocess.poll() is None, "preprocess ended too soon for this test to mean anything"
    finally:
        preprocess.send_signal(signal.SIGKILL)
        preprocess.wait(timeout=30)
    deadline = time.monotonic() + 20
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_running, workers)), "decoding processes outlived the killed stage"
    assert not (repo / "data/prepared").exists()
