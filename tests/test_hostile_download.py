"""Hostile mirrors: replies that are not HTTP, stalls and trickles, malformed URLs, and malformed content.

A raw TCP server on 127.0.0.1 sends exactly the bytes each test scripts, at the pace it scripts.
Every case must end in one `PipelineError` sentence, within bounded time (and, for content, bounded memory).
"""

from __future__ import annotations

import gzip
import io
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from test_download import make_idx, make_mnist_npz

from pipeline.datasets import REGISTRY, RemoteFile, parse_idx
from pipeline.errors import PipelineError
from pipeline.io.download import TimeLimits, fetch_dataset
from tests.harness import ENV, PROJECT_ROOT, edit_params, stage

Reply = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """Accepts connections and hands each to `reply` (which writes raw bytes); stops when the test ends."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/mirror"
        self.reply: Reply = lambda conn, stop: None
        self.stop = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)  # the request
                self.reply(conn, self.stop)
            except OSError:  # the client hung up: that is what most of these tests expect
                pass


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.stop.set()
    server.thread.join(timeout=2)
    server.sock.close()


def send(data: bytes) -> Reply:
    return lambda conn, stop: conn.sendall(data)


def trickle(head: bytes, every: float) -> Reply:
    """`head` at once, then one byte every `every` seconds, for as long as the client listens."""

    def reply(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head)
        while not stop.wait(every):
            conn.sendall(b"0")

    return reply


def stall(head: bytes) -> Reply:
    def reply(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head)
        stop.wait(30)

    return reply


FILE = RemoteFile("mnist.npz", "0" * 64, 1000)
FAST = TimeLimits(idle_seconds=0.5, base_seconds=1.5, min_bytes_per_second=1e9, backoff_seconds=0.05)
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"


def fetch_error(url: str, tmp_path: Path, limits: TimeLimits = FAST) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(PipelineError) as caught:
        fetch_dataset((FILE,), url, tmp_path, {}, limits)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 500, message
    assert not list(tmp_path.iterdir()), "a failed fetch left its file behind"
    return message, time.monotonic() - start


@pytest.mark.parametrize(
    "reply",
    [
        send(b"SPAM SPAM SPAM\r\n\r\n"),
        send(b"HTTP/1.1 200 OK\r\n" + b"X-Flood: 1\r\n" * 101 + b"\r\n"),
        send(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n"),
        send(b"HTTP/1.1 " + b"9" * 70_000 + b"\r\n\r\n"),
        send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
    ],
    ids=["garbage-status-line", "over-100-headers", "70KB-header-line", "70KB-status-line", "garbage-chunks"],
)
def test_a_reply_that_is_not_http_is_one_sentence(raw_server: RawServer, tmp_path: Path, reply: Reply) -> None:
    raw_server.reply = reply
    message, elapsed = fetch_error(raw_server.url, tmp_path)
    assert "mnist.npz" in message and raw_server.url in message
    assert elapsed < 5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("reply", "phrase", "attempts"),
    [
        (stall(OK_HEAD), "broke off", 3),  # headers, then nothing: the idle limit, retried
        (stall(b""), "could not connect", 3),  # not even a status line
        (trickle(OK_HEAD, 0.1), "took longer than", 1),  # a byte every 0.1 s: never idle, never done
        (trickle(b"HTTP/1.1 200 OK\r\nX-Slow: ", 0.1), "took longer than", 1),  # trickling headers
    ],
    ids=["stall-after-headers", "stall-before-status", "trickle-body", "trickle-headers"],
)
def test_a_stalling_or_trickling_mirror_fails_within_the_time_limits(
    raw_server: RawServer, tmp_path: Path, reply: Reply, phrase: str, attempts: int
) -> None:
    raw_server.reply = reply
    message, elapsed = fetch_error(raw_server.url, tmp_path)
    assert phrase in message, message
    assert raw_server.connections == attempts
    assert elapsed < attempts * (FAST.total_seconds(FILE.max_bytes) + 1), elapsed


def test_the_total_limit_grows_with_the_largest_acceptable_file() -> None:
    limits = TimeLimits()
    assert limits.total_seconds(40_000_000) > limits.total_seconds(100_000) >= limits.base_seconds


@pytest.mark.parametrize("url", ["http://[::1/", "http://127.0.0.1:port/", "https://", "http://[zz]/x"])
def test_a_malformed_url_is_one_sentence(tmp_path: Path, url: str) -> None:
    message, _ = fetch_error(url, tmp_path)
    assert url in message and "data.source" in message


def test_the_download_stage_refuses_a_malformed_url_without_a_traceback(project_repo: Path) -> None:
    edit_params(project_repo, **{"data.dataset": "mnist", "data.source": "http://[::1/"})
    result = stage(project_repo, "download")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if " ERROR " in line][0].count("http://[::1/") == 1


# ----------------------------------------------------------------------------- content a trusted mirror may still send


def idx_header(*shape: int) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (idx_header(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + b"\0" * 16, "needs"),  # overflows int64 in np.prod
        (idx_header(2**31, 2**31, 4) + b"\0" * 16, "needs"),  # 2**64 bytes: wraps to 0 in int64
        (idx_header(60, 0, 28), "empty"),  # no bytes needed, and nothing to learn
        (idx_header(3, 4) + b"\0" * 11, "needs"),
    ],
    ids=["dims-overflow-uint32", "dims-wrap-int64", "zero-dimension", "size-mismatch"],
)
def test_parse_idx_refuses_headers_that_do_not_describe_the_data(data: bytes, phrase: str) -> None:
    with pytest.raises(PipelineError, match=phrase):
        parse_idx(data, "train-images-idx3-ubyte.gz")


def _fashion_folder(folder: Path, **replace: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (60, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(60) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(20) % 10,
    } | replace
    folder.mkdir()
    for name, array in arrays.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(make_idx(array)))
    return folder


@pytest.mark.parametrize(
    "replace",
    [
        {"train-images-idx3-ubyte": np.zeros((60, 0, 28))},
        {"train-images-idx3-ubyte": np.zeros((0, 28, 28)), "train-labels-idx1-ubyte": np.zeros(0)},
        {"train-labels-idx1-ubyte": (np.arange(60) % 10).reshape(60, 1)},
        {"t10k-images-idx3-ubyte": np.zeros((20, 784))},
    ],
    ids=["zero-height", "no-examples", "labels-N-by-1", "flat-images"],
)
def test_fashion_files_of_the_wrong_shape_are_refused(tmp_path: Path, replace: dict[str, np.ndarray]) -> None:
    folder = _fashion_folder(tmp_path / "raw", **replace)
    with pytest.raises(PipelineError, match="fashion_mnist|idx3-ubyte|idx1-ubyte"):
        REGISTRY["fashion_mnist"].read(folder)


def _mnist_folder(folder: Path, data: bytes) -> Path:
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(data)
    return folder


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _claiming_npz(shape: tuple[int, ...]) -> bytes:
    """An npz whose x_train member's header claims `shape` (10**12 bytes) over a few bytes of data."""
    good = make_mnist_npz()
    with zipfile.ZipFile(io.BytesIO(good)) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    members["x_train.npy"] = header.getvalue() + b"\0" * 64
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name, content in members.items():
            target.writestr(name, content)
    return out.getvalue()


MNIST_ARRAYS = dict(np.load(io.BytesIO(make_mnist_npz())))


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (_claiming_npz((10**6, 10**3, 10**3)), "claims shape"),
        (b"PK\x03\x04" + b"\0" * 100, "not a readable .npz"),
        (make_mnist_npz()[:2000], "not a readable .npz"),
        (_npz(**MNIST_ARRAYS | {"y_train": MNIST_ARRAYS["y_train"].reshape(-1, 1)}), "labels"),
        (_npz(**MNIST_ARRAYS | {"x_train": MNIST_ARRAYS["x_train"][:, :0]}), "empty"),
        (_npz(**{k: v for k, v in MNIST_ARRAYS.items() if k != "y_test"}), "y_test"),
        (_npz(**MNIST_ARRAYS | {"y_train": MNIST_ARRAYS["y_train"].astype(np.float32) + 0.5}), "whole numbers"),
    ],
    ids=[
        "header-claims-1e12-bytes",
        "garbage",
        "truncated",
        "labels-N-by-1",
        "zero-width",
        "member-missing",
        "float-labels",
    ],
)
def test_a_malformed_mnist_npz_is_one_sentence(tmp_path: Path, data: bytes, phrase: str) -> None:
    folder = _mnist_folder(tmp_path / "raw", data)
    with pytest.raises(PipelineError, match=phrase) as caught:
        REGISTRY["mnist"].read(folder)
    assert "mnist.npz" in str(caught.value) and "\n" not in str(caught.value)


_BOMB_READER = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from pipeline.datasets import REGISTRY
    from pipeline.errors import PipelineError
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
    try:
        REGISTRY["mnist"].read(Path(sys.argv[1]))
    except PipelineError as err:
        print(err)
        sys.exit(1)
    """
)


def _deflated_zip(members: dict[str, tuple[bytes, int, int]]) -> bytes:
    """A zip archive from members already deflated: name -> (raw deflate stream, crc32, uncompressed size)."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, (data, crc, size) in members.items():
        offset, encoded = out.tell(), name.encode()
        fields = struct.pack("<HHHHHIII", 20, 0, 8, 0, 0, crc, len(data), size)
        out.write(b"PK\x03\x04" + fields + struct.pack("<HH", len(encoded), 0) + encoded + data)
        central.write(b"PK\x01\x02" + struct.pack("<H", 20) + fields)
        central.write(struct.pack("<HHHHHII", len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    start = out.tell()
    out.write(central.getvalue())
    count = len(members)
    out.write(b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, count, count, len(central.getvalue()), start, 0))
    return out.getvalue()


def _npy_bytes(shape: tuple[int, ...]) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return header.getvalue()


def _deflate(data: bytes) -> tuple[bytes, int, int]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(), zlib.crc32(data), len(data)


def _zero_bomb(header: bytes, n_zeros: int) -> tuple[bytes, int, int]:
    """`header` then `n_zeros` zero bytes, deflated by repeating one fully flushed block of 16 MiB of zeros."""
    block = 1 << 24
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    zeros = compressor.compress(b"\0" * block) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(b"\0" * (n_zeros % block)) + compressor.flush()
    crc = zlib.crc32(header)
    for _ in range(n_zeros // block):
        crc = zlib.crc32(b"\0" * block, crc)
    crc = zlib.crc32(b"\0" * (n_zeros % block), crc)
    return head + zeros * (n_zeros // block) + tail, crc, len(header) + n_zeros


@pytest.mark.slow
def test_an_npz_zip_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    # 1.5 GB of pixels in a ~1.5 MB archive, every header true to its member's size.
    members = {f"{name}.npy": _deflate(_npy_bytes((10,)) + bytes(10)) for name in ("y_train", "y_test")}
    members["x_test.npy"] = _deflate(_npy_bytes((10, 28, 28)) + bytes(7840))
    members["x_train.npy"] = _zero_bomb(_npy_bytes((1_500_000, 1000)), 1_500_000_000)
    folder = _mnist_folder(tmp_path / "raw", _deflated_zip(members))
    assert (folder / "mnist.npz").stat().st_size < 3_000_000
    with zipfile.ZipFile(folder / "mnist.npz") as archive, archive.open("x_test.npy") as member:
        assert len(member.read()) == 7840 + 128  # a well-formed archive: only its size is hostile
    limit = 1 << 30  # the interpreter, NumPy and this reader in 1 GiB of address space: 1.5 GB cannot fit
    result = subprocess.run(
        [sys.executable, "-c", _BOMB_READER, str(folder), str(limit)],
        env=ENV | {"PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "mnist.npz" in result.stdout and "unpacks to" in result.stdout, result.stdout
