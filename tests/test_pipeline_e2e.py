"""End to end: real `dvc repro` in a temporary git + DVC repository made from this project."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import copy_repo, dvc, edit_params, ran_stages, read_metrics

pytestmark = pytest.mark.slow  # real dvc repro in copies of the project


def test_default_pipeline_reaches_accuracy_and_writes_every_output(digits_run: Path) -> None:
    metrics = read_metrics(digits_run)
    assert metrics["test"]["accuracy"] >= 0.95
    assert set(metrics["per_class"]) == {str(digit) for digit in range(10)}
    for output in (
        "models/model.keras",
        "models/summary.json",
        "reports/train_history.csv",
        "reports/confusion.csv",
        "reports/per_class.csv",
        "reports/misclassified.png",
    ):
        assert (digits_run / output).stat().st_size > 0, output


def test_second_repro_runs_nothing(digits_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    result = dvc(repo, "repro")
    assert ran_stages(result.stdout) == []
    assert dvc(repo, "status").stdout.strip().endswith("Data and pipelines are up to date.")


def test_evaluate_param_reruns_only_evaluate(digits_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    edit_params(repo, **{"evaluate.misclassified_max": 9})
    assert ran_stages(dvc(repo, "repro").stdout) == ["evaluate"]


def test_train_epochs_reruns_train_and_evaluate_only(digits_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    edit_params(repo, **{"train.epochs": 3, "export.formats": ["saved_model"]})  # one format: a shorter export
    assert ran_stages(dvc(repo, "repro").stdout) == ["train", "evaluate", "export"]
    assert read_metrics(repo)["model"]["best_epoch"] <= 3


def test_iris_tutorial_net_reaches_accuracy(project_repo: Path) -> None:
    result = dvc(
        project_repo, "exp", "run",
        "-S", "data.dataset=iris",
        "-S", "train.mlp.hidden_units=[50,40]",
        "-S", "train.batch_size=8",
        "-S", "train.learning_rate=0.01",
        "-S", "export.formats=[saved_model]",  # the exports' parity: tests/test_export.py, tests/test_serving.py
    )  # fmt: skip
    assert ran_stages(result.stdout) == ["download", "preprocess", "train", "evaluate", "export"]
    metrics = read_metrics(project_repo)
    assert metrics["test"]["accuracy"] >= 0.90
    assert set(metrics["per_class"]) == {"setosa", "versicolor", "virginica"}
