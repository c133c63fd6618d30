"""One train stage per workspace: an advisory lock that dies with its holder."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError


@contextlib.contextmanager
def exclusive_lock(path: Path | str, what: str) -> Iterator[None]:
    """Hold an advisory lock on `path` for the block, or refuse at once if another process holds it.

    `flock` locks belong to the open file: the kernel releases them when the holder exits, however
    it dies, so a SIGKILLed run never leaves a stale lock behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(
                f"another {what} is running in this workspace (it holds {path}); wait for it to finish, "
                "or stop it, then run again."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# OSErrors that are the machine's state, not a bug: run_stage turns them into one sentence.
