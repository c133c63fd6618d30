"""`.npy` files written row chunk by row chunk and hashed as written; read back checked, then memory-mapped.

The prepared splits are stored this way (docs/data-on-disk.md): a file is never held whole in memory, neither
when it is written nor when it is read.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.io.reading import check_npy_header

HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileRecord:
    """What the manifest records of one written file."""

    file: str
    rows: int
    bytes: int
    sha256: str


class NpyWriter:
    """One `.npy` file of `rows` rows of `row_shape` and `dtype`, filled by `write` calls in order."""

    def __init__(self, path: Path, rows: int, row_shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.rows, self.row_shape, self.dtype = path, rows, tuple(row_shape), np.dtype(dtype)
        self.written, self.size, self.digest = 0, 0, hashlib.sha256()
        self.handle: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed by `close`
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                     "shape": (rows, *self.row_shape)},
        )  # fmt: skip
        self._put(header.getvalue())

    def _put(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        self.size += len(data)
        self.handle.write(data)

    def write(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.row_shape or self.written + len(rows) > self.rows:
            raise ValueError(f"{self.path}: rows of shape {rows.shape} do not fit {self.rows} x {self.row_shape}")
        self._put(memoryview(np.ascontiguousarray(rows, dtype=self.dtype)).cast("B"))
        self.written += len(rows)

    def close(self) -> FileRecord:
        self.handle.close()
        if self.written != self.rows:
            raise ValueError(f"{self.path}: {self.written} rows written of {self.rows}")
        return FileRecord(self.path.name, self.rows, self.size, self.digest.hexdigest())


def write_npy(path: Path, array: np.ndarray) -> FileRecord:
    """A small array (labels, sources) as one `.npy`, with its record."""
    writer = NpyWriter(path, len(array), array.shape[1:], array.dtype)
    writer.write(array)
    return writer.close()


def check_file(path: Path, record: FileRecord, row_shape: tuple[int, ...], dtype: np.dtype) -> str | None:  # noqa: PLR0911
    """What is wrong with `path` against its `record` (size, header, sha256), or None: read once, in chunks."""
    try:
        size = path.stat().st_size
        if size != record.bytes:
            return f"is {size} bytes, but manifest.json records {record.bytes} (truncated or replaced)"
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            try:
                shape, fortran, stored = check_npy_header(handle, size)
            except ValueError as err:
                return f"is not a readable .npy file ({err})"
            if fortran or stored != dtype or shape != (record.rows, *row_shape):
                return f"holds {shape} of {stored}, but manifest.json records {(record.rows, *row_shape)} of {dtype}"
            handle.seek(0)
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return "is missing"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if digest.hexdigest() != record.sha256:
        return "does not hold the bytes manifest.json records (its sha256 differs: edited or damaged)"
    return None


def open_checked(folder: Path, record: FileRecord, row_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The file of `record` in `folder`, checked (`check_file`), as a read-only memory map; one sentence if bad."""
    path = folder / record.file
    problem = check_file(path, record, row_shape, dtype)
    if problem is not None:
        raise PipelineError(f"{path} {problem}; {paths.rerun_hint(path)}")
    return np.load(path, mmap_mode="r", allow_pickle=False)
