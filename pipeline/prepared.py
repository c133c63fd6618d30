"""The prepared splits on disk (data/prepared): written shard by shard, read back checked, batch by batch.

Each split is a folder of a few `.npy` shards of at most `preprocess.shard_mb`, its labels and (test) its
sources, listed with their sizes and sha256 in its manifest.json (docs/data-on-disk.md says why).
`SplitWriter` fills the shards chunk by chunk; `open_split` checks every file against the manifest and
meta.json and gives `StoredRows`, which reads rows from the memory-mapped shards on demand and scales them
as the model takes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.io.atomic import recover_directory, write_json_atomic
from pipeline.io.reading import read_json
from pipeline.io.shards import FileRecord, NpyWriter, open_checked, write_npy
from pipeline.meta import DivideScaling, PreparedMeta, StoredFile, StoredSplit, load_manifest
from pipeline.preprocessing import one_hot, scale_pixels
from pipeline.resources import check_disk

FORMAT = 1


def rows_per_shard(row_bytes: int, shard_mb: float) -> int:
    """Examples per shard: as many as `shard_mb` holds, at least one (an example is never split)."""
    return max(1, int(shard_mb * 1_000_000) // max(1, row_bytes))


def _inside(folder: Path, path: Path) -> Path:
    """`path` (below data/prepared) below `folder` instead: the folder being written, or one read elsewhere."""
    return folder / path.relative_to(paths.PREPARED_DIR)


class SplitWriter:
    """One split's folder below `folder` (the prepared folder being written), filled by `write` calls with its
    examples in order; `close` writes its labels, sources and manifest."""

    def __init__(self, folder: Path, name: str, count: int, row_shape: tuple[int, ...], dtype: str, *, shard_mb: float):
        self.folder, self.name, self.count, self.row_shape, self.dtype = folder, name, count, row_shape, dtype
        _inside(folder, paths.split_dir(name)).mkdir()
        self.per_shard = rows_per_shard(int(np.prod(row_shape)) * np.dtype(dtype).itemsize, shard_mb)
        self.records: list[FileRecord] = []
        self.current: NpyWriter | None = None
        self.written = 0

    def write(self, rows: np.ndarray) -> None:
        while len(rows):
            if self.current is None:
                size = min(self.per_shard, self.count - self.written)
                shard = _inside(self.folder, paths.shard_file(self.name, len(self.records)))
                self.current = NpyWriter(shard, size, self.row_shape, np.dtype(self.dtype))
            room = self.current.rows - self.current.written
            self.current.write(rows[:room])
            self.written += min(room, len(rows))
            rows = rows[room:]
            if self.current.written == self.current.rows:
                self.records.append(self.current.close())
                self.current = None

    def close(self, labels: np.ndarray, source: np.ndarray | None = None) -> StoredSplit:
        if self.written != self.count or self.current is not None:
            raise ValueError(f"{self.name}: {self.written} examples written of {self.count}")
        label_file = write_npy(_inside(self.folder, paths.labels_file(self.name)), labels.astype(np.int32))
        source_file = (
            None
            if source is None
            else write_npy(_inside(self.folder, paths.source_file(self.name)), np.asarray(source).astype(str))
        )
        stored = lambda record: StoredFile(**vars(record))  # noqa: E731
        split = StoredSplit(
            format=FORMAT, count=self.count, dtype=self.dtype, row_shape=self.row_shape,  # type: ignore[arg-type]
            shards=tuple(map(stored, self.records)), labels=stored(label_file),
            source=None if source_file is None else stored(source_file),
        )  # fmt: skip
        write_json_atomic(_inside(self.folder, paths.split_manifest(self.name)), split.model_dump(mode="json"))
        return split


def write_splits(
    folder: Path,
    chunks: Iterable[tuple[str, np.ndarray]],
    *,
    labels: dict[str, np.ndarray],
    row_shape: tuple[int, ...],
    dtype: str,
    shard_mb: float,
    sources: dict[str, np.ndarray],
) -> None:
    """Every split's examples, given as (split, rows) chunks in order, into shards in `folder`'s split folders, then
    their labels, `sources` and manifests; first the disk check (the examples' bytes against the free space)."""
    needed = sum(len(y) for y in labels.values()) * math.prod(row_shape) * np.dtype(dtype).itemsize
    check_disk(needed, folder, f"the prepared splits in {paths.PREPARED_DIR}", "free some space, or choose a smaller "
               "preprocess.image_size")  # fmt: skip
    writers = {
        name: SplitWriter(folder, name, len(y), row_shape, dtype, shard_mb=shard_mb) for name, y in labels.items()
    }
    for name, rows in chunks:
        writers[name].write(rows)
    for name, writer in writers.items():
        writer.close(labels[name], sources.get(name))


# ----------------------------------------------------------------------------- reading


class StoredRows:
    """A split's examples as the model takes them (float32, scaled; images with a channel axis), read from the
    memory-mapped shards on demand: `rows[i]`, `rows[a:b]`, `rows[indices]` (any order). Nothing is read whole
    unless asked (`load`)."""

    def __init__(self, shards: list[np.ndarray], pixel_max: float | None):
        self.shards, self.pixel_max = shards, pixel_max
        self.starts = np.cumsum([0] + [len(shard) for shard in shards])
        row = shards[0].shape[1:]
        self.shape = (int(self.starts[-1]), *row, *((1,) if pixel_max is not None and len(row) == 2 else ()))
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def stored(self, index: np.ndarray) -> np.ndarray:
        """The rows at `index` as stored (uint8 pixels or float32 features), in `index`'s order."""
        index = np.asarray(index, dtype=np.int64)
        first = self.shards[0]
        out = np.empty((len(index), *first.shape[1:]), dtype=first.dtype)
        shard = np.searchsorted(self.starts, index, side="right") - 1
        for k in np.unique(shard):
            chosen = shard == k
            out[chosen] = self.shards[k][index[chosen] - self.starts[k]]
        return out

    def stored_slice(self, start: int, stop: int) -> np.ndarray:
        parts = [
            shard[max(start - low, 0) : max(min(stop - low, len(shard)), 0)]
            for shard, low in zip(self.shards, self.starts[:-1], strict=True)
            if low < stop and low + len(shard) > start
        ]
        return np.concatenate(parts) if parts else self.stored(np.arange(0))

    def scaled(self, stored: np.ndarray) -> np.ndarray:
        return np.array(stored, dtype=np.float32) if self.pixel_max is None else scale_pixels(stored, self.pixel_max)

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self.scaled(self.stored_slice(start, stop))
            key = np.arange(start, stop, step)
        if np.ndim(key) == 0:
            return self[np.array([int(key)])][0]  # type: ignore[arg-type]
        return self.scaled(self.stored(np.asarray(key)))

    def load(self) -> np.ndarray:
        """The whole split, as one float32 array in memory (the fast path for data that fits)."""
        return self[:]

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), batch_size):
            yield self[start : start + batch_size]


@dataclass(frozen=True)
class PreparedSplit:
    x: StoredRows  # read on demand
    y: np.ndarray  # one-hot float32 labels, in memory
    labels: np.ndarray  # int32 class indices
    folder: Path
    stored: StoredSplit

    def sources(self) -> np.ndarray:
        """Where each example comes from (a file, a table's line), or its position in the split where unknown."""
        if self.stored.source is None:
            return np.array([f"{self.folder.name}[{i}]" for i in range(len(self.labels))])
        return np.asarray(open_checked(self.folder, _record(self.stored.source), (), self._source_dtype())).astype(str)

    def _source_dtype(self) -> np.dtype:
        # A text array's width is whatever its longest source needs: read from the file's header (checked again).
        path = self.folder / self.stored.source.file  # type: ignore[union-attr]
        try:
            with open(path, "rb") as handle:
                np.lib.format.read_magic(handle)
                dtype = np.lib.format.read_array_header_1_0(handle)[2]
        except (OSError, ValueError, EOFError, SyntaxError) as err:
            raise PipelineError(f"{path} is not a readable .npy file ({err}); {paths.rerun_hint(path)}") from None
        if dtype.kind != "U":
            raise PipelineError(f"{path} holds {dtype}, not text; {paths.rerun_hint(path)}")
        return dtype


def _record(stored: StoredFile) -> FileRecord:
    return FileRecord(stored.file, stored.rows, stored.bytes, stored.sha256)


def read_manifest(name: str, folder: Path = paths.PREPARED_DIR) -> StoredSplit:
    """The split's manifest.json, checked (`meta.load_manifest`); `folder` is the prepared folder."""
    recover_directory(folder)
    where = _inside(folder, paths.split_manifest(name))
    return load_manifest(read_json(where), where)


def open_split(name: str, meta: PreparedMeta, folder: Path = paths.PREPARED_DIR) -> PreparedSplit:
    """One split, every file checked against its manifest.json (size, header, sha256) and against meta.json (count,
    shape, classes): anything amiss is one sentence naming the file and `dvc repro -f preprocess`."""
    manifest_path = _inside(folder, paths.split_manifest(name))
    stored = read_manifest(name, folder)
    split_folder = manifest_path.parent
    image = isinstance(meta.scaling, DivideScaling)
    row, count = stored.row_shape, meta.sizes.get(name)  # type: ignore[call-overload]
    model_row = (*row, 1) if image and len(row) == 2 else row
    problem = (
        f"gives the {name} split {stored.count} examples, but meta.json {count}" if stored.count != count
        else f"stores {name} examples of shape {list(row)}, but meta.json describes {list(meta.input_shape)}"
        if tuple(model_row) != tuple(meta.input_shape)
        else f"stores {name} examples as {stored.dtype}, not {'uint8' if image else 'float32'}"
        if stored.dtype != ("uint8" if image else "float32")
        else None
    )  # fmt: skip
    if problem is not None:
        raise PipelineError(f"{manifest_path} {problem}; {paths.rerun_hint(manifest_path)}")
    dtype = np.dtype(stored.dtype)
    shards = [open_checked(split_folder, _record(shard), stored.row_shape, dtype) for shard in stored.shards]
    labels = np.asarray(open_checked(split_folder, _record(stored.labels), (), np.dtype(np.int32)))
    n_classes = len(meta.class_names)
    labels_path = split_folder / stored.labels.file
    if labels.min() < 0 or labels.max() >= n_classes:
        problem = f"holds labels outside 0..{n_classes - 1}, the classes of meta.json"
        raise PipelineError(f"{labels_path} {problem}; {paths.rerun_hint(labels_path)}")
    for shard, record in zip(shards, stored.shards, strict=True):
        if not image and not np.all(np.isfinite(shard)):  # a table's features, stored scaled: small
            bad = split_folder / record.file
            raise PipelineError(f"{bad} holds NaN or infinite features; {paths.rerun_hint(bad)}")
    rows = StoredRows(shards, meta.scaling.pixel_max if isinstance(meta.scaling, DivideScaling) else None)
    return PreparedSplit(rows, one_hot(labels, n_classes), labels, split_folder, stored)
