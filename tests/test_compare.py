"""Comparing runs across commits: `dvc metrics/params/plots diff` (experiments and the queue: test_experiments.py)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from tests.harness import (
    console_messages,
    copy_repo,
    drawn_charts,
    dvc,
    edit_params,
    git_commit,
    open_in_chromium,
    ran_stages,
    read_metrics,
    report_specs,
    run,
)

pytestmark = pytest.mark.slow  # real dvc diffs in copies of the digits_run repository

FEW_EPOCHS = 3  # fewer than params.yaml's default, so both the params and the metrics change


def committed(repo: Path, rev: str, path: str) -> str:
    return run(["git", "show", f"{rev}:{path}"], repo).stdout


@pytest.fixture(scope="module")
def two_commits(digits_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits_run plus a second commit that trained for FEW_EPOCHS epochs."""
    repo = copy_repo(digits_run, tmp_path_factory.mktemp("compare") / "repo")
    edit_params(repo, **{"train.epochs": FEW_EPOCHS})
    assert ran_stages(dvc(repo, "repro").stdout) == ["train", "evaluate", "export"]
    git_commit(repo, f"train for {FEW_EPOCHS} epochs")
    return repo


def test_metrics_diff_shows_both_commits_values(two_commits: Path) -> None:
    old = json.loads(committed(two_commits, "HEAD~1", "metrics.json"))
    new = read_metrics(two_commits)
    diff = json.loads(dvc(two_commits, "metrics", "diff", "HEAD~1", "--json").stdout)["metrics.json"]
    for key in ("test.accuracy", "test.loss", "test.macro_f1", "model.best_epoch"):
        section, name = key.split(".")
        assert diff[key]["old"] == pytest.approx(old[section][name])
        assert diff[key]["new"] == pytest.approx(new[section][name])
    assert new["model"]["best_epoch"] <= FEW_EPOCHS < old["model"]["best_epoch"]
    # The table a user reads: one row per changed metric, old and new value side by side.
    table = dvc(two_commits, "metrics", "diff", "HEAD~1").stdout
    row = next(line.split() for line in table.splitlines() if line.startswith("metrics.json") and "best_epoch" in line)
    assert row[1:4] == ["model.best_epoch", str(old["model"]["best_epoch"]), str(new["model"]["best_epoch"])]


def test_params_diff_shows_exactly_the_changed_param(two_commits: Path) -> None:
    old = yaml.safe_load(committed(two_commits, "HEAD~1", "params.yaml"))["train"]["epochs"]
    diff = json.loads(dvc(two_commits, "params", "diff", "HEAD~1", "--json").stdout)
    assert diff == {"params.yaml": {"train.epochs": {"old": old, "new": FEW_EPOCHS, "diff": FEW_EPOCHS - old}}}
    table = dvc(two_commits, "params", "diff", "HEAD~1").stdout.splitlines()
    rows = [line.split() for line in table if line.startswith("params.yaml")]
    assert rows == [["params.yaml", "train.epochs", str(old), str(FEW_EPOCHS)]]


def test_plots_diff_overlays_both_commits_curves(two_commits: Path, tmp_path: Path) -> None:
    dvc(two_commits, "plots", "diff", "HEAD~1", "-o", str(tmp_path / "diff"))
    page = tmp_path / "diff" / "index.html"
    curves = report_specs(page)["Accuracy per epoch"]["data"]["values"]
    for rev, commit in (("HEAD~1", "HEAD~1"), ("workspace", "HEAD")):
        epochs = len(list(csv.DictReader(io.StringIO(committed(two_commits, commit, "reports/train_history.csv")))))
        assert len([row for row in curves if row["rev"] == rev]) == 2 * epochs  # accuracy and val_accuracy
    result = open_in_chromium(page, tmp_path / "profile", "--dump-dom")
    assert not [m for m in console_messages(result.stderr) if m.startswith("Uncaught")]
    assert {"Accuracy_per_epoch", "Loss_per_epoch"} <= drawn_charts(result.stdout)
