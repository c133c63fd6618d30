"""The download stage against a real HTTP server on 127.0.0.1 serving files the tests make."""

from __future__ import annotations

import gzip
import hashlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets import parse_idx
from tests.harness import edit_params, prepared_split, stage


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    truncate: bool = False  # announce the full length, send half, hang up


@dataclass
class Mirror:
    """A tiny HTTP mirror: `routes` maps a path to what it serves; `hits` counts requests per path."""

    base_url: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    state = Mirror(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            route = state.routes.get(self.path, Route(status=404, body=b"not found", content_type="text/plain"))
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body[: len(route.body) // 2] if route.truncate else route.body)
            if route.truncate:
                self.close_connection = True

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/mirror"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def make_mnist_npz(n_train: int = 60, n_test: int = 20) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        y_train=np.arange(n_train, dtype=np.uint8) % 10,
        x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        y_test=np.arange(n_test, dtype=np.uint8) % 10,
    )
    return buffer.getvalue()


def make_idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_fashion_files(n_train: int = 100, n_test: int = 20) -> dict[str, bytes]:
    """The four IDX files, uncompressed."""
    rng = np.random.default_rng(1)
    return {
        "train-images-idx3-ubyte": make_idx(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte": make_idx(np.arange(n_train) % 10),
        "t10k-images-idx3-ubyte": make_idx(rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte": make_idx(np.arange(n_test) % 10),
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def use_mirror(repo: Path, dataset: str, source: str, checksums: dict[str, str]) -> None:
    edit_params(repo, **{"data.dataset": dataset, "data.source": source, "data.checksums": checksums})


def assert_failed_cleanly(result, repo: Path, *phrases: str) -> None:
    assert result.returncode == 1, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(error_lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in error_lines[0], error_lines[0]
    assert "Traceback" not in result.stderr
    raw = repo / "data" / "raw"
    assert not raw.exists() or not any(raw.iterdir()), "a failed download left files in data/raw"
    assert not list((repo / "data").glob(".raw.*")), "a failed download left its scratch folder"


MNIST = make_mnist_npz()


def test_good_mnist_file_passes_and_preprocesses(project_repo: Path, mirror: Mirror) -> None:
    mirror.routes["/mirror/mnist.npz"] = Route(body=MNIST)
    use_mirror(project_repo, "mnist", mirror.base_url, {"mnist.npz": sha256(MNIST)})
    result = stage(project_repo, "download")
    assert result.returncode == 0, result.stderr
    assert (project_repo / "data/raw/mnist.npz").read_bytes() == MNIST
    assert stage(project_repo, "preprocess").returncode == 0
    assert prepared_split(project_repo, "test")[0].shape == (20, 28, 28)  # the official test split is kept whole


def test_published_checksum_rejects_a_file_that_is_not_mnist(project_repo: Path, mirror: Mirror) -> None:
    mirror.routes["/mirror/mnist.npz"] = Route(body=MNIST)
    use_mirror(project_repo, "mnist", mirror.base_url, {})  # verify against the real MNIST checksum
    result = stage(project_repo, "download")
    assert_failed_cleanly(result, project_repo, "mnist.npz", mirror.base_url, "integrity check")


def test_wrong_checksum_fails(project_repo: Path, mirror: Mirror) -> None:
    corrupted = bytearray(MNIST)
    corrupted[len(corrupted) // 2] ^= 0xFF
    mirror.routes["/mirror/mnist.npz"] = Route(body=bytes(corrupted))
    use_mirror(project_repo, "mnist", mirror.base_url, {"mnist.npz": sha256(MNIST)})
    assert_failed_cleanly(stage(project_repo, "download"), project_repo, "integrity check")


def test_truncated_transfer_is_retried_then_fails(project_repo: Path, mirror: Mirror) -> None:
    mirror.routes["/mirror/mnist.npz"] = Route(body=MNIST, truncate=True)
    use_mirror(project_repo, "mnist", mirror.base_url, {"mnist.npz": sha256(MNIST)})
    assert_failed_cleanly(stage(project_repo, "download"), project_repo, "broke off", "3 attempts")
    assert mirror.hits["/mirror/mnist.npz"] == 3


@pytest.mark.parametrize(("status", "requests"), [(404, 1), (403, 1), (500, 3), (503, 3)])
def test_http_errors_fail_with_status_and_retry_only_server_errors(
    project_repo: Path, mirror: Mirror, status: int, requests: int
) -> None:
    mirror.routes["/mirror/mnist.npz"] = Route(status=status, body=b"error page", content_type="text/plain")
    use_mirror(project_repo, "mnist", mirror.base_url, {"mnist.npz": sha256(MNIST)})
    result = stage(project_repo, "download")
    assert_failed_cleanly(result, project_repo, f"HTTP {status}", "data.dataset=digits")
    assert mirror.hits["/mirror/mnist.npz"] == requests


def test_html_page_instead_of_data_fails(project_repo: Path, mirror: Mirror) -> None:
    page = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
    mirror.routes["/mirror/mnist.npz"] = Route(body=page, content_type="text/html; charset=utf-8")
    use_mirror(project_repo, "mnist", mirror.base_url, {"mnist.npz": sha256(MNIST)})
    assert_failed_cleanly(stage(project_repo, "download"), project_repo, "HTML page")


def test_oversized_file_is_refused_before_download(project_repo: Path, mirror: Mirror) -> None:
    mirror.routes["/mirror/mnist.npz"] = Route(body=b"\0" * 20_000_001)  # more than any real mnist.npz
    use_mirror(project_repo, "mnist", mirror.base_url, {})
    assert_failed_cleanly(stage(project_repo, "download"), project_repo, "more than")


def test_unreachable_mirror_says_what_to_do(project_repo: Path) -> None:
    use_mirror(project_repo, "mnist", "http://127.0.0.1:9/nothing-listens-here", {})
    result = stage(project_repo, "download")
    assert_failed_cleanly(result, project_repo, "could not connect", "data.source")


def test_failed_download_keeps_the_previous_raw_data(project_repo: Path, mirror: Mirror) -> None:
    assert stage(project_repo, "download").returncode == 0  # the default, digits
    before = {p.name: p.read_bytes() for p in (project_repo / "data/raw").iterdir()}
    use_mirror(project_repo, "mnist", mirror.base_url, {})  # every path is a 404 here
    assert stage(project_repo, "download").returncode == 1
    after = {p.name: p.read_bytes() for p in (project_repo / "data/raw").iterdir()}
    assert after == before


def test_recompressed_fashion_files_pass_and_corrupted_ones_fail(project_repo: Path, mirror: Mirror) -> None:
    files = make_fashion_files()
    checksums = {f"{name}.gz": sha256(content) for name, content in files.items()}
    # A mirror that recompresses (as Debian's package does): other .gz bytes, same content.
    for name, content in files.items():
        mirror.routes[f"/mirror/{name}.gz"] = Route(body=gzip.compress(content, compresslevel=1, mtime=0))
    use_mirror(project_repo, "fashion_mnist", mirror.base_url, checksums)
    result = stage(project_repo, "download")
    assert result.returncode == 0, result.stderr
    assert stage(project_repo, "preprocess").returncode == 0

    images = bytearray(files["t10k-images-idx3-ubyte"])
    images[100] ^= 0x01  # one flipped bit in the content
    mirror.routes["/mirror/t10k-images-idx3-ubyte.gz"] = Route(body=gzip.compress(bytes(images)))
    result = stage(project_repo, "download")
    assert result.returncode == 1
    assert "t10k-images-idx3-ubyte.gz" in result.stderr and "integrity check" in result.stderr
    # The previous, good download is still there.
    assert (project_repo / "data/raw/t10k-images-idx3-ubyte.gz").exists()


def test_truncated_gzip_from_a_local_folder_fails(project_repo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "local-mirror"
    folder.mkdir()
    files = make_fashion_files()
    for name, content in files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(content))
    good = (folder / "train-images-idx3-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])
    checksums = {f"{name}.gz": sha256(content) for name, content in files.items()}
    use_mirror(project_repo, "fashion_mnist", str(folder), checksums)
    assert_failed_cleanly(stage(project_repo, "download"), project_repo, "not a valid gzip file")


def test_local_folder_missing_file_names_it(project_repo: Path, tmp_path: Path) -> None:
    use_mirror(project_repo, "fashion_mnist", str(tmp_path / "empty"), {})
    assert_failed_cleanly(stage(project_repo, "download"), project_repo, "does not exist")


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (b"", "not an IDX file"),
        (bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]), "only unsigned bytes"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 2]), "truncated IDX header"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]), "needs 11"),
    ],
)
def test_parse_idx_rejects_malformed_files(data: bytes, phrase: str) -> None:
    with pytest.raises(Exception, match=phrase):
        parse_idx(data)


def test_parse_idx_reads_shape_and_values() -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(make_idx(array)), array)
