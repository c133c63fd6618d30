"""The quality gate, temperature scaling through export and predict, and promotion to a GTO stage (issue #30)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.quality import gate_failures, promotion_refusal
from tests.harness import (
    ENV,
    copy_repo,
    dvc,
    edit_params,
    git_commit,
    ran_stages,
    read_metrics,
    run,
    stage,
    tree_digest,
)

SPLIT = {"examples": 359, "sha256": "ab" * 32}


def metrics(accuracy: float, macro_f1: float, split: dict | None = None) -> dict:
    return {"test": {"accuracy": accuracy, "macro_f1": macro_f1, "ece": 0.02}, "test_split": split or SPLIT}


def test_gate_names_each_metric_its_value_and_threshold() -> None:
    test = metrics(0.9, 0.88)["test"]
    assert gate_failures(test, {}) == []
    assert gate_failures(test, {"min_accuracy": 0.9, "min_macro_f1": 0.8, "max_ece": 0.02}) == []  # on the bar
    assert gate_failures(test, {"min_accuracy": 0.95, "max_ece": 0.01}) == [
        "test accuracy 0.9 is below evaluate.gate.min_accuracy 0.95",
        "test expected calibration error 0.02 is above evaluate.gate.max_ece 0.01",
    ]


def test_promotion_rule_needs_the_same_split_and_no_worse_score() -> None:
    prod = metrics(0.95, 0.94)
    assert promotion_refusal(metrics(0.95, 0.94), prod, "v1 at prod") is None  # a tie: retraining may be promoted
    assert promotion_refusal(metrics(0.97, 0.96), prod, "v1 at prod") is None
    weaker = promotion_refusal(metrics(0.97, 0.93), prod, "v1 at prod")
    assert weaker is not None and "macro F1 0.93 is below the 0.94 of v1 at prod" in weaker
    other_split = promotion_refusal(metrics(0.99, 0.99, {"examples": 10, "sha256": "cd" * 32}), prod, "v1 at prod")
    assert other_split is not None and "another test split (359 examples" in other_split
    assert "does not record its test split" in promotion_refusal(metrics(0.99, 0.99), {"test": {}}, "v1")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


def test_evaluate_reports_curves_calibration_and_the_temperature(digits_run: Path) -> None:
    written = read_metrics(digits_run)
    assert set(written["test"]["top_k_accuracy"]) == {"top_1", "top_3", "top_5"}
    assert written["test"]["top_k_accuracy"]["top_1"] == written["test"]["accuracy"]
    assert 0.9 < written["test"]["roc_auc_macro"] <= 1.0 and 0.0 <= written["test"]["ece"] < 0.2
    calibration = written["calibration"]
    assert calibration["ece_bins"] == 15
    # The temperature minimises the validation NLL, so it can only lower it.
    assert calibration["val_nll_temperature_scaled"] <= calibration["val_nll"]
    assert calibration["temperature_scaled"]["top_1_accuracy"] == written["test"]["accuracy"]
    temperature = json.loads((digits_run / "models/temperature.json").read_text())
    assert temperature == {"temperature": calibration["temperature"], "fitted_on": "data/prepared (val split)"}
    assert (
        written["test_split"]["examples"]
        == json.loads((digits_run / "data/prepared/meta.json").read_text())["sizes"]["test"]
    )


def test_a_model_below_the_gate_fails_evaluate_and_leaves_the_previous_export(digits_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    before = tree_digest(repo / "models/export")
    edit_params(repo, **{"evaluate.gate.min_accuracy": 0.999, "evaluate.gate.min_macro_f1": 0.5})
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0
    assert ran_stages(result.stdout) == ["evaluate"]  # export depends on evaluate's outputs: it never starts
    (error,) = error_lines(result.stderr)
    accuracy = read_metrics(digits_run)["test"]["accuracy"]
    expected = f"test accuracy {accuracy:.6g} is below evaluate.gate.min_accuracy 0.999;"
    assert error.split(" ERROR ")[1].startswith("the model fails the quality gate: ") and expected in error
    assert "macro F1" not in error  # the threshold it clears is not named
    # The user can see why: metrics.json and the report's files are written.
    assert read_metrics(repo)["test"]["accuracy"] == accuracy
    assert (repo / "reports/reliability.csv").is_file() and (repo / "models/temperature.json").is_file()
    assert tree_digest(repo / "models/export") == before


def predict_json(repo: Path, model: str, example: Path) -> np.ndarray:
    result = stage(repo, "predict", "--json", "--top-k", "10", "--model", model, str(example), check=True)
    (record,) = json.loads(result.stdout)
    by_class = {p["class"]: p["probability"] for p in record["predictions"]}
    return np.array([by_class[str(k)] for k in range(10)])


def test_exports_with_temperature_keep_parity_and_predict_agrees_in_every_format(
    digits_run: Path, tmp_path: Path
) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    example = tmp_path / "digit.npy"
    np.save(example, np.load(repo / "data/raw/digits.npz")["x"][3])
    plain = predict_json(repo, "models/model.keras", example)
    edit_params(repo, **{"export.temperature": True})
    assert ran_stages(dvc(repo, "repro").stdout) == ["export"]  # the temperature was fitted already
    temperature = json.loads((repo / "models/temperature.json").read_text())["temperature"]
    assert temperature != 1.0
    serving = json.loads((repo / "models/export/serving.json").read_text())
    parity = json.loads((repo / "reports/export_parity.json").read_text())
    assert serving["temperature"] == parity["temperature"] == temperature
    for name in ("saved_model", "tflite", "onnx"):
        assert parity[name]["max_abs_diff"] <= parity["tolerance"] and parity[name]["top1_mismatches"] == 0
    scaled = predict_json(repo, "models/model.keras", example)
    assert scaled.argmax() == plain.argmax() and not np.allclose(scaled, plain, atol=1e-4)
    for model in ("models/export/model.keras", "models/export/model.onnx"):  # tflite: its parity above
        np.testing.assert_allclose(predict_json(repo, model, example), scaled, atol=1e-5)


# ----------------------------------------------------------------------------- promotion


def gto(repo: Path, *args: str) -> str:
    return run([str(Path(sys.executable).parent / "gto"), *args], repo).stdout.strip()


def commit_metrics(repo: Path, message: str, **test: float) -> None:
    """Stands in for a retrained model: only metrics.json is read by promote, so only it is changed."""
    written = read_metrics(repo)
    written["test"] |= test
    (repo / "metrics.json").write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
    git_commit(repo, message)


def promote(repo: Path, *args: str):
    return stage(repo, "promote", *args, env=ENV)


def test_promote_refuses_a_weaker_model_and_accepts_a_better_one(digits_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    first = promote(repo)
    assert first.returncode == 0, first.stderr
    assert "the first model for prod" in first.stderr and "classifier@v0.0.1" in first.stderr
    assert gto(repo, "show", "classifier#prod", "--ref") == "classifier@v0.0.1"
    prod = read_metrics(repo)["test"]

    commit_metrics(repo, "a weaker model", accuracy=0.5)
    assert promote(repo, "--dry-run").returncode == 1
    weaker = promote(repo)
    assert weaker.returncode == 1
    (error,) = error_lines(weaker.stderr)
    assert f"test accuracy 0.5 is below the {prod['accuracy']:.6g} of classifier@v0.0.1 at prod" in error
    assert gto(repo, "show", "classifier#prod", "--ref") == "classifier@v0.0.1"
    assert "classifier@v0.0.2" not in run(["git", "tag"], repo).stdout  # nothing registered

    commit_metrics(repo, "a better model", accuracy=1.0, macro_f1=1.0)
    better = promote(repo)
    assert better.returncode == 0, better.stderr
    assert f"test accuracy 1 against {prod['accuracy']:.6g}" in better.stderr
    assert gto(repo, "show", "classifier#prod", "--ref") == "classifier@v0.0.2"

    # The gate holds at promotion too, whatever the model at prod: a bar raised above this model stops it.
    commit_metrics(repo, "as good, but the bar is raised", accuracy=1.0, macro_f1=1.0, ece=0.3)
    edit_params(repo, **{"evaluate.gate.max_ece": 0.1})
    git_commit(repo, "raise the bar")
    gated = promote(repo)
    assert gated.returncode == 1
    assert "fails the quality gate: test expected calibration error 0.3 is above evaluate.gate.max_ece 0.1" in (
        gated.stderr
    )
    assert gto(repo, "show", "classifier#prod", "--ref") == "classifier@v0.0.2"


@pytest.mark.parametrize("change", ["uncommitted", "other split"])
def test_promote_refuses_what_it_cannot_compare(digits_run: Path, tmp_path: Path, change: str) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    assert promote(repo).returncode == 0
    written = read_metrics(repo)
    written["test"]["accuracy"] = 1.0
    if change == "other split":
        written["test_split"]["sha256"] = "0" * 64
    (repo / "metrics.json").write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
    if change == "other split":
        git_commit(repo, "a model of another split")
    result = promote(repo)
    assert result.returncode == 1
    expected = "commit the run first" if change == "uncommitted" else "measured on another test split"
    (error,) = error_lines(result.stderr)
    assert expected in error
