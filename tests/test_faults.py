"""Faults during stages: a SIGKILL at every step of a directory swap, a full disk, read-only outputs, two runs at once.

Real signals, a real tmpfs and real read-only mounts (the tests that mount need root, as in CI's container).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ENV, PROJECT_ROOT

from pipeline.files import atomic_directory, recover_directory

# Run in a subprocess: an audit hook SIGKILLs the process just before its Nth file-system call
# (mkdir, scandir, open, rename, remove, rmdir, ...), so every step of the swap gets its own kill.
_SWAP_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from pipeline.files import atomic_directory
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
