"""Memory and disk a stage may use, and the checks made before work starts: one sentence instead of a crash
hours in (the kernel's OOM killer, a full disk). docs/data-on-disk.md says what each stage holds."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from pipeline.errors import PipelineError, counted


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, or less where its memory cgroup (or one above it)
    allows less: the limit less the anonymous memory the group holds (its page cache is reclaimable)."""
    room = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            room += [int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:")]
    except OSError:
        pass
    room += _cgroup_room()
    if not room:  # not Linux: physical memory
        room.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return max(0, min(room))


def _cgroup_room() -> list[int]:
    """For this process's memory cgroup and each above it that has a limit: the limit less its anonymous memory.
    cgroup v1 (memory.limit_in_bytes, total_rss) and v2 (memory.max, anon), from /proc/self/cgroup."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return []
    room = []
    for line in lines:
        _, controllers, where = line.split(":", 2)
        if "memory" in controllers.split(","):
            mount, limit_name, anon_name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "total_rss"
        elif controllers == "":
            mount, limit_name, anon_name = Path("/sys/fs/cgroup"), "memory.max", "anon"
        else:
            continue
        group = mount / where.lstrip("/")
        for folder in (group, *group.parents):
            if mount not in (folder, *folder.parents):
                break
            try:
                limit = (folder / limit_name).read_text(encoding="ascii").strip()
                stat = dict(row.split() for row in (folder / "memory.stat").read_text(encoding="ascii").splitlines())
            except (OSError, ValueError):
                continue
            if limit.isdigit() and stat.get(anon_name, "").isdigit():
                room.append(int(limit) - int(stat[anon_name]))
    return room


def free_disk(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def in_words(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size:.0f} bytes"


def memory_limit(limit_mb: float, key: str) -> tuple[int, str]:
    """The bytes a stage may hold (`limit_mb` MB, or 0: the memory available) and how to name that limit."""
    if limit_mb:
        return int(limit_mb * 1_000_000), f"{key}={limit_mb:g}"
    return available_memory(), "the memory this machine has available"


def check_disk(needed: int, folder: Path, what: str, remedy: str) -> None:
    """Refuse to write `what` (`needed` bytes) into `folder` when its disk has less free space."""
    free = free_disk(folder)
    if needed > free:
        raise PipelineError(
            f"{what} take {in_words(needed)}, more than the {in_words(free)} free on its disk; {remedy}."
        )


def check_decoding(in_flight: int, shape: tuple[int, ...], limit_mb: int) -> None:
    """Refuse before decoding anything when the `in_flight` images decoded at once would not fit in memory
    (`preprocess.memory_limit_mb`; 0: the memory available)."""
    working = in_flight * math.prod(shape)
    limit, where = memory_limit(limit_mb, "preprocess.memory_limit_mb")
    if working > limit:
        raise PipelineError(
            f"decoding holds {counted(in_flight, 'image')} of {'x'.join(map(str, shape))} at once "
            f"({in_words(working)}), more than {in_words(limit)} ({where}); choose a smaller preprocess.image_size or "
            "preprocess.color_mode=grayscale."
        )


def check_working_set(needed: int, what: str, remedy: str) -> None:
    """Refuse a stage whose working set (`what`, `needed` bytes) exceeds the memory available."""
    limit = available_memory()
    if needed > limit:
        raise PipelineError(
            f"{what} take {in_words(needed)}, more than the {in_words(limit)} of memory available; {remedy}."
        )


# A streamed split holds at most this many batches at once: read ahead, being read, in the model's step, and the
# float32 copies each makes (pipeline/feeding.py bounds the first two).
STREAM_BATCHES = 8
# A split held in memory is, while it loads, its stored bytes, its float32 copy and the tensor made of that copy.
IN_MEMORY_COPIES = 3


def hold_in_memory(feed: str, whole: int, batch: int, split: str) -> bool:
    """Whether the train stage holds a split in memory (`whole` bytes as float32) or reads it per batch (`batch`
    bytes each), as `train.feed` says: auto holds it when it takes at most a quarter of the memory available.
    Either way the working set is checked first."""
    if feed == "memory" or (feed == "auto" and whole <= available_memory() // 4):
        what = f"the {split} split loaded into memory (up to {IN_MEMORY_COPIES} copies, train.feed={feed})"
        check_working_set(IN_MEMORY_COPIES * whole, what, "set train.feed to stream")
        return True
    what = f"{STREAM_BATCHES} batches of the {split} split"
    check_working_set(STREAM_BATCHES * batch, what, "lower train.batch_size")
    return False
