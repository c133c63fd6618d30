"""Atomic writes: the old file or the new one, never half of one, and no scratch left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.files import atomic_directory, atomic_path, load_npz, write_json_atomic, write_npz_atomic


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
