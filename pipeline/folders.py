"""Your own image folder: index it (the download stage) and decode the files the index lists (preprocess).

The download stage does not copy the images: it writes an index into data/raw/ (class names,
every file's path and sha256, what was skipped). The index changes exactly when an image is
added, removed or edited, so DVC reruns preprocess then and only then. Preprocess reads each
listed file once, checks its sha256 against the index while it has the bytes, and decodes them
(pipeline/images.py). docs/own-data.md explains the layout rules and why.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import paths
from pipeline.children import die_with_parent
from pipeline.errors import PipelineError
from pipeline.images import IMAGE_SUFFIXES, Conversion, convert_image, read_image_file
from pipeline.progress import Progress

INDEX_FILE = "images.json"
SPLIT_FOLDERS = ("train", "test")  # the Kaggle layout: an official test split
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})  # besides every name starting with "."
CHUNK = 128  # images per task sent to a decoding process
IMAGES_PER_PROCESS = 512  # fewer images than this per process and starting one costs more than it saves
MAX_PROCESSES = 8


def own_source(source: str, what: str = "data.source") -> Path:
    """`source` as a path inside data/own/, or one sentence saying where to put the data instead.

    Why only there: DVC must track the data (`dvc add data/own/NAME`) to rerun the stages when it
    changes and to share it through a remote, and the download stage depends on data/own/.
    """
    if not source:
        raise PipelineError(f"{what} is empty; set it to your data's path under data/own/, e.g. data/own/pets.")
    normal = Path(os.path.normpath(source))
    if normal.is_absolute() or normal.parts[:2] != paths.OWN_DATA_DIR.parts or len(normal.parts) < 3:
        raise PipelineError(
            f"{what}='{source}' is not inside {paths.OWN_DATA_DIR}/; move the data to {paths.OWN_DATA_DIR}/NAME and "
            f"track it with `dvc add {paths.OWN_DATA_DIR}/NAME`, so that DVC reruns the stages when it changes "
            "and shares it through your remote."
        )
    if not normal.exists():
        raise PipelineError(f"{what}: {normal} does not exist; put your data there (or `dvc pull` it).")
    return normal


# One size or index suffix at the end of a file's name (before its extension): "_16", "-32x32", "@2x", " (2)",
# "_64px", ".1". Stripped again and again, so "icon_16@2x" and "icon" are one group.
NAME_SUFFIX = re.compile(r"[\s_.\-]*(?:\(\d+\)|@\d+x|\d+x\d+|\d+px|\d+)$")


def name_group(path: str) -> str:
    """The group of an image file under data.group_by_name: its folder and its name, lower case, without its
    extension and any size or index suffixes (`NAME_SUFFIX`); a name of nothing but digits stays whole."""
    stem = Path(path).stem.lower()
    while (shorter := NAME_SUFFIX.sub("", stem)) and shorter != stem:
        stem = shorter
    return f"{Path(path).parent}/{stem}"


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Skipped:
    """Files the index leaves out, counted for the one log line."""

    hidden: int = 0  # names starting with "." (.DS_Store) and system files (Thumbs.db)
    not_images: int = 0  # other extensions (.txt, .csv, .json, ...)
    outside_classes: int = 0  # files lying beside the class folders rather than in one
    linked_folders: int = 0  # symbolic links to folders inside a class folder: DVC does not track what they hold
    example: str = ""
    linked_example: str = ""

    def note(self, kind: str, path: Path) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if kind == "linked_folders":
            self.linked_example = self.linked_example or str(path)
        else:
            self.example = self.example or str(path)

    @property
    def count(self) -> int:
        return self.hidden + self.not_images + self.outside_classes + self.linked_folders

    def sentence(self) -> str:
        kinds = [
            (self.hidden, "hidden or system"), (self.not_images, "without an image extension"),
            (self.outside_classes, "outside the class folders"),
        ]  # fmt: skip
        counted = ", ".join(f"{n} {what}" for n, what in kinds if n)
        files, parts = self.count - self.linked_folders, []
        if files:
            parts.append(f"skipped {_counted(files, 'file')} ({counted}; e.g. {self.example})")
        if self.linked_folders:
            parts.append(
                f"did not enter {_counted(self.linked_folders, 'link')} to a folder (e.g. {self.linked_example}): "
                "DVC does not track what a link to a folder holds, so move the files in"
            )
        return "; ".join(parts) or "no files skipped"


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path, skipped: Skipped) -> list[Path]:
    """Image files anywhere below `folder`, sorted by path; hidden folders are not entered, other files noted."""
    found = []
    for root, dirs, files in os.walk(folder):  # not into links to folders: `dvc add` does not follow them either
        for name in dirs:
            if not name.startswith(".") and os.path.islink(os.path.join(root, name)):
                skipped.note("linked_folders", Path(root) / name)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or name.lower() in SYSTEM_FILES:
                skipped.note("hidden", path)
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.note("not_images", path)
            else:
                found.append(path)
    return sorted(found)


def _class_files(folder: Path, skipped: Skipped) -> list[Path]:
    found = image_files(folder, skipped)
    if not found:
        raise PipelineError(
            f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder."
        )
    return found


def _count_loose_files(folder: Path, skipped: Skipped) -> None:
    for path in sorted(folder.iterdir()):
        if path.is_file():
            hidden = path.name.startswith(".") or path.name.lower() in SYSTEM_FILES
            skipped.note("hidden" if hidden else "outside_classes", path)


def _index_classes(
    folder: Path, class_names: list[str] | None, skipped: Skipped, progress: Progress
) -> tuple[list[str], list[list]]:
    """[(path, label, sha256)] of one folder of class folders; `class_names` given = they must be the same."""
    _count_loose_files(folder, skipped)
    found = [d.name for d in _visible_dirs(folder)]
    if class_names is not None and found != class_names:
        raise PipelineError(
            f"{folder} has class folders {found}, but {folder.parent / 'train'} has {class_names}; "
            "give train/ and test/ the same class folders."
        )
    if not found:
        raise PipelineError(
            f"{folder} has no class folders; put the images into one subfolder per class "
            f"({folder}/cat/..., {folder}/dog/...)."
        )
    if len(found) == 1:
        raise PipelineError(
            f"{folder} has only one class folder ('{found[0]}'); a classifier needs at least two, one subfolder each."
        )
    entries = []
    for label, name in enumerate(found):
        for path in _class_files(folder / name, skipped):
            entries.append(
                [str(path), label, file_sha256(read_image_file(path, "replace it with the image, or remove it."))]
            )
            progress.advance()
    return found, entries


def index_folder(source: Path) -> dict[str, Any]:
    """The index the download stage writes: classes (sorted folder names), every image's path and sha256."""
    if not source.is_dir():
        raise PipelineError(f"data.source: {source} is not a folder; data.dataset=image_folder needs a folder.")
    skipped, progress = Skipped(), Progress(f"indexing {source}", unit="files read and hashed")
    subfolders = [d.name for d in _visible_dirs(source)]
    if all(name in subfolders for name in SPLIT_FOLDERS):
        others = [name for name in subfolders if name not in SPLIT_FOLDERS]
        if others:
            raise PipelineError(
                f"{source / others[0]}: a folder with train/ and test/ may hold nothing else; validation is carved "
                "from train/ (preprocess.val_fraction): merge it into train/ or move it out."
            )
        _count_loose_files(source, skipped)
        class_names, train = _index_classes(source / "train", None, skipped, progress)
        _, test = _index_classes(source / "test", class_names, skipped, progress)
        layout = "train/ and test/ folders"
    else:
        class_names, train = _index_classes(source, None, skipped, progress)
        test, layout = [], "class folders"
    progress.finish()
    return {
        "source": str(source),
        "layout": layout,
        "class_names": class_names,
        "train": train,
        "test": test,
        "skipped": skipped.sentence(),
    }


# ----------------------------------------------------------------------------- decoding (preprocess)


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
