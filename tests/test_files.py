"""Atomic writes: the old file or the new one, never half of one, and no scratch left behind. Bounded reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.io import reading
from pipeline.io.atomic import atomic_directory, atomic_path, write_json_atomic, write_npz_atomic
from pipeline.io.reading import load_npz, read_limited


def test_failed_write_keeps_the_old_file_and_leaves_no_scratch(tmp_path: Path) -> None:
    dest = tmp_path / "metrics.json"
    write_json_atomic(dest, {"accuracy": 0.5})
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text('{"accur')
        raise RuntimeError("killed mid-write")
    assert dest.read_text() == '{\n  "accuracy": 0.5\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_failed_directory_write_keeps_the_old_directory(tmp_path: Path) -> None:
    dest = tmp_path / "prepared"
    with atomic_directory(dest) as folder:
        write_npz_atomic(folder / "train.npz", x=np.arange(3))
    with pytest.raises(KeyboardInterrupt), atomic_directory(dest) as folder:
        write_npz_atomic(folder / "train.npz", x=np.arange(5))
        raise KeyboardInterrupt
    np.testing.assert_array_equal(load_npz(dest / "train.npz")["x"], np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_write(tmp_path: Path) -> None:
    (tmp_path / ".model.abc123.tmp.keras").write_bytes(b"half a model")
    (tmp_path / ".raw.xyz.tmp").mkdir()
    write_json_atomic(tmp_path / "model.keras", {})
    with atomic_directory(tmp_path / "raw"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "raw"]


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a.json", {})
    assert (tmp_path / "a.json").stat().st_mode & 0o644 == 0o644


def _grown_since_fstat(monkeypatch: pytest.MonkeyPatch) -> None:
    """fstat reports the file empty: what read_limited sees when a file grows between its fstat and its read."""
    real_fstat = os.fstat

    def fstat(descriptor: int) -> os.stat_result:
        status = real_fstat(descriptor)
        return os.stat_result((status.st_mode, *status[1:6], 0, *status[7:]))

    monkeypatch.setattr(reading.os, "fstat", fstat)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 3 * 2**20 + 7])
@pytest.mark.parametrize("grown", [False, True])
def test_read_limited_returns_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, grown: bool
) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    (tmp_path / "f.bin").write_bytes(data)
    if grown:
        _grown_since_fstat(monkeypatch)
    assert read_limited(tmp_path / "f.bin", 4 * 2**20, too_large="x", unreadable="y") == data


@pytest.mark.parametrize("grown", [False, True])
def test_read_limited_refuses_a_file_over_the_limit_even_if_it_grew_after_fstat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grown: bool
) -> None:
    (tmp_path / "f.bin").write_bytes(bytes(2**20 + 1))
    if grown:
        _grown_since_fstat(monkeypatch)
    with pytest.raises(PipelineError, match=r"f.bin is larger than 1 MiB; cut it\.$"):
        read_limited(tmp_path / "f.bin", 2**20, too_large="cut it.", unreadable="y")
    assert read_limited(tmp_path / "f.bin", 2**20 + 1, too_large="x", unreadable="y") == bytes(2**20 + 1)
