"""Shared fixtures, and the slow tier (`make test-fast` leaves it out).

A test is slow when it starts DVC, a stage in a subprocess (each imports TensorFlow) or a copy of the
project, or trains in-process: seconds each, where the rest take milliseconds. Using a fixture in
SLOW_FIXTURES marks a test slow here; modules and tests that do the rest themselves carry
`pytest.mark.slow`; and tests/harness.py fails an unmarked test that calls its stage/dvc/repository helpers.
The helpers themselves live in tests/harness.py, shared with bench/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from tests import harness
from tests.harness import dvc, git_commit, make_project_repo

# Fixtures that build or run a project repository; any test depending on one (directly or through
# another fixture) is slow.
SLOW_FIXTURES = {"project_repo", "digits_run"}


# The files that take longest, longest first. `make test` hands whole files to the xdist workers in
# collection order (--dist loadfile --no-loadscope-reorder; xdist's default order is by number of tests, which
# put the 5-minute queue file last): starting the long ones first keeps one worker from running the longest
# file alone at the end. Measured with --durations; the order only moves time, it never skips.
LONGEST_FIRST = (
    "test_resume.py",
    "test_experiments.py",
    "test_backbones.py",
    "test_own_data_pipeline.py",
    "test_fast_recipe.py",
    "test_export.py",
    "test_distributed.py",
    "test_pipeline_e2e.py",
    "test_streaming.py",
    "test_serving.py",
    "test_quality.py",
    "test_hostile_state.py",
    "test_faults.py",
    "test_workflow.py",
    "test_precision.py",
    "test_docs.py",
    "test_remotes.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture is set up, so a fixture that starts a stage for an unmarked test is refused too.
    harness.fast_test = None if item.get_closest_marker("slow") else item.nodeid


def pytest_runtest_teardown(item: pytest.Item) -> None:
    harness.fast_test = None


@pytest.fixture
def project_repo(tmp_path: Path) -> Path:
    return make_project_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository in which the default pipeline (digits) has run once and been committed.

    Read-only for tests: copy it (`copy_repo`) before changing anything. Under pytest-xdist each worker
    has a session of its own; the run is built once in the folder the workers share (the first worker
    to need it builds it, the others wait for it) rather than once per worker.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    repo, done = shared / "digits_run" / "repo", shared / "digits_run" / "done"
    with FileLock(str(shared / "digits_run.lock")):
        if not done.exists():
            shutil.rmtree(repo, ignore_errors=True)  # what a worker that failed half-way left
            make_project_repo(repo)
            dvc(repo, "repro")
            git_commit(repo, "run the pipeline")
            done.touch()
    return repo
