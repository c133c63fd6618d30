"""Atomic file writing: a reader (or a rerun after a kill) sees the old file or the new one, never half of one.

And the bounded reading of a user's file (`read_limited`): whole, but never endless or unbounded.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import logging
import math
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipeline import paths
from pipeline.errors import PipelineError

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


def write_csv_atomic(dest: Path | str, rows: list[dict[str, Any]]) -> None:
    """Rows of equal keys as CSV with a header (the format DVC plots read)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(dest, buffer.getvalue())


def load_xy(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """A prepared split as stored: features `x` and one-hot labels `y` (`preprocessing.load_split` scales them)."""
    path = Path(path)
    recover_directory(path.parent)
    arrays = load_npz(path)
    if set(arrays) != {"x", "y"}:
        raise PipelineError(f"{path} holds arrays {sorted(arrays)} instead of x and y; {paths.rerun_hint(path)}")
    return arrays["x"], arrays["y"]


def check_npy_header(handle: IO[bytes], available: int) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read an `.npy` header from `handle` and check it against the file's `available` bytes; ValueError if bad.

    NumPy allocates what a header claims before it reads a byte of data: a 40-byte file claiming
    596 GiB would take the memory (or fail with a MemoryError) first. Returns (shape, fortran_order, dtype).
    """
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    except (ValueError, EOFError, SyntaxError, TypeError) as err:
        raise ValueError(f"not a valid .npy header: {err}") from None
    if dtype.hasobject:
        raise ValueError("it holds Python objects, which are never unpickled")
    needed, present = math.prod(shape) * dtype.itemsize, available - handle.tell()
    if needed != present:
        raise ValueError(f"its header claims shape {shape} of {dtype} ({needed} bytes) but {present} bytes follow")
    return shape, fortran, dtype


def load_npz(path: Path | str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Load every array of an `.npz`, with bounded memory; never unpickles (object arrays are refused).

    Each member's header is checked against the size the archive records for it before anything is
    allocated, and the sizes together must stay within `max_bytes` (a zip bomb is refused unread;
    `zipfile` stops a member at its recorded size, so a lying size cannot expand it either).
    A missing, truncated or garbled file is a `PipelineError` naming it and the stage that writes it.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(info.file_size for info in members)
            if max_bytes is not None and declared > max_bytes:
                raise ValueError(f"it unpacks to {declared} bytes, more than the {max_bytes} this data can take")
            arrays = {}
            for info in members:
                with archive.open(info) as member:
                    try:
                        check_npy_header(member, info.file_size)
                    except ValueError as err:
                        raise ValueError(f"member {info.filename}: {err}") from None
                with archive.open(info) as member:  # NumPy reads the checked header again
                    arrays[info.filename.removesuffix(".npy")] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except FileNotFoundError:
        raise PipelineError(f"{path} not found; {paths.rerun_hint(path)}") from None
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, MemoryError, NotImplementedError) as err:
        raise PipelineError(f"{path} is not a readable .npz archive ({err}); {paths.rerun_hint(path)}") from None


def read_limited(path: Path | str, max_bytes: int, *, too_large: str, unreadable: str) -> bytes:
    """A file of the user's data, whole, or one sentence: `unreadable` ends the one for a file that cannot be
    read, `too_large` the one for a file over `max_bytes`.

    A pipe or a device with a data file's name is refused before anything is read: reading a pipe waits
    for a writer forever, /dev/zero never ends. The size is checked while reading, so a file that grows
    meanwhile is caught too: the memory this takes is `max_bytes` at most.
    The first read asks for the size fstat gives, plus one byte to see the end: asking for `max_bytes` at
    once would make Python map a buffer that large for every file, which took 5x the time of the read
    itself on small images (0.075 against 0.013 ms per file, bench.image_loading's folder).
    """
    path = Path(path)
    try:  # O_NONBLOCK: opening a pipe would otherwise wait for a writer
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise PipelineError(f"{path} cannot be read ({err.strerror}); {unreadable}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise PipelineError(f"{path} is not a regular file (a pipe, a device or a socket); {unreadable}")
        chunks, total, wanted = [], 0, min(status.st_size, max_bytes) + 1
        while total <= max_bytes:  # more than one round only when the file grew since fstat
            chunk = os.read(descriptor, wanted)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            wanted = min(2**20, max_bytes + 1 - total)
    except OSError as err:
        raise PipelineError(f"{path} cannot be read ({err.strerror}); {unreadable}") from None
    finally:
        os.close(descriptor)
    if total > max_bytes:
        raise PipelineError(f"{path} is larger than {max_bytes / 2**20:g} MiB; {too_large}")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_json(path: Path | str) -> Any:
    """A JSON file; a missing or garbled one is a `PipelineError` naming it and the stage that writes it."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found; {paths.rerun_hint(path)}") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PipelineError(f"{path} is not valid JSON ({err}); {paths.rerun_hint(path)}") from None


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
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: ("write", "free some space on its disk"),
    errno.EDQUOT: ("write", "free some space within your disk quota"),
    errno.EROFS: ("write", "remount it read-write or run in a writable copy of the workspace"),
    errno.EACCES: ("access", "give this user access to it"),
    errno.EPERM: ("access", "give this user access to it"),
}


def describe_environment_error(err: OSError) -> str | None:
    """One sentence for a full disk or an unwritable path (None for any other OSError: that is a bug)."""
    if err.errno not in ENVIRONMENT_ERRNOS:
        return None
    verb, cause = ENVIRONMENT_ERRNOS[err.errno]
    where = err.filename if err.filename is not None else "an output file"
    code = errno.errorcode.get(err.errno, str(err.errno))
    return (
        f"cannot {verb} {where}: {err.strerror} ({code}); {cause}, then rerun "
        "(the outputs written before are intact, and an interrupted train stage resumes where it stopped)."
    )
