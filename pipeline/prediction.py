"""Pure functions of the predict stage: what the model takes (from meta.json's `PreparedMeta`), checks, ranked classes.

Nothing here imports TensorFlow: every input is read (`pipeline.inputs`) and checked against the
preprocessing description (`data/prepared/meta.json`) before the model loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.images import IMAGE_SUFFIXES
from pipeline.meta import PreparedMeta

ARRAY_SUFFIX = ".npy"
CSV_SUFFIX = ".csv"


def accepted(meta: PreparedMeta) -> tuple[str, ...]:
    """The file suffixes the model described by `meta` takes."""
    return (*IMAGE_SUFFIXES, ARRAY_SUFFIX) if meta.kind == "image" else (CSV_SUFFIX, ARRAY_SUFFIX)


def describe_inputs(meta: PreparedMeta) -> str:
    """What the model takes, in words, for an error about an input it does not take."""
    if meta.kind == "image":
        height, width, channels = meta.input_shape
        if channels == 3:
            return f"{height}x{width} RGB images (image files of any size, or .npy arrays ({height}, {width}, 3))"
        return f"{height}x{width} grayscale images (image files of any size, or .npy arrays ({height}, {width}))"
    if meta.categories:
        values = meta.categories
        named = [f"{c} (one of {', '.join(values[c])})" if c in values else c for c in meta.columns]
        return f"rows of the columns {', '.join(named)}"
    return f"rows of {meta.input_shape[0]} features ({', '.join(meta.feature_names) or 'unnamed'})"


@dataclass(frozen=True)
class Batch:
    """Scaled examples ready for the model, and a label per example saying where it came from."""

    labels: tuple[str, ...]
    x: np.ndarray


# ----------------------------------------------------------------------------- checks


def check_top_k(top_k: int, meta: PreparedMeta) -> None:
    """Refuse a K outside 1..classes, above the class count too, rather than cap it.

    Capping would print fewer classes than asked without an error, and a script reading exactly K
    entries per input would then misread them; the class count is known before any input is read,
    so the refusal costs nothing and says what to give instead.
    """
    n_classes = len(meta.class_names)
    if not 1 <= top_k <= n_classes:
        raise PipelineError(
            f"--top-k {top_k} is out of range: the model knows {n_classes} classes; give 1 to {n_classes}."
        )


def check_model_matches(model_input_shape: Sequence[int | None], n_outputs: int, meta: PreparedMeta) -> None:
    """The model and meta.json must come from the same run, or the scaling and class names are wrong."""
    if tuple(model_input_shape[1:]) != meta.input_shape or n_outputs != len(meta.class_names):
        raise PipelineError(
            f"the model takes {tuple(model_input_shape[1:])} and gives {n_outputs} classes, but meta.json describes "
            f"{meta.input_shape} and {len(meta.class_names)} classes; rerun the pipeline (dvc repro) so they match."
        )


def check_probabilities(probabilities: np.ndarray, model_path: Path) -> None:
    """A damaged model can give NaN: refuse it rather than print it (NaN is not even valid JSON)."""
    if not np.all(np.isfinite(probabilities)):
        raise PipelineError(
            f"{model_path} gave NaN or infinite probabilities; the model is damaged: rerun dvc repro -f train."
        )


# ----------------------------------------------------------------------------- results


def top_classes(probabilities: np.ndarray, class_names: Sequence[str], top_k: int) -> list[list[tuple[str, float]]]:
    """Per example, the `top_k` (class name, probability) pairs, most probable first."""
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    return [[(class_names[j], float(row[j])) for j in order] for row, order in zip(probabilities, ranked, strict=True)]


def format_text(labels: Sequence[str], ranked: Sequence[Sequence[tuple[str, float]]]) -> str:
    """One line per input: `label: class (probability), class (probability), ...`."""
    lines = [
        f"{label}: " + ", ".join(f"{name} ({probability:.4f})" for name, probability in classes)
        for label, classes in zip(labels, ranked, strict=True)
    ]
    return "\n".join(lines) + "\n"


def as_records(labels: Sequence[str], ranked: Sequence[Sequence[tuple[str, float]]]) -> list[dict[str, Any]]:
    """The `--json` form: [{"input": ..., "predictions": [{"class": ..., "probability": ...}, ...]}, ...]."""
    return [
        {"input": label, "predictions": [{"class": name, "probability": p} for name, p in classes]}
        for label, classes in zip(labels, ranked, strict=True)
    ]


def csv_rows(labels: Sequence[str], ranked: Sequence[Sequence[tuple[str, float]]]) -> list[dict[str, Any]]:
    """The `--output` form: per input, `input`, then `class_1`, `probability_1`, ... `class_K`, `probability_K`."""
    return [
        {"input": label}
        | {
            key: value
            for rank, (name, p) in enumerate(classes, 1)
            for key, value in ((f"class_{rank}", name), (f"probability_{rank}", p))
        }  # fmt: skip
        for label, classes in zip(labels, ranked, strict=True)
    ]
