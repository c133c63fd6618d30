"""Comparing runs: across commits (`dvc metrics/params/plots diff`) and experiments (`dvc exp`, `dvc queue`)."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
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


# ----------------------------------------------------------------------------- experiments


def experiments(repo: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` as {experiment name: {"state": ..., "params": ..., "metrics": ...}}."""
    table = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    found = {}
    for baseline in table:
        for experiment in baseline.get("experiments") or []:
            data = experiment["revs"][0]["data"]
            found[experiment["name"]] = {
                "state": (experiment["executor"] or {}).get("state"),  # None: run in the workspace
                "params": data["params"]["params.yaml"]["data"],
                "metrics": data["metrics"].get("metrics.json", {}).get("data"),  # None until it has run
            }
    return found


def assert_trained_as_asked(experiment: dict[str, Any], epochs: int) -> None:
    assert experiment["params"]["train"]["epochs"] == epochs
    metrics = experiment["metrics"]
    assert 1 <= metrics["model"]["best_epoch"] <= epochs
    assert 0.0 < metrics["test"]["accuracy"] <= 1.0
    assert set(metrics["per_class"]) == {str(digit) for digit in range(10)}


def wait_for_queue(repo: Path, timeout: float = 400) -> str:
    """Poll `dvc queue status` until nothing is queued or running; return the final status table."""
    deadline = time.monotonic() + timeout
    while True:
        status = dvc(repo, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")
        time.sleep(2)


def test_exp_run_and_queued_experiments_all_show_in_exp_show(digits_run: Path, tmp_path: Path) -> None:
    # One repository for both halves of the issue: an experiment run in the workspace, then two queued ones.
    repo = copy_repo(digits_run, tmp_path / "repo")
    result = dvc(repo, "exp", "run", "-n", "epochs-2", "-S", "train.epochs=2")
    assert ran_stages(result.stdout) == ["train", "evaluate", "export"]
    for epochs in (3, 4):
        dvc(repo, "exp", "run", "--queue", "-n", f"queued-{epochs}", "-S", f"train.epochs={epochs}")
    states = {name: row["state"] for name, row in experiments(repo).items()}
    assert states == {"epochs-2": None, "queued-3": "queued", "queued-4": "queued"}
    dvc(repo, "queue", "start")
    status = wait_for_queue(repo)
    assert status.count("Success") == 2, status
    found = experiments(repo)
    assert {name: row["state"] for name, row in found.items()} == {
        "epochs-2": None,
        "queued-3": "success",
        "queued-4": "success",
    }
    for name, epochs in (("epochs-2", 2), ("queued-3", 3), ("queued-4", 4)):
        assert_trained_as_asked(found[name], epochs)
    assert found["epochs-2"]["metrics"] != found["queued-4"]["metrics"]
    table = dvc(repo, "exp", "show", "--csv").stdout
    rows = {row["Experiment"] or row["rev"]: row for row in csv.DictReader(io.StringIO(table))}
    assert {"epochs-2", "queued-3", "queued-4"} <= set(rows)
