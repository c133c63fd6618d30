"""Atomic file writing: a reader (or a rerun after a kill) sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # The rename itself must reach the disk, or a power loss can undo it.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_leftovers(folder: Path, *patterns: str) -> None:
    # A SIGKILL or power loss skips every `finally`: its scratch files stay behind until the next write.
    for pattern in patterns:
        for leftover in folder.glob(pattern):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success fsync it and rename it onto `dest`.

    The temporary name keeps `dest`'s suffix because some writers (Keras, NumPy)
    insist on it. On any exception, including KeyboardInterrupt, the temporary
    file is removed and `dest` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest.parent, f".{dest.stem}.*.tmp{dest.suffix}")
    with _naming(dest):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".tmp{dest.suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; the finished file gets the permissions a plain open() would give.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as err:
        raise _named(err, dest, tmp) from err
    finally:
        tmp.unlink(missing_ok=True)


def _named(err: OSError, dest: Path, *scratch: Path) -> OSError:
    # A full disk fails a write() that names no file, or names our scratch file: the user needs the output's name.
    if err.filename is None or Path(err.filename).name in {p.name for p in scratch}:
        return OSError(err.errno, err.strerror, str(dest))
    return err


@contextlib.contextmanager
def _naming(dest: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise _named(err, dest, Path(err.filename or "")) from err


def write_bytes_atomic(dest: Path | str, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(dest: Path | str, text: str) -> None:
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: Path | str, obj: Any) -> None:
    # sort_keys and a fixed float repr make the file byte-identical for identical values.
    write_text_atomic(dest, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_npz_atomic(dest: Path | str, **arrays: np.ndarray) -> None:
    """Uncompressed `.npz`: see BENCHMARKS.md for why not `savez_compressed`."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def write_csv_atomic(dest: Path | str, rows: list[dict[str, Any]], header: Sequence[str] = ()) -> None:
    """Rows of equal keys as CSV with a header (the format DVC plots read); `header` names the columns of no rows."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(dest, buffer.getvalue())


def _old_copy(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.old")


def recover_directory(dest: Path | str) -> None:
    """Complete a directory swap of `atomic_directory` that a kill (SIGKILL, power loss) cut short.

    The swap is two renames, `dest` -> `.dest.old`, then the new directory -> `dest`; the old
    copy is deleted last. Killed between the renames, `dest` is missing and its previous version
    waits in `.dest.old`: it is put back (the new version was never complete from a reader's
    point of view). Killed during the deletion, `dest` is the new version and the rest of the
    old one goes. Every writer calls this first, and so do the readers of data/raw and data/prepared.
    """
    dest = Path(dest)
    # `.NAME.old-PID` is where versions before this one left it.
    candidates = sorted(dest.parent.glob(f".{dest.name}.old*"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        return
    if not dest.exists():
        os.replace(candidates.pop(), dest)
        _fsync_dir(dest.parent)
        log.warning("restored %s from the copy a run killed mid-write had set aside", dest)
    for leftover in candidates:
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(dest: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory beside `dest`; on success it replaces `dest` whole.

    A stage that writes several files uses this so that a failure halfway
    leaves the previous directory (or none) rather than a mix of old and new;
    a kill at any point of the swap is undone by `recover_directory` on the next call.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(dest)
    _remove_leftovers(dest.parent, f".{dest.name}.*.tmp")
    with _naming(dest):
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = _old_copy(dest)
        if dest.exists():
            os.replace(dest, old)
            _fsync_dir(dest.parent)  # the old copy must be safely aside before the new one takes its name
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as err:  # name the output the user knows, not the scratch folder it was being written in
        if err.filename is not None and str(err.filename).startswith(str(tmp)):
            raise OSError(err.errno, err.strerror, str(dest) + str(err.filename)[len(str(tmp)) :]) from err
        if err.filename is None:  # a write to an open file (a shard filled chunk by chunk) names no file
            raise OSError(err.errno, err.strerror, str(dest)) from err
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
