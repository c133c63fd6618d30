"""Fetch a dataset's files from a URL or a local folder: retries, progress, integrity, atomic.

`fetch_dataset` either leaves every file of the dataset verified in the target
folder, or raises `PipelineError` and leaves the target as it was. Longer than most modules: urllib alone
bounds neither a trickling mirror's time nor its size, so the watchdog and the limits are written here.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.datasets import RemoteFile
from pipeline.errors import PipelineError
from pipeline.io.reading import content_chunks
from pipeline.progress import Progress

log = logging.getLogger(__name__)

ATTEMPTS = 3
BACKOFF_SECONDS = 1.0  # doubled after each failed attempt
TIMEOUT_SECONDS = 30.0  # idle: no byte for this long is a stalled connection (retried)
CHUNK = 1 << 20
GZIP_EXPANSION_LIMIT = 20  # a real dataset compresses ~2-6x; far more is a gzip bomb
OFFLINE_HINT = "use data.dataset=digits or iris offline, or set data.source to a mirror URL or a local folder"


@dataclass(frozen=True)
class TimeLimits:
    """How long one attempt at one file may take.

    `idle_seconds` bounds the wait for any byte (a stall; retried); the total bounds a mirror that
    trickles a byte now and then, which never trips the idle limit: `base_seconds` plus the time the
    largest acceptable file takes at `min_bytes_per_second` (40 MB: ~15 min). Not retried: a
    trickling mirror trickles again.
    """

    idle_seconds: float = TIMEOUT_SECONDS
    base_seconds: float = 120.0
    min_bytes_per_second: float = 50_000.0
    backoff_seconds: float = BACKOFF_SECONDS  # before the second attempt; doubled before each later one

    def total_seconds(self, max_bytes: int) -> float:
        return self.base_seconds + max_bytes / self.min_bytes_per_second


class _Transient(Exception):
    """A failure worth retrying: connection trouble, a 5xx, a cut-short body."""


class NotOffered(PipelineError):
    """The source has no file of that name (HTTP 404 or 410, or no such file in the folder)."""


def is_url(source: str) -> bool:
    return source.strip().lower().startswith(("http://", "https://"))


def check_url(url: str) -> None:
    """Refuse a malformed URL (`http://[::1/`, a port that is not a number, no host) with one sentence."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check: it raises on `host:http`
    except ValueError as err:
        raise PipelineError(f"'{url}' is not a valid URL ({err}); fix data.source.") from None
    if not parts.hostname:
        raise PipelineError(f"'{url}' names no host; fix data.source.")


class _Watchdog:
    """Shuts the connection's socket down at the deadline, which wakes a read blocked on it.

    A socket timeout only bounds each wait for data: a mirror sending one byte every two seconds,
    in the headers or in the body, would hold the stage for hours without tripping it.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds, self.fired, self._sockets = seconds, False, []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            if self.fired:
                sock.shutdown(socket.SHUT_RDWR)
        return sock

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener (redirects, proxies, TLS as usual) whose every connection this watchdog tracks."""
        watchdog = self

        def tracked(connection_class: type) -> Callable[..., http.client.HTTPConnection]:
            def connect(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
                connection = connection_class(*args, **kwargs)
                create = connection._create_connection
                connection._create_connection = lambda *a, **k: watchdog.track(create(*a, **k))
                return connection

            return connect

        class HTTPHandler(urllib.request.HTTPHandler):
            def do_open(self, http_class: type, req: urllib.request.Request, **kwargs: Any) -> Any:
                return super().do_open(tracked(http_class), req, **kwargs)

        class HTTPSHandler(urllib.request.HTTPSHandler):
            def do_open(self, http_class: type, req: urllib.request.Request, **kwargs: Any) -> Any:
                return super().do_open(tracked(http_class), req, **kwargs)

        return urllib.request.build_opener(HTTPHandler, HTTPSHandler)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def file_location(source: str, name: str) -> str:
    """Where `name` lives in `source`: a base URL (a trailing slash is implied) or a folder."""
    if is_url(source):
        return source.rstrip("/") + "/" + urllib.parse.quote(name)
    return str(Path(source).expanduser() / name)


def content_sha256(path: Path, max_content_bytes: int) -> str:
    """sha256 of the file's content, decompressed first when its name ends in `.gz`."""
    digest = hashlib.sha256()
    for chunk in content_chunks(path, max_content_bytes, CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:64].lower()
    return start.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body"))


def _http_get(url: str, dest: Path, spec: RemoteFile, limits: TimeLimits) -> None:
    total_seconds = limits.total_seconds(spec.max_bytes)
    with _Watchdog(total_seconds) as watchdog:
        try:
            _http_transfer(watchdog.opener(), url, dest, spec, limits)
        except (_Transient, PipelineError):
            if not watchdog.fired:
                raise
        if watchdog.fired:  # whatever the cut-off connection looked like to http.client
            raise PipelineError(
                f"the transfer took longer than the {total_seconds:.0f} s allowed (a stalled or trickling mirror)"
            )


def _short(err: BaseException) -> str:
    # http.client puts the offending line into its message: a 64 KB garbage line must not become the error.
    text = " ".join("".join(c if c.isprintable() else " " for c in str(err)).split()) or type(err).__name__
    return text if len(text) <= 100 else text[:100] + "…"


def _open(opener: urllib.request.OpenerDirector, url: str, limits: TimeLimits) -> http.client.HTTPResponse:
    """The server's response, its status and headers read; a failure is _Transient if worth retrying."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "keras-dvc-pipeline"})
        return opener.open(request, timeout=limits.idle_seconds)
    except urllib.error.HTTPError as err:
        if err.code >= 500 or err.code in (408, 429):
            raise _Transient(f"HTTP {err.code} {_short(err.reason)}") from None
        refusal = NotOffered if err.code in (404, 410) else PipelineError
        raise refusal(f"HTTP {err.code} {_short(err.reason)}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise _Transient(f"could not connect ({_short(reason)})") from None
    except http.client.HTTPException as err:  # a garbage status line, a header line over 64 KB, over 100 headers
        raise PipelineError(f"the server's reply is not valid HTTP ({type(err).__name__}: {_short(err)})") from None
    except ValueError as err:  # http.client's InvalidURL and friends
        raise PipelineError(f"'{url}' is not a valid URL ({_short(err)})") from None


def _http_transfer(
    opener: urllib.request.OpenerDirector, url: str, dest: Path, spec: RemoteFile, limits: TimeLimits
) -> None:
    response = _open(opener, url, limits)
    with response:
        total = response.headers.get("Content-Length")
        total_bytes = int(total) if total and total.isdigit() else None
        if total_bytes is not None and total_bytes > spec.max_bytes:
            raise PipelineError(f"the server offers {total_bytes} bytes, more than the {spec.max_bytes} expected")
        content_type = response.headers.get("Content-Type", "")
        done = 0
        progress = Progress(spec.name, total_bytes, "MB", scale=1e6, every=2.0)
        try:
            with open(dest, "wb") as out:
                while chunk := response.read(CHUNK):
                    if done == 0 and ("text/html" in content_type or _looks_like_html(chunk)):
                        raise PipelineError("the server sent an HTML page instead of the data file")
                    done += len(chunk)
                    if done > spec.max_bytes:
                        raise PipelineError(f"the server sent more than the {spec.max_bytes} bytes expected")
                    try:
                        out.write(chunk)
                    except OSError as err:  # our own disk (full, say), not the mirror: name the file, no retry
                        raise OSError(err.errno, err.strerror, str(dest)) from None
                    progress.advance(len(chunk))
        except (OSError, http.client.HTTPException, ValueError) as err:
            if isinstance(err, OSError) and err.filename is not None:  # our own file: a full disk is no mirror's fault
                raise
            raise _Transient(f"the transfer broke off after {done} bytes ({type(err).__name__})") from None
        if total_bytes is not None and done != total_bytes:
            raise _Transient(f"the transfer broke off after {done} of {total_bytes} bytes")
        progress.finish()


def _fetch_one(location: str, dest: Path, spec: RemoteFile, limits: TimeLimits) -> None:
    if not is_url(location):
        path = Path(location)
        if not path.is_file():
            raise NotOffered(f"{path} does not exist")
        if path.stat().st_size > spec.max_bytes:
            raise PipelineError(f"{path} is larger than the {spec.max_bytes} bytes expected")
        shutil.copyfile(path, dest)
        return
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _http_get(location, dest, spec, limits)
            return
        except _Transient as err:
            if attempt == ATTEMPTS:
                raise PipelineError(f"{err}, {ATTEMPTS} attempts") from None
            delay = limits.backoff_seconds * 2 ** (attempt - 1)
            log.warning("%s: %s; retrying in %.0f s (attempt %d of %d)", spec.name, err, delay, attempt + 1, ATTEMPTS)
            time.sleep(delay)


def fetch_dataset(
    files: tuple[RemoteFile, ...],
    source: str,
    folder: Path,
    checksums: dict[str, str],
    limits: TimeLimits = TimeLimits(),  # noqa: B008 - frozen, so one shared default is safe
) -> None:
    """Fetch and verify every file into `folder` (a scratch folder the caller renames into place).

    `checksums` overrides the published content sha256 of the named files.
    """
    if is_url(source):
        check_url(source)
    for spec in files:
        location = file_location(source, spec.name)
        dest = folder / spec.name
        log.info("fetching %s from %s", spec.name, location)
        try:
            _fetch_one(location, dest, spec, limits)
            expected = checksums.get(spec.name, spec.content_sha256)
            actual = content_sha256(dest, spec.max_bytes * GZIP_EXPANSION_LIMIT)
        except PipelineError as err:
            dest.unlink(missing_ok=True)
            message = f"could not fetch {spec.name} from {location}: {str(err).rstrip('.')}; {OFFLINE_HINT}."
            raise (NotOffered if isinstance(err, NotOffered) else PipelineError)(message) from None
        if actual != expected:
            dest.unlink(missing_ok=True)
            raise PipelineError(
                f"{spec.name} from {location} failed its integrity check (content sha256 {actual[:12]}…, "
                f"expected {expected[:12]}…): the file is corrupt or not the published one; "
                "check the mirror, or set data.checksums if it deliberately serves another release."
            )
        log.info("%s: verified (content sha256 %s…)", spec.name, actual[:12])


def fetch_any_form(
    forms: tuple[tuple[RemoteFile, ...], ...], source: str, folder: Path, checksums: dict[str, str]
) -> tuple[RemoteFile, ...]:
    """Fetch the first of `forms` (sets of files holding the same dataset) that `source` offers; returns it.

    A local folder offers the first form all of whose files it holds. A URL is tried form by form
    while it answers "not found" (HTTP 404 or 410); the first form's error is reported when it
    offers none. Any other failure (unreachable, a server error, a file that fails its integrity
    check) is reported at once: trying other names would only repeat it, or hide it.
    """
    if len(forms) == 1:
        fetch_dataset(forms[0], source, folder, checksums)
        return forms[0]
    if not is_url(source):
        for files in forms:
            if all(Path(file_location(source, spec.name)).is_file() for spec in files):
                fetch_dataset(files, source, folder, checksums)
                return files
        sets = "; or ".join(", ".join(spec.name for spec in files) for files in forms)
        raise PipelineError(f"{source} holds none of this dataset's sets of files ({sets}); {OFFLINE_HINT}.")
    first_error = None
    for files in forms:
        try:
            fetch_dataset(files, source, folder, checksums)
            return files
        except NotOffered as err:
            first_error = first_error or err
            for spec in files:
                (folder / spec.name).unlink(missing_ok=True)
            log.info("%s does not offer %s (%s); trying the next set of files", source, files[0].name, err)
    raise first_error
