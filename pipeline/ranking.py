"""How the classes trade off at other thresholds: one-vs-rest ROC and precision-recall curves, AUC, AP, top-k.

Pure functions of arrays, on scikit-learn's metrics: `probabilities` is (N, K), `labels` the N true class
indices. A binary model is scored for its positive class (the second of class_names) only, as a binary
classifier is; a model of more classes, for every class against the rest. Memory stays O(N * K): each
curve is computed for one class at a time and thinned to `MAX_CURVE_POINTS` for the report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.calibration import rounded

TOP_K = (1, 3, 5)
# Points kept per class and curve in reports/roc.csv and precision_recall.csv: enough to draw the
# curve smoothly at the report's size, few enough that 10 classes stay a small file and a quick chart.
MAX_CURVE_POINTS = 200


def scored_classes(class_names: Sequence[str]) -> list[int]:
    """The classes with their own curve: the positive class of a binary model, else every class."""
    return [1] if len(class_names) == 2 else list(range(len(class_names)))


def thinned(*columns: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> list[np.ndarray]:
    """Evenly spaced points of a curve, its two ends always kept."""
    n = len(columns[0])
    if n <= max_points:
        return list(columns)
    keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return [column[keep] for column in columns]


def class_curves(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> tuple[dict[str, dict[str, float | None]], list[dict], list[dict]]:
    """Per scored class: ROC-AUC and average precision (None where the test split has no example of it or
    only examples of it), and the ROC and precision-recall curve points with their thresholds."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    scores: dict[str, dict[str, float | None]] = {}
    roc_rows: list[dict] = []
    pr_rows: list[dict] = []
    for k in scored_classes(class_names):
        name, truth, score = class_names[k], labels == k, probabilities[:, k].astype(np.float64)
        if truth.all() or not truth.any():
            scores[name] = {"roc_auc": None, "average_precision": None}
            continue
        scores[name] = {
            "roc_auc": rounded(roc_auc_score(truth, score)),
            "average_precision": rounded(average_precision_score(truth, score)),
        }
        fpr, tpr, roc_thresholds = thinned(*roc_curve(truth, score))
        roc_rows += [
            {"class": name, "false_positive_rate": rounded(f), "true_positive_rate": rounded(t),
             "threshold": rounded(min(h, 1.0))}  # sklearn's first threshold is inf: "nothing is positive"
            for f, t, h in zip(fpr, tpr, roc_thresholds, strict=True)
        ]  # fmt: skip
        precision, recall, pr_thresholds = precision_recall_curve(truth, score)
        # The last point (recall 0, precision 1) has no threshold: it is the curve's end, drawn at 1.0.
        precision, recall, pr_thresholds = thinned(precision, recall, np.append(pr_thresholds, 1.0))
        pr_rows += [
            {"class": name, "recall": rounded(r), "precision": rounded(p), "threshold": rounded(h)}
            for p, r, h in zip(precision, recall, pr_thresholds, strict=True)
        ]
    return scores, roc_rows, pr_rows


def macro(scores: dict[str, dict[str, float | None]], key: str) -> float | None:
    """Unweighted mean over the classes that have the score; None when none has."""
    values = [row[key] for row in scores.values() if row[key] is not None]
    return rounded(sum(values) / len(values)) if values else None


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Share of examples whose true class is among the k most probable, for each k in TOP_K below K."""
    from sklearn.metrics import top_k_accuracy_score

    n_classes = probabilities.shape[1]
    classes = np.arange(n_classes)
    return {
        f"top_{k}": rounded(top_k_accuracy_score(labels, probabilities, k=k, labels=classes))
        if n_classes > 2
        else rounded(np.mean(probabilities.argmax(axis=1) == labels))  # sklearn's binary form takes one column
        for k in TOP_K
        if k == 1 or k < n_classes
    }
