"""Reads that never trust the file: bounded in memory, checked before use, one sentence when it is bad.

Hand-written because NumPy and Python's readers trust what they read: an `.npy` header is allocated before
a byte of data is read, a pipe waits forever, a gzip bomb expands without end.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipeline import paths
from pipeline.errors import PipelineError


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
    once would make Python map a buffer that large for every file, which costs more than the read itself.
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


def content_chunks(path: Path, max_bytes: int, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """The content of `path` in chunks, decompressed first when its name ends in `.gz`; never more than
    `max_bytes` of it (a gzip bomb is refused after `max_bytes`, not expanded), a damaged stream one sentence."""
    seen = 0
    opener: Callable = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(chunk_bytes):
                seen += len(chunk)
                if seen > max_bytes:
                    raise PipelineError(
                        f"{path.name} holds more than {max_bytes} bytes of content; it is not the dataset."
                    )
                yield chunk
    except (OSError, EOFError) as err:  # BadGzipFile is an OSError; truncation is an EOFError
        raise PipelineError(f"{path.name} is not a valid gzip file ({err}); the file is corrupt.") from None


def read_gzip(path: Path, max_bytes: int) -> bytes:
    """The decompressed content of the `.gz` file `path`, bounded as `content_chunks` reads it."""
    return b"".join(content_chunks(path, max_bytes))
