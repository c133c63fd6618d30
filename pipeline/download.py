"""Fetch a dataset's files from a URL or a local folder: retries, progress, integrity, atomic.

`fetch_dataset` either leaves every file of the dataset verified in the target
folder, or raises `PipelineError` and leaves the target as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pipeline.datasets import RemoteFile
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

ATTEMPTS = 3
BACKOFF_SECONDS = 1.0  # doubled after each failed attempt
TIMEOUT_SECONDS = 30.0
CHUNK = 1 << 20
GZIP_EXPANSION_LIMIT = 20  # a real dataset compresses ~2-6x; far more is a gzip bomb
OFFLINE_HINT = "use data.dataset=digits or iris offline, or set data.source to a mirror URL or a local folder"


class _Transient(Exception):
    """A failure worth retrying: connection trouble, a 5xx, a cut-short body."""


class NotOffered(PipelineError):
    """The source has no file of that name (HTTP 404 or 410, or no such file in the folder)."""


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https")


def file_location(source: str, name: str) -> str:
    """Where `name` lives in `source`: a base URL (a trailing slash is implied) or a folder."""
    if is_url(source):
        return source.rstrip("/") + "/" + urllib.parse.quote(name)
    return str(Path(source).expanduser() / name)


def content_sha256(path: Path, max_content_bytes: int) -> str:
    """sha256 of the file's content, decompressed first when its name ends in `.gz`."""
    digest = hashlib.sha256()
    seen = 0
    opener: Callable = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                seen += len(chunk)
                if seen > max_content_bytes:
                    raise PipelineError(
                        f"{path.name} holds more than {max_content_bytes} bytes of content; it is not the dataset."
                    )
                digest.update(chunk)
    except (OSError, EOFError) as err:  # bad or truncated gzip stream
        raise PipelineError(f"{path.name} is not a valid gzip file ({err})") from None
    return digest.hexdigest()


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:64].lower()
    return start.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body"))


def _report_progress(name: str, done: int, total: int | None, last_logged: list[float]) -> None:
    now = time.monotonic()
    if now - last_logged[0] < 2.0 and (total is None or done < total):
        return
    last_logged[0] = now
    if total:
        log.info("%s: %.1f of %.1f MB (%d%%)", name, done / 1e6, total / 1e6, 100 * done // total)
    else:
        log.info("%s: %.1f MB", name, done / 1e6)


def _http_get(url: str, dest: Path, spec: RemoteFile) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "keras-dvc-pipeline"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as err:
        if err.code >= 500 or err.code in (408, 429):
            raise _Transient(f"HTTP {err.code} {err.reason}") from None
        raise (NotOffered if err.code in (404, 410) else PipelineError)(f"HTTP {err.code} {err.reason}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise _Transient(f"could not connect ({reason})") from None
    with response:
        total = response.headers.get("Content-Length")
        total_bytes = int(total) if total and total.isdigit() else None
        if total_bytes is not None and total_bytes > spec.max_bytes:
            raise PipelineError(f"the server offers {total_bytes} bytes, more than the {spec.max_bytes} expected")
        content_type = response.headers.get("Content-Type", "")
        done = 0
        last_logged = [time.monotonic()]
        try:
            with open(dest, "wb") as out:
                while chunk := response.read(CHUNK):
                    if done == 0 and ("text/html" in content_type or _looks_like_html(chunk)):
                        raise PipelineError("the server sent an HTML page instead of the data file")
                    done += len(chunk)
                    if done > spec.max_bytes:
                        raise PipelineError(f"the server sent more than the {spec.max_bytes} bytes expected")
                    out.write(chunk)
                    _report_progress(spec.name, done, total_bytes, last_logged)
        except (TimeoutError, http.client.IncompleteRead, ConnectionError) as err:
            raise _Transient(f"the transfer broke off after {done} bytes ({type(err).__name__})") from None
        if total_bytes is not None and done != total_bytes:
            raise _Transient(f"the transfer broke off after {done} of {total_bytes} bytes")


def _fetch_one(location: str, dest: Path, spec: RemoteFile) -> None:
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
            _http_get(location, dest, spec)
            return
        except _Transient as err:
            if attempt == ATTEMPTS:
                raise PipelineError(f"{err}, {ATTEMPTS} attempts") from None
            delay = BACKOFF_SECONDS * 2 ** (attempt - 1)
            log.warning("%s: %s; retrying in %.0f s (attempt %d of %d)", spec.name, err, delay, attempt + 1, ATTEMPTS)
            time.sleep(delay)


def fetch_dataset(files: tuple[RemoteFile, ...], source: str, folder: Path, checksums: dict[str, str]) -> None:
    """Fetch and verify every file into `folder` (a scratch folder the caller renames into place).

    `checksums` overrides the published content sha256 of the named files.
    """
    for spec in files:
        location = file_location(source, spec.name)
        dest = folder / spec.name
        log.info("fetching %s from %s", spec.name, location)
        try:
            _fetch_one(location, dest, spec)
            expected = checksums.get(spec.name, spec.content_sha256)
            actual = content_sha256(dest, spec.max_bytes * GZIP_EXPANSION_LIMIT)
        except PipelineError as err:
            dest.unlink(missing_ok=True)
            message = f"could not fetch {spec.name} from {location}: {err}; {OFFLINE_HINT}."
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
