"""The prepared splits on disk (pipeline/prepared.py, docs/data-on-disk.md): shards of a bounded size and their
manifest, every file checked on reading, rows read on demand exactly as the in-memory arrays give them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline import paths, resources
from pipeline.errors import PipelineError
from pipeline.evaluation import split_digest
from pipeline.meta import PreparedMeta
from pipeline.prepared import open_split, read_manifest, rows_per_shard, write_splits
from pipeline.preprocessing import one_hot, scale_pixels
from tests.harness import PROJECT_ROOT

SIZES = {"train": 100, "val": 20, "test": 30}
SHARD_MB = 0.001  # 1,000 bytes: 15 examples of 8x8 pixels per shard, 7 shards for the training split


def image_meta(sizes: dict[str, int] = SIZES) -> PreparedMeta:
    return PreparedMeta.model_validate({
        "dataset": "drawn", "kind": "image", "input_shape": [8, 8, 1], "class_names": ["a", "b", "c"],
        "scaling": {"method": "divide", "pixel_max": 255.0},
        "image": {"color_mode": "grayscale", "resize": "pillow-box"},
        "sizes": sizes, "test_split": "drawn", "val_split": "drawn",
    })  # fmt: skip


def write_drawn(folder: Path, sizes: dict[str, int] = SIZES, shard_mb: float = SHARD_MB) -> dict[str, np.ndarray]:
    """Random 8x8 uint8 images and labels, written as preprocess writes them; returns the arrays in memory."""
    rng = np.random.default_rng(0)
    arrays = {name: rng.integers(0, 256, (count, 8, 8), dtype=np.uint8) for name, count in sizes.items()}
    labels = {name: np.arange(count) % 3 for name, count in sizes.items()}
    folder.mkdir(parents=True, exist_ok=True)
    chunks = ((name, x[start : start + 7]) for name, x in arrays.items() for start in range(0, len(x), 7))
    sources = {"test": np.array([f"image {i}.png" for i in range(sizes["test"])])}
    write_splits(folder, chunks, labels=labels, row_shape=(8, 8), dtype="uint8", shard_mb=shard_mb, sources=sources)
    (folder / "meta.json").write_text(json.dumps(image_meta(sizes).dump()))
    return arrays


@pytest.fixture
def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """A workspace (the cwd) whose data/prepared holds `write_drawn`'s splits, in many small shards."""
    monkeypatch.chdir(tmp_path)
    return write_drawn(paths.PREPARED_DIR)


def test_splits_round_trip_through_many_small_shards(prepared: dict[str, np.ndarray]) -> None:
    shards = read_manifest("train").shards
    assert len(shards) == 7 and [s.rows for s in shards] == [15] * 6 + [10]
    assert all((paths.split_dir("train") / s.file).stat().st_size <= 1000 + 128 for s in shards)  # + .npy header
    split = open_split("train", image_meta())
    expected = scale_pixels(prepared["train"], 255.0)
    np.testing.assert_array_equal(split.x.load(), expected)  # bit for bit what the in-memory path gives
    order = np.random.default_rng(1).permutation(100)
    np.testing.assert_array_equal(split.x[order], expected[order])  # rows from every shard, in any order
    np.testing.assert_array_equal(split.x[13:47], expected[13:47])  # a slice across three shards
    np.testing.assert_array_equal(split.x[99], expected[99])
    assert split.x.shape == (100, 8, 8, 1) and len(split.x) == 100
    np.testing.assert_array_equal(split.y, one_hot(np.arange(100) % 3, 3))
    test = open_split("test", image_meta())
    assert test.sources()[4] == "image 4.png" and split.sources()[4] == "train[4]"
    assert split_digest(test.x, test.y) == split_digest(scale_pixels(prepared["test"], 255.0), test.y)


def test_a_shard_holds_at_least_one_example_and_at_most_shard_mb() -> None:
    assert rows_per_shard(64, 256) == 4_000_000
    assert rows_per_shard(200 * 200 * 3, 256) == 2133  # 255,960,000 bytes
    assert rows_per_shard(10**9, 256) == 1  # an example larger than a shard is never split


def _edit(path: Path, edit: Callable[[bytes], bytes]) -> None:
    path.write_bytes(edit(path.read_bytes()))


MANIFEST = paths.split_manifest("train")


def _edit_manifest(change: Callable[[dict], object]) -> Callable[[], Path]:
    def damage() -> Path:
        data = json.loads(MANIFEST.read_text())
        change(data)
        MANIFEST.write_text(json.dumps(data))
        return MANIFEST

    return damage


def _damage_file(name: str, edit: Callable[[bytes], bytes]) -> Callable[[], Path]:
    def damage() -> Path:
        _edit(paths.split_dir("train") / name, edit)
        return paths.split_dir("train") / name

    return damage


def _delete(name: str) -> Path:
    (paths.split_dir("train") / name).unlink()
    return paths.split_dir("train") / name


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


DAMAGE: dict[str, tuple[Callable[[], Path], str]] = {
    "shard-truncated": (_damage_file("x-00003.npy", lambda data: data[:-5]), "truncated or replaced"),
    "shard-pixel-edited": (_damage_file("x-00003.npy", _flip_last_byte), "sha256 differs"),
    "shard-header-edited": (_damage_file("x-00003.npy", lambda d: d.replace(b"(15, 8, 8)", b"(15, 8, 4)")),
                            "header claims shape (15, 8, 4)"),
    "shard-deleted": (lambda: _delete("x-00006.npy"), "is missing"),
    "labels-edited": (_damage_file("y.npy", _flip_last_byte), "sha256 differs"),
    "manifest-garbage": (_damage_file("manifest.json", lambda data: data[:50]), "not valid JSON"),
    "manifest-deleted": (lambda: _delete("manifest.json"), "not found"),
    "manifest-count-edited": (_edit_manifest(lambda m: m.update(count=99)), "do not add up"),
    "manifest-names-another-folder": (
        _edit_manifest(lambda m: m["shards"][0].update(file="../val/x-00000.npy")), "shards[0].file"),
    "manifest-shape-edited": (_edit_manifest(lambda m: m.update(row_shape=[8, 4])), "shape [8, 4]"),
    "manifest-dtype-edited": (_edit_manifest(lambda m: m.update(dtype="float32")), "as float32"),
}  # fmt: skip


@pytest.mark.parametrize(("damage", "phrase"), DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_shard_or_manifest_is_one_sentence_naming_the_file(
    prepared: dict[str, np.ndarray], damage: Callable[[], Path], phrase: str
) -> None:
    damaged = damage()
    with pytest.raises(PipelineError) as caught:
        open_split("train", image_meta())
    message = str(caught.value)
    assert message.startswith(str(damaged)) and phrase in message, message
    assert message.endswith("rerun the stage that writes it: dvc repro -f preprocess.") and "\n" not in message


def test_the_manifest_must_agree_with_meta_json_and_its_files(prepared: dict[str, np.ndarray]) -> None:
    with pytest.raises(PipelineError, match=r"^data/prepared/train/manifest.json gives the train split 100 examples"):
        open_split("train", image_meta(SIZES | {"train": 101}))
    _edit_manifest(lambda m: m["shards"][1].update(sha256="0" * 64))()  # a manifest that lies about a shard
    with pytest.raises(PipelineError, match=r"^data/prepared/train/x-00001.npy does not hold the bytes manifest.json"):
        open_split("train", image_meta())


# ----------------------------------------------------------------------------- the memory and disk checks


def test_train_holds_small_splits_in_memory_and_streams_large_ones() -> None:
    assert resources.hold_in_memory("auto", 1000, 100, "train")
    assert not resources.hold_in_memory("stream", 1000, 100, "train")
    huge = 10 * resources.available_memory()
    assert not resources.hold_in_memory("auto", huge, 100, "train")
    with pytest.raises(
        PipelineError,
        match=r"^the train split loaded into memory \(up to 3 copies, train.feed=memory\) take .*; set train",
    ):
        resources.hold_in_memory("memory", huge, 100, "train")
    with pytest.raises(PipelineError, match=r"^8 batches of the val split take .* available; lower train.batch_size"):
        resources.hold_in_memory("stream", 1000, huge, "val")


def test_preprocess_refuses_what_its_disk_or_memory_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"^the prepared splits in data/prepared take .* free on its disk; free"):
        write_splits(
            tmp_path, iter(()), labels={"train": np.zeros(10**9, np.int8)}, row_shape=(4096, 4096), dtype="uint8",
            shard_mb=256, sources={},
        )  # fmt: skip
    assert not list(tmp_path.iterdir())  # refused before a file was written
    with pytest.raises(
        PipelineError, match=r"^decoding holds 10 images of 4096x4096x3 at once \(503 MB\), more than 1 MB "
        r"\(preprocess.memory_limit_mb=1\); choose a smaller preprocess.image_size"
    ):  # fmt: skip
        resources.check_decoding(10, (4096, 4096, 3), 1)
    resources.check_decoding(10, (16, 16, 3), 1)  # 7,680 bytes: fits in 1 MB


def test_the_memory_checks_see_the_cgroup_a_stage_runs_in() -> None:
    """A container's (or a benchmark's) memory cgroup, not the machine's free memory, is what a stage may use."""
    group = Path("/sys/fs/cgroup/memory") / f"keras-dvc-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError:
        pytest.skip("no cgroup v1 memory controller to write here (root on a cgroup v1 machine is needed)")
    try:
        (group / "memory.limit_in_bytes").write_text("500000000")
        script = "from pipeline.resources import available_memory; print(available_memory())"
        enter = f'echo $$ > {group / "cgroup.procs"} && exec "$0" -c "$1"'
        result = subprocess.run(
            ["sh", "-c", enter, sys.executable, script], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        )
        assert 400_000_000 < int(result.stdout) <= 500_000_000
    finally:
        group.rmdir()
