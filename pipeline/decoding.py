"""Decode the image files the download stage indexed (preprocess): checked against the index, in a few
processes, chunk by chunk, within a memory and disk budget checked before anything is decoded."""

from __future__ import annotations

import math
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from pipeline.children import die_with_parent
from pipeline.errors import PipelineError
from pipeline.folders import file_sha256
from pipeline.images import Conversion, convert_image, read_image_file
from pipeline.progress import Progress
from pipeline.resources import check_decoding

CHUNK = 128  # images per task sent to a decoding process
CHUNK_BYTES = 32 * 2**20  # and at most this many bytes of decoded pixels (one image at least)
IN_FLIGHT = 2  # chunks per process decoded or waiting at once: one being decoded, one ready
IMAGES_PER_PROCESS = 512  # fewer images than this per process and starting one costs more than it saves
MAX_PROCESSES = 8


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


def chunk_images(shape: tuple[int, ...]) -> int:
    """Images per task: `CHUNK`, or fewer when they are large (at most `CHUNK_BYTES`, at least one)."""
    return max(1, min(CHUNK, CHUNK_BYTES // math.prod(shape)))


def first_shape(files: dict[str, np.ndarray], conversion: Conversion) -> tuple[int, ...]:
    """The shape every image must have once converted: the target size's, or for size None the first image's."""
    first_path, first_sha = next(rows[0] for rows in files.values() if len(rows))
    return decode_checked(first_path, first_sha, conversion).shape


def decode_chunks(
    files: dict[str, np.ndarray], conversion: Conversion, shape: tuple[int, ...], memory_limit_mb: int
) -> Iterator[tuple[str, np.ndarray]]:
    """Each split's (N, 2) [path, sha256] rows -> (split, uint8 pixels of a chunk), in file order, decoded by up to
    one process per core; first the memory check (`resources.check_decoding`). `shape`: `first_shape`'s, which
    every image must have.

    At most `IN_FLIGHT` chunks per process are decoded or waiting at any time: memory does not grow with the number
    of images, and the order (hence the result) does not depend on how many processes decoded them.
    """
    first_path = str(next(rows[0] for rows in files.values() if len(rows))[0])
    n_images = sum(len(rows) for rows in files.values())
    per_chunk = chunk_images(shape)
    workers = decoding_processes(n_images)
    check_decoding(min(n_images, per_chunk * (IN_FLIGHT * workers + 1)), shape, memory_limit_mb)
    tasks = [
        (name, [tuple(row) for row in rows[start : start + per_chunk]])
        for name, rows in files.items()
        for start in range(0, len(rows), per_chunk)
    ]
    progress = Progress("decoding", n_images, "images")

    def checked(chunk: list[tuple[str, str]], pixels: np.ndarray) -> np.ndarray:
        if pixels.shape[1:] != shape:
            raise _size_error(chunk[0][0], pixels.shape[1:], first_path, shape)
        progress.advance(len(pixels))
        return pixels

    if workers == 1:
        for name, chunk in tasks:
            yield name, checked(chunk, _decode_chunk(chunk, conversion))
        progress.finish()
        return
    # spawn, not fork: a forked child would inherit whatever threads the parent's libraries started.
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=die_with_parent, initargs=(signal.SIGKILL, os.getpid())
    ) as pool:
        pending: deque[tuple[str, list[tuple[str, str]], Future]] = deque()
        try:
            for number, (name, chunk) in enumerate(tasks):
                pending.append((name, chunk, pool.submit(_decode_chunk, chunk, conversion)))
                while pending and (len(pending) >= IN_FLIGHT * workers or number == len(tasks) - 1):
                    done_name, done_chunk, future = pending.popleft()
                    yield done_name, checked(done_chunk, future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    progress.finish()


def decode_splits(files: dict[str, np.ndarray], conversion: Conversion, memory_limit_mb: int) -> dict[str, np.ndarray]:
    """`decode_chunks` gathered into one array per split, in memory: for sets known to be small."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in files}
    for name, pixels in decode_chunks(files, conversion, first_shape(files, conversion), memory_limit_mb):
        parts[name].append(pixels)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
