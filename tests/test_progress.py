"""Progress lines of long work: none for short work, regular ones for long work, cheap enough per table row."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_predict import image_meta

from pipeline import cli, decoding, folders, tables
from pipeline.images import Conversion
from pipeline.inputs import read_inputs
from pipeline.progress import Progress


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_short_work_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    progress = Progress("decoding", 3, "images", every=60)
    for _ in range(3):
        progress.advance()
    progress.finish()
    assert _lines(caplog) == []


def test_long_work_logs_counts_and_ends_with_the_total(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    progress = Progress("decoding", 4, "images", every=0)
    progress.advance()
    progress.advance(3)
    progress.finish()
    lines = _lines(caplog)
    assert lines[0] == "decoding: 1 of 4 images (25%)"
    assert lines[-1] == "decoding: 4 of 4 images (100%)"


def test_scaled_counts_and_unknown_totals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    Progress("mnist.npz", 11_490_434, "MB", scale=1e6, every=0).advance(3_100_000)
    Progress("indexing data/own/pets", unit="files read and hashed", every=0).advance(40_000)
    assert _lines(caplog) == ["mnist.npz: 3.1 of 11.5 MB (26%)", "indexing data/own/pets: 40,000 files read and hashed"]


def test_the_clock_is_read_rarely_when_calls_are_frequent(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    real_monotonic = cli.time.monotonic

    def counted() -> float:
        reads.append(1)
        return real_monotonic()

    monkeypatch.setattr(cli.time, "monotonic", counted)
    progress = Progress("checking t.csv", unit="rows")
    for _ in range(1_000_000):
        progress.advance()
    assert progress.done == 1_000_000
    assert len(reads) < 2_000  # about ten a second; one per call would be a million


@pytest.fixture
def every_check_logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Progress logs at every look at the clock, as if each took 5 s: the lines of long work, in a test."""
    caplog.set_level(logging.INFO)
    real_init = Progress.__init__
    monkeypatch.setattr(Progress, "__init__", lambda self, *a, **k: real_init(self, *a, **{**k, "every": 0}))
    return caplog


def test_stages_report_progress_of_long_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_check_logs: pytest.LogCaptureFixture
) -> None:
    """The index, the decoding and both passes over a table log their progress (every check logs here)."""
    monkeypatch.chdir(tmp_path)
    for label in ("a", "b"):
        (Path("own") / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(Path("own") / label / f"{i}.png")
    index = folders.index_folder(Path("own"))
    rows = np.array([(path, sha) for path, _, sha in index["train"]], dtype=object)
    decoding.decode_splits({"train": rows}, Conversion(), 0)
    rows = "".join(f"{i * 7 % 10},{'ab'[i % 2]}\n" for i in range(10))  # x not a row counter, which is refused
    Path("t.csv").write_text("x,y\n" + rows, encoding="utf-8")
    tables.read_table(Path("t.csv"), "y")
    lines = _lines(every_check_logs)
    assert "indexing own: 6 files read and hashed" in lines
    assert "decoding: 6 of 6 images (100%)" in lines
    assert "checking t.csv: 10 rows" in lines
    assert "converting t.csv: 10 of 10 rows (100%)" in lines


def test_predict_reports_progress_reading_many_inputs(
    tmp_path: Path, every_check_logs: pytest.LogCaptureFixture
) -> None:
    spec = image_meta((4, 4, 1), "grayscale")
    for i in range(5):
        Image.new("L", (8, 8), 50 * i).save(tmp_path / f"{i}.png")
    assert read_inputs([tmp_path], spec).x.shape == (5, 4, 4, 1)
    assert _lines(every_check_logs)[-1] == "reading: 5 of 5 inputs (100%)"
