"""Shared fixtures: a real git + DVC repository made from this project. The helpers are in tests/harness.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import dvc, git_commit, make_project_repo


@pytest.fixture
def project_repo(tmp_path: Path) -> Path:
    return make_project_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository in which the default pipeline (digits) has run once and been committed.

    Read-only for tests: copy it (`copy_repo`) before changing anything.
    """
    repo = make_project_repo(tmp_path_factory.mktemp("digits") / "repo")
    dvc(repo, "repro")
    git_commit(repo, "run the pipeline")
    return repo
