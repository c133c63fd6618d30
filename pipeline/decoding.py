"""Decode the image files the download stage indexed (preprocess): checked against the index, in a few
processes, within a memory budget checked before anything is decoded."""

from __future__ import annotations

import math
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pipeline.children import die_with_parent
from pipeline.errors import PipelineError
from pipeline.folders import file_sha256
from pipeline.images import Conversion, convert_image, read_image_file
from pipeline.progress import Progress

CHUNK = 128  # images per task sent to a decoding process
IMAGES_PER_PROCESS = 512  # fewer images than this per process and starting one costs more than it saves
MAX_PROCESSES = 8


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, or the container's cgroup limit if lower."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(cgroup).read_text(encoding="ascii").strip()
        except OSError:
            continue
        if value.isdigit():
            limits.append(int(value))
    if not limits:  # not Linux: physical memory
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return min(limits)


def _gigabytes(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def check_memory(n_images: int, height: int, width: int, channels: int, limit_mb: int) -> None:
    """Refuse before decoding anything when the prepared images would not fit (limit_mb 0 = available memory).

    The need counted is what train holds: the uint8 pixels of the prepared splits plus their float32 copy
    (5 bytes per value); preprocess itself needs only the uint8 part.
    """
    stored = n_images * height * width * channels
    needed = 5 * stored
    limit = limit_mb * 1_000_000 if limit_mb else available_memory()
    if needed > limit:
        where = f"preprocess.memory_limit_mb={limit_mb}" if limit_mb else "the memory this machine has available"
        raise PipelineError(
            f"{n_images:,} images of {height}x{width}x{channels} take {_gigabytes(stored)} as uint8 and "
            f"{_gigabytes(needed)} with the float32 copy train makes, more than {_gigabytes(limit)} "
            f"({where}); choose a smaller preprocess.image_size or preprocess.color_mode=grayscale."
        )


def read_checked(path: str, sha256: str) -> bytes:
    """The file's bytes, read once, refused when they are not the bytes the index recorded."""
    data = read_image_file(path, "run `dvc repro` (or `dvc pull`) so the index matches the folder.")
    if file_sha256(data) != sha256:
        raise PipelineError(f"{path} changed after the download stage indexed it; run `dvc repro` again.")
    return data


def decode_checked(path: str, sha256: str, conversion: Conversion) -> np.ndarray:
    return convert_image(read_checked(path, sha256), conversion, path)


def _decode_chunk(files: list[tuple[str, str]], conversion: Conversion) -> np.ndarray:
    pixels = [decode_checked(path, sha256, conversion) for path, sha256 in files]
    for (path, _), image in zip(files, pixels, strict=True):
        if image.shape != pixels[0].shape:
            raise _size_error(path, image.shape, files[0][0], pixels[0].shape)
    return np.stack(pixels)


def _size_error(path: str, shape: tuple[int, ...], first: str, first_shape: tuple[int, ...]) -> PipelineError:
    return PipelineError(
        f"{path} is {shape[1]}x{shape[0]} pixels but {first} is {first_shape[1]}x{first_shape[0]}: images of "
        "different sizes need preprocess.image_size (e.g. [64, 64]) to be resized to one size."
    )


def decoding_processes(n_images: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_PROCESSES, math.ceil(n_images / IMAGES_PER_PROCESS)))


def decode_splits(files: dict[str, np.ndarray], conversion: Conversion, memory_limit_mb: int) -> dict[str, np.ndarray]:
    """Each split's (N, 2) [path, sha256] rows -> its uint8 pixels, decoded by up to one process per core.

    First the memory check (`check_memory`), from the target size (or, for size None, the first image's).

    The arrays are allocated once, at their final size, and filled chunk by chunk in file order: the
    peak memory is the prepared pixels plus a few chunks, and the result does not depend on how many
    processes decoded it.
    """
    first_path, first_sha = next(rows[0] for rows in files.values() if len(rows))
    shape = decode_checked(first_path, first_sha, conversion).shape  # the size all others must have
    n_images = sum(len(rows) for rows in files.values())
    check_memory(n_images, shape[0], shape[1], conversion.channels, memory_limit_mb)
    out = {name: np.empty((len(rows), *shape), dtype=np.uint8) for name, rows in files.items()}
    tasks = [
        (name, start, [tuple(row) for row in rows[start : start + CHUNK]])
        for name, rows in files.items()
        for start in range(0, len(rows), CHUNK)
    ]
    workers, progress = decoding_processes(n_images), Progress("decoding", n_images, "images")

    def store(name: str, start: int, chunk: list[tuple[str, str]], pixels: np.ndarray) -> None:
        if pixels.shape[1:] != shape:
            raise _size_error(chunk[0][0], pixels.shape[1:], first_path, shape)
        out[name][start : start + len(pixels)] = pixels
        progress.advance(len(pixels))

    if workers == 1:
        for name, start, chunk in tasks:
            store(name, start, chunk, _decode_chunk(chunk, conversion))
        progress.finish()
        return out
    # spawn, not fork: a forked child would inherit whatever threads the parent's libraries started.
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=die_with_parent, initargs=(signal.SIGKILL, os.getpid())
    ) as pool:
        results = pool.map(_decode_chunk, [chunk for _, _, chunk in tasks], [conversion] * len(tasks))
        try:
            for (name, start, chunk), pixels in zip(tasks, results, strict=True):
                store(name, start, chunk, pixels)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    progress.finish()
    return out
