"""ROC/PR, top-k, calibration and temperature scaling, checked against hand-computed values and scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from pipeline import paths
from pipeline.calibration import (
    apply_temperature,
    brier_score,
    calibration_figures,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    read_temperature,
    reliability_bins,
)
from pipeline.errors import PipelineError
from pipeline.ranking import MAX_CURVE_POINTS, class_curves, macro, top_k_accuracy

# Four examples, three classes. Class 0's scores 0.9 (a 0), 0.4 (a 0), 0.62 (a 1), 0.1 (a 2): of its
# 2 x 2 (positive, negative) pairs, only (0.4, 0.62) is ranked wrongly, so its ROC-AUC is 3/4; ranked
# by score it reads hit, miss, hit, miss, so its average precision is 1/2 * 1 + 1/2 * 2/3 = 5/6.
PROBABILITIES = np.array([[0.9, 0.05, 0.05], [0.4, 0.5, 0.1], [0.62, 0.28, 0.1], [0.1, 0.2, 0.7]])
LABELS = np.array([0, 0, 1, 2])
NAMES = ["a", "b", "c"]


def test_auc_and_average_precision_by_hand_and_as_scikit_learn() -> None:
    scores, roc_rows, pr_rows = class_curves(PROBABILITIES, LABELS, NAMES)
    assert scores["a"] == {"roc_auc": 0.75, "average_precision": pytest.approx(5 / 6, abs=1e-10)}
    for k, name in enumerate(NAMES):
        truth = LABELS == k
        assert scores[name]["roc_auc"] == pytest.approx(roc_auc_score(truth, PROBABILITIES[:, k]), abs=1e-10)
        ap = average_precision_score(truth, PROBABILITIES[:, k])
        assert scores[name]["average_precision"] == pytest.approx(ap, abs=1e-10)
    assert macro(scores, "roc_auc") == pytest.approx(np.mean([row["roc_auc"] for row in scores.values()]))
    # Every curve starts at the origin of its chart and ends at its far corner.
    a_roc = [(row["false_positive_rate"], row["true_positive_rate"]) for row in roc_rows if row["class"] == "a"]
    assert a_roc[0] == (0.0, 0.0) and a_roc[-1] == (1.0, 1.0)
    assert {row["class"] for row in pr_rows} == set(NAMES)
    assert all(0.0 <= row["threshold"] <= 1.0 for row in roc_rows + pr_rows)


def test_binary_model_is_scored_for_its_positive_class_only() -> None:
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    labels = np.array([0, 1, 1, 1])
    scores, roc_rows, _ = class_curves(probabilities, labels, ["no", "yes"])
    assert list(scores) == ["yes"] and {row["class"] for row in roc_rows} == {"yes"}
    assert scores["yes"]["roc_auc"] == 1.0  # every "yes" scores above the one "no"


def test_a_class_absent_from_the_test_split_has_no_auc_and_is_left_out_of_the_macro() -> None:
    scores, _, _ = class_curves(PROBABILITIES[:2], LABELS[:2], NAMES)  # only class a
    assert scores["b"] == {"roc_auc": None, "average_precision": None}
    assert macro(scores, "roc_auc") is None


def test_curves_of_a_large_split_are_thinned_for_the_report() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=20_000)
    labels = rng.integers(0, 10, size=20_000)
    _, roc_rows, pr_rows = class_curves(probabilities, labels, [str(k) for k in range(10)])
    assert len(pr_rows) <= 10 * MAX_CURVE_POINTS and len(roc_rows) <= 10 * MAX_CURVE_POINTS


def test_top_k_accuracy_by_hand() -> None:
    # True class ranked: 1st, 2nd, 3rd, 1st.
    assert top_k_accuracy(PROBABILITIES, LABELS) == {"top_1": 0.5}  # k = 3 is not below 3 classes
    ten = np.tile(np.linspace(0.01, 0.1, 10), (4, 1))  # class 9 most probable, then 8, 7, ...
    ten /= ten.sum(axis=1, keepdims=True)
    assert top_k_accuracy(ten, np.array([9, 7, 5, 0])) == {"top_1": 0.25, "top_3": 0.5, "top_5": 0.75}


def test_ece_by_hand() -> None:
    # Confidences 0.9 (right), 0.5 (wrong), 0.62 (wrong), 0.7 (right), each alone in its 1/15-wide bin.
    assert expected_calibration_error(PROBABILITIES, LABELS) == pytest.approx((0.1 + 0.5 + 0.62 + 0.3) / 4)
    # Two examples in the bin (0.867, 0.933]: accuracy 1/2, mean confidence 0.905.
    two = np.array([[0.9, 0.1], [0.91, 0.09]])
    assert expected_calibration_error(two, np.array([0, 1])) == pytest.approx(0.405)
    assert reliability_bins(two, np.array([0, 1])) == [
        {"bin": 13, "lower": 0.8666666667, "upper": 0.9333333333, "count": 2, "confidence": 0.905, "accuracy": 0.5}
    ]


def test_ece_matches_scikit_learns_reliability_curve() -> None:
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.full(10, 0.3), size=5_000)
    labels = rng.integers(0, 10, size=5_000)
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    counts = np.histogram(confidence, bins=np.linspace(0, 1, 16))[0]
    expected = np.sum(counts[counts > 0] * np.abs(accuracy - mean_confidence)) / len(labels)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected, abs=1e-9)


def test_nll_and_brier_match_scikit_learn() -> None:
    assert negative_log_likelihood(PROBABILITIES, LABELS) == pytest.approx(log_loss(LABELS, PROBABILITIES))
    # Brier by hand for the first example: (0.9 - 1)^2 + 0.05^2 + 0.05^2 = 0.015.
    assert brier_score(PROBABILITIES[:1], LABELS[:1]) == pytest.approx(0.015)
    sklearn_brier = brier_score_loss(LABELS, PROBABILITIES, labels=[0, 1, 2], scale_by_half=False)
    assert brier_score(PROBABILITIES, LABELS) == pytest.approx(sklearn_brier)
    figures = calibration_figures(PROBABILITIES, LABELS)
    assert set(figures) == {"ece", "nll", "brier"} and all(len(repr(v)) <= 12 for v in figures.values())


def over_confident_model(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), reported as softmax(3 z): right as often, three times too sure."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(n, 10))
    honest = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(10, p=row) for row in honest])
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    return sharp.astype(np.float32), labels


def test_temperature_fitted_on_validation_undoes_over_confidence_and_keeps_top_1() -> None:
    val_p, val_y = over_confident_model(4_000, seed=2)
    test_p, test_y = over_confident_model(4_000, seed=3)
    temperature = fit_temperature(val_p, val_y)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert negative_log_likelihood(apply_temperature(val_p, temperature), val_y) < negative_log_likelihood(val_p, val_y)
    scaled = apply_temperature(test_p, temperature)
    np.testing.assert_array_equal(scaled.argmax(axis=1), test_p.argmax(axis=1))
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
    # On the held-out split too: the calibration error at least halves.
    assert expected_calibration_error(scaled, test_y) < expected_calibration_error(test_p, test_y) / 2


def test_temperature_one_changes_nothing_and_zeros_stay_finite() -> None:
    np.testing.assert_allclose(apply_temperature(PROBABILITIES, 1.0), PROBABILITIES)
    scaled = apply_temperature(np.array([[1.0, 0.0, 0.0]], dtype=np.float32), 2.0)
    assert np.all(np.isfinite(scaled)) and scaled.argmax() == 0


@pytest.mark.parametrize("text", [None, "garbage", "[]", '{"temperature": -1}', '{"temperature": true}'])
def test_a_missing_or_damaged_temperature_file_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    path = paths.TEMPERATURE
    if text is not None:
        path.parent.mkdir()
        path.write_text(text)
    with pytest.raises(PipelineError) as caught:
        read_temperature(path)
    message = str(caught.value)
    # The evaluate stage writes it, not train, whose models/ folder it sits in.
    assert message.startswith(str(path)) and "dvc repro" in message and "evaluate" in message, message
    assert "\n" not in message
