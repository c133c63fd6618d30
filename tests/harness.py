"""The one harness of the tests and the bench scripts: copies of this project as git + DVC repositories,
and the commands that drive them (stages, dvc, git) with one environment.

A plain module, so bench/ imports it too (`from tests.harness import ...`); pytest's fixtures stay in
tests/conftest.py. A test outside the slow tier may not start stages or DVC or copy the project
(`refuse_in_fast_tier`): such a test fails at once, naming the fix, instead of slowing `make test-fast`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.params import apply_params

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DVC = str(VENV_BIN / "dvc")

# Every subprocess gets the same environment: this interpreter's tools first,
# no DVC analytics (offline machines would wait on it), and a git identity.
ENV = os.environ | {
    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "PYTHONDONTWRITEBYTECODE": "1",
}

# Set by tests/conftest.py to the id of the running test while that test is not marked slow.
fast_test: str | None = None


def refuse_in_fast_tier(what: str) -> None:
    """Fail a fast-tier test that starts what makes a test slow, so the tier stays fast as tests are added."""
    if fast_test is not None:
        raise AssertionError(
            f"{fast_test} {what}, which takes seconds: mark it @pytest.mark.slow (tests/conftest.py says why)"
        )


def run(
    args: list[str], cwd: Path, *, check: bool = True, timeout: float = 600, env: dict[str, str] = ENV, **kwargs: Any
):
    """Run a command, capturing text output; on an unexpected exit code show what it printed."""
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def dvc(repo: Path, *args: str, check: bool = True, timeout: float = 600):
    refuse_in_fast_tier("runs dvc")
    return run([DVC, *args], repo, check=check, timeout=timeout)


def stage_command(name: str, *args: str) -> list[str]:
    """One stage as a user runs it: `python -m stages.<name>`, in the repository's root."""
    return [sys.executable, "-m", f"stages.{name}", *args]


def stage(repo: Path, name: str, *args: str, check: bool = False, timeout: float = 600, env: dict[str, str] = ENV):
    if "--help" not in args:  # --help answers before a stage imports anything heavy
        refuse_in_fast_tier(f"runs the {name} stage in a subprocess")
    return run(stage_command(name, *args), repo, check=check, timeout=timeout, env=env)


def ran_stages(output: str) -> list[str]:
    """The stages `dvc repro` / `dvc exp run` actually ran, from its `Running stage 'NAME':` lines."""
    return re.findall(r"Running stage '([^']+)'", output)


def edit_params(repo: Path, **changes: Any) -> None:
    """Set dotted keys in the repo's params.yaml, e.g. edit_params(repo, **{"train.epochs": 3})."""
    path = repo / "params.yaml"
    document = yaml.safe_load(path.read_text())
    apply_params(document, changes)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def git_commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", message], repo)


# A checkout that has run the pipeline or the benchmarks holds these untracked; a copy starts without them.
NOT_COPIED = ("bench/results/", "metrics.json", "dvc.lock", "reports/")


def make_project_repo(dest: Path, *, untracked: bool = False) -> Path:
    """A fresh git + DVC repository holding this project's tracked files, committed.

    With `untracked`, also the untracked files git does not ignore: a bench script measures the
    checkout as it is, uncommitted edits and new files included.
    """
    refuse_in_fast_tier("copies the project into a git repository")
    listing = ["git", "ls-files", "-z", *(["--cached", "--others", "--exclude-standard"] if untracked else [])]
    for name in filter(None, run(listing, PROJECT_ROOT).stdout.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file() and not name.startswith(NOT_COPIED):
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    run(["git", "init", "-q", "-b", "main"], dest)
    git_commit(dest, "project")
    return dest


def make_prepared_repo(dest: Path, params: dict[str, Any]) -> Path:
    """A project repository with `params` set and the download and preprocess stages run (digits by default)."""
    repo = make_project_repo(dest)
    edit_params(repo, **params)
    for name in ("download", "preprocess"):
        result = stage(repo, name)
        assert result.returncode == 0, result.stderr
    return repo


def copy_repo(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, symlinks=True)
    return dest


def prepared_split(repo: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of `repo`'s data/prepared as stored (uint8 pixels or scaled features) and its integer labels."""
    from pipeline.prepared import open_split
    from pipeline.preprocessing import read_meta

    opened = open_split(split, read_meta(repo / "data/prepared/meta.json"), repo / "data/prepared")
    return opened.x.stored(np.arange(len(opened.x))), opened.labels


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_metrics(repo: Path) -> dict[str, Any]:
    return read_json(repo / "metrics.json")


# ----------------------------------------------------------------------------- reports in a browser

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it
# Headless, and offline whatever the machine's network: every host name fails to resolve,
# so a report that needs a CDN shows up as blank charts here too.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=15000",  # let the asynchronous chart rendering finish before the dump
]


def open_in_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Load a local HTML file in headless Chromium with console messages logged to stderr."""
    if not CHROMIUM.is_file():
        import pytest  # only here: the bench scripts import this module without pytest's start-up

        pytest.fail(
            f"{CHROMIUM} is not installed: the report tests open pages in headless Chromium; install Debian's "
            "package (sudo apt-get install chromium), as .ci/run does.",
            pytrace=False,
        )
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra]
    return run([str(CHROMIUM), *flags, page.resolve().as_uri()], page.parent, timeout=120)


def console_messages(stderr: str) -> list[str]:
    """The page's console messages (script errors included) from Chromium's stderr log."""
    return re.findall(r':CONSOLE[^\]]*\] "(.*)", source:', stderr)


def drawn_charts(dom: str) -> set[str]:
    """Ids of the elements in which vega drew a non-empty `<canvas class="marks">`."""
    from html.parser import HTMLParser

    class _Finder(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.ids: list[str | None] = []
            self.drawn: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            if tag == "canvas" and "marks" in (values.get("class") or "").split():
                if int(values.get("width") or 0) > 0 and int(values.get("height") or 0) > 0:
                    self.drawn.update(i for i in self.ids if i)
            if tag not in ("canvas", "img", "br", "meta", "input", "link", "hr"):
                self.ids.append(values.get("id"))

        def handle_endtag(self, tag: str) -> None:
            if tag not in ("canvas", "img", "br", "meta", "input", "link", "hr") and self.ids:
                self.ids.pop()

    finder = _Finder()
    finder.feed(dom)
    return finder.drawn


def report_specs(page: Path) -> dict[str, dict[str, Any]]:
    """The vega-lite spec of every chart in a `dvc plots` HTML page, by chart title."""
    specs = {}
    for match in re.finditer(r"var spec = (\{.*?\});\n", page.read_text(encoding="utf-8"), re.S):
        spec = json.loads(match.group(1))
        specs[spec["title"]["text"]] = spec
    return specs


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path: equal digests = the exact same bytes."""
    import hashlib

    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
