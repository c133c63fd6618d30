"""Pure functions of the predict stage: what the model takes (`InputSpec`, from meta.json), checks, ranked classes.

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
from pipeline.images import IMAGE_SUFFIXES, Conversion

ARRAY_SUFFIX = ".npy"
CSV_SUFFIX = ".csv"


@dataclass(frozen=True)
class InputSpec:
    """What the model was trained on, from the preprocessing description (meta.json)."""

    kind: str  # "image" or "tabular"
    input_shape: tuple[int, ...]  # one example: (H, W, 1) or (F,)
    class_names: tuple[str, ...]
    scaling: dict[str, Any]
    feature_names: tuple[str, ...] = ()
    image: dict[str, Any] | None = None  # how preprocess converted image files (your own folder); None: built-in
    table: dict[str, Any] | None = None  # your CSV table's columns and text columns' values (tables.Table.record)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> InputSpec:
        try:
            return cls(
                kind=meta["kind"],
                input_shape=tuple(meta["input_shape"]),
                class_names=tuple(meta["class_names"]),
                scaling=meta["scaling"],
                feature_names=tuple(meta.get("feature_names", ())),
                image=meta.get("image"),
                table=meta.get("table"),
            )
        except (KeyError, TypeError) as err:
            raise PipelineError(f"the preprocessing description lacks {err}; rerun preprocess (dvc repro).") from None

    @property
    def accepted(self) -> tuple[str, ...]:
        return (*IMAGE_SUFFIXES, ARRAY_SUFFIX) if self.kind == "image" else (CSV_SUFFIX, ARRAY_SUFFIX)

    def describe(self) -> str:
        if self.kind == "image":
            height, width = self.input_shape[:2]
            if self.conversion().color_mode == "rgb":
                return f"{height}x{width} RGB images (image files of any size, or .npy arrays ({height}, {width}, 3))"
            return f"{height}x{width} grayscale images (image files of any size, or .npy arrays ({height}, {width}))"
        if self.categories:
            values = self.categories
            named = [f"{c} (one of {', '.join(values[c])})" if c in values else c for c in self.columns]
            return f"rows of the columns {', '.join(named)}"
        return f"rows of {self.input_shape[0]} features ({', '.join(self.feature_names) or 'unnamed'})"

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns a CSV row gives: your table's feature columns, or the built-in dataset's features."""
        return tuple(self.table["columns"]) if self.table else self.feature_names

    @property
    def categories(self) -> dict[str, list[str]]:
        return self.table["categories"] if self.table else {}  # read per CSV row: no copy

    def conversion(self) -> Conversion:
        """How image files become this model's pixels: as preprocess converted the training images."""
        return Conversion.from_record(self.image or {}, self.input_shape)


@dataclass(frozen=True)
class Batch:
    """Scaled examples ready for the model, and a label per example saying where it came from."""

    labels: tuple[str, ...]
    x: np.ndarray


# ----------------------------------------------------------------------------- checks


def check_top_k(top_k: int, spec: InputSpec) -> None:
    """Refuse a K outside 1..classes, above the class count too, rather than cap it.

    Capping would print fewer classes than asked without an error, and a script reading exactly K
    entries per input would then misread them; the class count is known before any input is read,
    so the refusal costs nothing and says what to give instead.
    """
    n_classes = len(spec.class_names)
    if not 1 <= top_k <= n_classes:
        raise PipelineError(
            f"--top-k {top_k} is out of range: the model knows {n_classes} classes; give 1 to {n_classes}."
        )


def check_model_matches(model_input_shape: Sequence[int | None], n_outputs: int, spec: InputSpec) -> None:
    """The model and meta.json must come from the same run, or the scaling and class names are wrong."""
    if tuple(model_input_shape[1:]) != spec.input_shape or n_outputs != len(spec.class_names):
        raise PipelineError(
            f"the model takes {tuple(model_input_shape[1:])} and gives {n_outputs} classes, but meta.json describes "
            f"{spec.input_shape} and {len(spec.class_names)} classes; rerun the pipeline (dvc repro) so they match."
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
