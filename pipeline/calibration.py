"""Can the probabilities be trusted: calibration error, reliability bins, NLL, Brier score and temperature scaling.

Pure functions of arrays: `probabilities` is (N, K) softmax output, `labels` the N true class indices.
Every figure is a Python float rounded as `evaluation.ratio` rounds, so metrics.json reruns byte-identically.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T before the softmax. The models
here end in a softmax, so the logits are recovered as log(p), up to a constant per example that the
softmax cancels: softmax(log(p) / T). T > 1 softens over-confident probabilities, T < 1 sharpens
under-confident ones, and the ranking of the classes in every row, so top-1, never changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io.reading import read_json

ECE_BINS = 15  # Guo et al.'s choice, the one most papers report, so figures compare across them
# The smallest normal float32: softmax output can underflow to 0, whose log is -inf. Clipping there
# changes only probabilities already below any threshold anyone picks.
SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)
TEMPERATURE_BOUNDS = (0.05, 20.0)  # far outside what a trained classifier needs; keeps the search finite


def rounded(value: float) -> float:
    return round(float(value), 10)


def confidences(probabilities: np.ndarray) -> np.ndarray:
    return probabilities.max(axis=1)


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> list[dict]:
    """Per non-empty bin of confidence ((i-1)/M, i/M]: its range, examples, mean confidence and accuracy."""
    confidence = confidences(probabilities).astype(np.float64)
    correct = probabilities.argmax(axis=1) == labels
    # Bin i holds confidences in ((i-1)/M, i/M]; ceil puts exactly i/M in bin i, as the definition says.
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    confidence_sums = np.bincount(index, weights=confidence, minlength=n_bins)
    correct_sums = np.bincount(index, weights=correct, minlength=n_bins)
    return [
        {
            "bin": i,
            "lower": rounded(i / n_bins),
            "upper": rounded((i + 1) / n_bins),
            "count": int(counts[i]),
            "confidence": rounded(confidence_sums[i] / counts[i]),
            "accuracy": rounded(correct_sums[i] / counts[i]),
        }
        for i in range(n_bins)
        if counts[i]
    ]


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: sum over the equal-width confidence bins of (bin's share of examples) * |accuracy - mean confidence|."""
    if len(labels) == 0:
        return 0.0
    confidence = confidences(probabilities).astype(np.float64)
    correct = probabilities.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    gaps = np.bincount(index, weights=correct - confidence, minlength=n_bins)  # per bin: n_b * (acc_b - conf_b)
    return rounded(np.abs(gaps).sum() / len(labels))


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class), with scikit-learn's log_loss (probabilities clipped away from 0 there)."""
    from sklearn.metrics import log_loss

    # float64: for float32 input log_loss would clip at float32's epsilon (1e-7). Rows renormalised: float32
    # softmax rows sum to 1 within ~1e-7, which scikit-learn warns about on every call.
    rows = probabilities.astype(np.float64)
    rows /= rows.sum(axis=1, keepdims=True)
    return rounded(log_loss(labels, rows, labels=np.arange(probabilities.shape[1])))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean over examples of sum over classes (p_k - 1[k = true])^2: 0 is perfect, 2 the worst."""
    one_hot = np.eye(probabilities.shape[1])[labels]
    return rounded(np.mean(np.sum((probabilities.astype(np.float64) - one_hot) ** 2, axis=1)))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T), row by row, in float64; T = 1 gives `probabilities` back."""
    logits = np.log(np.maximum(probabilities.astype(np.float64), SMALLEST_PROBABILITY)) / temperature
    logits -= logits.max(axis=1, keepdims=True)  # exp of at most 0: no overflow
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def _nll(probabilities: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = apply_temperature(probabilities, temperature)
    return float(-np.mean(np.log(np.maximum(scaled[np.arange(len(labels)), labels], 1e-300))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T in TEMPERATURE_BOUNDS minimising the NLL of `labels` (the validation split's, never the test's).

    NLL is convex in 1/T, so a bounded scalar search on log T finds the one minimum. Rounded to 6
    significant digits: finer digits change no probability that matters and would make reruns noisy.
    """
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        return 1.0
    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    best = minimize_scalar(
        lambda log_t: _nll(probabilities, labels, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(f"{np.exp(best.x):.6g}")


def calibration_figures(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ECE, NLL and Brier score of one set of probabilities."""
    return {
        "ece": expected_calibration_error(probabilities, labels),
        "nll": negative_log_likelihood(probabilities, labels),
        "brier": brier_score(probabilities, labels),
    }


def temperature_scaling(
    val_probabilities: np.ndarray, val_labels: np.ndarray, probabilities: np.ndarray, labels: np.ndarray
) -> tuple[dict[str, object], np.ndarray]:
    """Fit T on the validation split; metrics.json's `calibration` section and the test probabilities scaled by T."""
    temperature = fit_temperature(val_probabilities, val_labels)
    scaled = apply_temperature(probabilities, temperature)
    section = {
        "ece_bins": ECE_BINS,
        "temperature": temperature,
        "val_nll": negative_log_likelihood(val_probabilities, val_labels),
        "val_nll_temperature_scaled": negative_log_likelihood(
            apply_temperature(val_probabilities, temperature), val_labels
        ),
        # Top-1 of the scaled probabilities, beside the ECE it buys: equal to test.accuracy by construction.
        "temperature_scaled": calibration_figures(scaled, labels)
        | {"top_1_accuracy": rounded(np.mean(scaled.argmax(axis=1) == labels)) if len(labels) else 0.0},
    }
    return section, scaled


def read_temperature(path: Path) -> float:
    """The temperature the evaluate stage wrote (models/temperature.json)."""
    if not path.is_file():
        raise PipelineError(
            f"{path} not found, but export.temperature is true; run the evaluate stage first (dvc repro evaluate), "
            "which fits it on the validation split."
        )
    record = read_json(path)
    temperature = record.get("temperature") if isinstance(record, dict) else None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < 1e6:
        raise PipelineError(f"{path} gives no positive temperature; rerun the evaluate stage: dvc repro -f evaluate.")
    return float(temperature)
