"""Pure array transforms of the preprocess stage: scale, split, one-hot. Arrays in, new arrays out.

Images are stored in data/prepared as their raw uint8 pixels and divided when read (`scale_pixels`, called per
batch by pipeline/prepared.py): a quarter of float32's bytes, and the division gives exactly the same float32
values (BENCHMARKS.md, section 4). Tabular features are few; they are stored already scaled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import PipelineError, counted
from pipeline.io.reading import read_json
from pipeline.meta import DEFAULT_IMAGE_RECORD, ImageRecord, PreparedMeta, load_meta

if TYPE_CHECKING:  # train and evaluate import this module; they need not depend on the dataset registry
    from pipeline.datasets import RawDataset


def scale_pixels(images: np.ndarray, pixel_max: float) -> np.ndarray:
    """Pixels to [0, 1] by the format's maximum (255, or 16 for digits), with a channel axis.

    Grayscale is stored (N, H, W) and gets its channel axis here: (N, H, W, 1); RGB is stored
    with its channels already, (N, H, W, 3), and keeps them.
    """
    scaled = images.astype(np.float32) / np.float32(pixel_max)
    return scaled[..., np.newaxis] if scaled.ndim == 3 else scaled


def stored_pixels(images: np.ndarray, what: str) -> np.ndarray:
    """`images` as uint8, refusing values a uint8 cannot hold exactly (fractions, negatives, above 255)."""
    if images.dtype == np.uint8:
        return images
    with np.errstate(invalid="ignore"):  # NaN and infinities fail the comparison below; no warning needed
        as_uint8 = images.astype(np.uint8)
    if not np.array_equal(as_uint8, images):
        raise PipelineError(
            f"{what}: image pixels must be whole numbers in 0..255 to be stored as uint8; "
            "convert the images to 8-bit before preprocessing."
        )
    return as_uint8


def fit_minmax(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature minimum and range of the training split (a constant feature gets range 1)."""
    low = features.min(axis=0)
    span = features.max(axis=0) - low
    return low, np.where(span > 0, span, 1.0)


def apply_minmax(features: np.ndarray, low: np.ndarray, span: np.ndarray) -> np.ndarray:
    # Validation/test values outside the training range land outside [0, 1] on purpose:
    # clipping would hide that the model sees something new.
    return ((features - low) / span).astype(np.float32)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    encoded = np.zeros((len(labels), n_classes), dtype=np.float32)
    encoded[np.arange(len(labels)), labels] = 1.0
    return encoded


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): `fraction` of each class held out, chosen with `seed`.

    Each class contributes round(fraction * its size) examples, so class
    proportions are the same on both sides (up to rounding). Both index arrays
    are sorted, so the split does not depend on anything but labels and seed.
    Written here rather than scikit-learn's train_test_split: its draws differ, and every published number
    of this pipeline (the tutorials' rows in BENCHMARKS.md) was measured on these splits.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_held = int(round(fraction * len(members)))
        held.append(rng.permutation(members)[:n_held])
    held_out = np.sort(np.concatenate(held))
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    if len(held_out) == 0 or len(kept) == 0:
        raise PipelineError(
            f"a fraction of {fraction} of {counted(len(labels), 'example')} leaves one side of the split empty; "
            "choose a fraction nearer 0.5."
        )
    return kept, held_out


def check_every_class_in_every_split(
    labels: dict[str, np.ndarray], class_names: tuple[str, ...], val_fraction: float, test_fraction: float
) -> None:
    """Each class must reach the training, validation and test splits, or its scores mean nothing."""
    for name, split_labels in labels.items():
        counts = np.bincount(split_labels, minlength=len(class_names))
        if counts.min() == 0:
            scarce = class_names[int(counts.argmin())]
            total = sum(int(np.sum(y == class_names.index(scarce))) for y in labels.values())
            raise PipelineError(
                f"class '{scarce}' has {counted(total, 'example')}: too few for preprocess.val_fraction="
                f"{val_fraction} and preprocess.test_fraction={test_fraction} to leave it one in the {name} split; "
                "add examples of it, or raise the fraction."
            )


def grouped_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out), every group wholly on one side: the first of round(1 / fraction) folds of
    scikit-learn's StratifiedGroupKFold, which keeps the class proportions as near equal as whole groups allow."""
    from sklearn.model_selection import StratifiedGroupKFold  # ~1 s to import: only grouped data pays it

    folds, n_groups = max(2, round(1 / fraction)), len(np.unique(groups))
    if n_groups < folds:
        raise PipelineError(
            f"{n_groups} groups cannot hold out a fraction of {fraction}, which takes at least {folds}; "
            "add groups, or choose a fraction nearer 0.5."
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed % 2**32)
    kept, held_out = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return np.sort(kept), np.sort(held_out)


def example_sources(raw: RawDataset) -> tuple[np.ndarray, np.ndarray | None]:
    """Where each example of the train and official test arrays comes from, for reports/misclassified.csv:
    an image file's path, a table's line, else its position in the dataset as published."""
    if raw.kind == "image_files":
        return raw.x_train[:, 0], None if raw.x_test is None else raw.x_test[:, 0]
    if raw.lines is not None:
        return np.char.add(f"{raw.origin} line ", raw.lines.astype(str)), None
    if raw.x_test is None:
        return np.char.add(f"{raw.name}[", np.char.add(np.arange(len(raw.x_train)).astype(str), "]")), None
    train, test = (np.char.add(f"{raw.name} {split}[", np.char.add(np.arange(len(x)).astype(str), "]"))
                   for split, x in (("train", raw.x_train), ("test", raw.x_test)))  # fmt: skip
    return train, test


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # images: uint8 pixels (N, H, W) as published; tabular: scaled float32 features; image files: rows
    y: np.ndarray  # one-hot, float32


@dataclass(frozen=True)
class LabelledSplits:
    """The train, val and test examples as the dataset holds them, with their integer labels, and how each was chosen.

    `x` holds pixels, features, or for image files (your own folder) their (N, 2) [path, sha256] rows, which
    the preprocess stage decodes (`decoding.decode_splits`) before `scale_splits`.
    """

    x: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    test_split: str
    val_split: str
    sources: dict[str, np.ndarray]  # where each example comes from (`example_sources`)


def split_dataset(raw: RawDataset, val_fraction: float, test_fraction: float, seed: int) -> LabelledSplits:
    """Train/val/test by the labels alone: nothing is decoded or scaled here.

    The official test split is kept where there is one; otherwise a stratified test split is held out
    first. Validation is always carved from training data.
    """
    sources, official_sources = example_sources(raw)
    groups = raw.groups if raw.groups is not None else np.zeros(len(raw.y_train), dtype=str)
    grouped = raw.groups is not None
    split = grouped_split if grouped else lambda y, _groups, fraction, seed: stratified_split(y, fraction, seed)
    how = "stratified by groups" if grouped else "stratified"
    if raw.x_test is not None and raw.y_test is not None and official_sources is not None:
        x_pool, y_pool, x_test, y_test = raw.x_train, raw.y_train, raw.x_test, raw.y_test
        pool_sources, pool_groups, test_sources = sources, groups, official_sources
        test_origin = "official"
    else:
        pool_idx, test_idx = split(raw.y_train, groups, test_fraction, seed)
        x_pool, y_pool, pool_sources, pool_groups = (a[pool_idx] for a in (raw.x_train, raw.y_train, sources, groups))
        x_test, y_test, test_sources = raw.x_train[test_idx], raw.y_train[test_idx], sources[test_idx]
        test_origin = f"{how} {test_fraction} of the data, seed {seed}"
    # A different stream than the test split's, so changing one fraction does not reshuffle the other.
    train_idx, val_idx = split(y_pool, pool_groups, val_fraction, seed + 1)
    labels = {"train": y_pool[train_idx], "val": y_pool[val_idx], "test": y_test}
    check_every_class_in_every_split(labels, raw.class_names, val_fraction, test_fraction)
    return LabelledSplits(
        x={"train": x_pool[train_idx], "val": x_pool[val_idx], "test": x_test},
        labels=labels,
        test_split=test_origin,
        val_split=f"{how} {val_fraction} of the training data, seed {seed + 1}",
        sources={"train": pool_sources[train_idx], "val": pool_sources[val_idx], "test": test_sources},
    )


def scale_splits(
    raw: RawDataset, labelled: LabelledSplits, image: ImageRecord | None = None, image_shape: tuple[int, ...] = ()
) -> tuple[dict[str, Split], PreparedMeta]:
    """The splits as stored (see the module docstring), one-hot, and the description later stages need.

    Scaling is fitted on the training split only. `image` is how image files became pixels
    (`images.Conversion.record`); a built-in dataset's images get predict's default, grayscale. Image files
    keep their [path, sha256] rows in `x`: the stage decodes them straight into the shards, to `image_shape`.
    """
    files = raw.kind == "image_files"
    if not files and any(x.dtype.kind not in "biuf" for x in labelled.x.values()):
        raise PipelineError(f"{raw.name}: the image files must be decoded before scaling; this is a bug in preprocess.")
    if raw.kind == "tabular":
        low, span = fit_minmax(labelled.x["train"])
        scaling: dict[str, Any] = {"method": "minmax", "min": low.tolist(), "range": span.tolist()}
        stored = {name: apply_minmax(x, low, span) for name, x in labelled.x.items()}
        input_shape = list(stored["train"].shape[1:])
    else:
        if raw.pixel_max is None:
            raise PipelineError(f"{raw.name}: image dataset without a pixel maximum; the registry entry is incomplete.")
        scaling = {"method": "divide", "pixel_max": raw.pixel_max}
        if files and not image_shape:
            raise PipelineError(f"{raw.name}: image files need their decoded shape; this is a bug in preprocess.")
        stored = dict(labelled.x) if files else {
            name: stored_pixels(x, f"{raw.name} {name} split") for name, x in labelled.x.items()
        }  # fmt: skip
        shape = list(image_shape) if files else list(stored["train"].shape[1:])
        input_shape = shape + [1] if len(shape) == 2 else shape  # scale_pixels adds a grayscale channel axis on load
        image = image or DEFAULT_IMAGE_RECORD
    n_classes = len(raw.class_names)
    splits = {name: Split(x, one_hot(labelled.labels[name], n_classes)) for name, x in stored.items()}
    meta = PreparedMeta.model_validate(
        {
            "dataset": raw.name,
            "kind": "tabular" if raw.kind == "tabular" else "image",
            "input_shape": input_shape,
            "class_names": list(raw.class_names),
            "feature_names": list(raw.feature_names),
            "scaling": scaling,
            "image": image,
            "table": raw.table,
            "sizes": {name: len(split.x) for name, split in splits.items()},
            "test_split": labelled.test_split,
            "val_split": labelled.val_split,
        }
    )
    return splits, meta


def prepare_splits(
    raw: RawDataset, val_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, Split], PreparedMeta]:
    """`split_dataset` then `scale_splits`, for a dataset held in memory (not image files, which decode between)."""
    return scale_splits(raw, split_dataset(raw, val_fraction, test_fraction, seed))


# ----------------------------------------------------------------------------- reading meta.json back


def read_meta(path: Path | str) -> PreparedMeta:
    """data/prepared/meta.json (or an export's serving.json), checked: a deleted, garbled or hand-edited one is
    one sentence naming it."""
    return load_meta(read_json(path), path)
