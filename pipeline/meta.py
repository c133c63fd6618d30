"""The record of what preprocess made (data/prepared/meta.json) and of an export (models/export/serving.json), typed.

Every stage after preprocess reads meta.json through `load_meta`, which checks it whole: a deleted,
garbled or hand-edited file is one sentence naming it and the stage to rerun, never a KeyError three
stages later. serving.json is the same record plus what a consumer needs to call an exported model
(`ServingDescription`), derived from it by `PreparedMeta.serving`; `load_meta` reads either, so predict
converts new inputs from an exported folder exactly as from data/prepared. Plain data in and out: this
module imports nothing of the pipeline but its leaves, so any module may depend on it.
Longer than most modules on purpose: every field of both records is declared and checked in this one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline import paths
from pipeline.errors import PipelineError

INPUT_NAME = "inputs"  # every export's input and output tensor (pipeline/export.py, serving_function)
OUTPUT_NAME = "probabilities"

PositiveInt = Annotated[int, Field(strict=True, gt=0)]
Count = Annotated[int, Field(strict=True, ge=0)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Name = Annotated[str, Field(strict=True, min_length=1)]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DivideScaling(Record):
    """Images: stored as their raw pixels, divided by `pixel_max` (255, or 16 for digits) when loaded."""

    method: Literal["divide"]
    pixel_max: PositiveFinite


class MinmaxScaling(Record):
    """Tables: (raw - min) / range per feature, fitted on the training split and applied before storing."""

    method: Literal["minmax"]
    min: tuple[Finite, ...]
    range: tuple[PositiveFinite, ...]


Scaling = Annotated[Union[DivideScaling, MinmaxScaling], Field(discriminator="method")]  # noqa: UP007 - pydantic


class ImageRecord(Record):
    """How image files become the model's pixels (`pipeline.images.Conversion.record`); predict converts new ones so.

    The size is the input shape's: no field of its own that could disagree with it.
    """

    color_mode: Literal["grayscale", "rgb"]
    resize: Literal["pillow-box"]  # pipeline/images.py's RESIZE_METHOD, the only one this version can do

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1


# A built-in dataset's images were published as pixels: image files given to its model are converted so.
DEFAULT_IMAGE_RECORD = ImageRecord(color_mode="grayscale", resize="pillow-box")


class TableRecord(Record):
    """Your CSV table's feature columns, in file order, each text column's values, each date column's features,
    and the value each column's missing cells get (`pipeline.columns`: predict converts new rows with it)."""

    columns: tuple[Name, ...]
    categories: dict[str, tuple[Name, ...]]
    dates: dict[str, tuple[Name, ...]] = {}  # date column -> its features (pipeline.columns.DATE_FEATURES)
    fill: dict[str, Union[Finite, str]] = {}  # noqa: UP007 - preprocess.missing=impute: column -> median or most frequent

    @property
    def width(self) -> int:
        """The model's input features: one per numeric column, one per value of a text column, per date feature."""
        return sum(
            len(self.categories[c]) if c in self.categories else len(self.dates[c]) if c in self.dates else 1
            for c in self.columns
        )


class PreparedMeta(Record):
    """data/prepared/meta.json: what the prepared splits hold and how new inputs become what the model takes."""

    dataset: Name
    kind: Literal["image", "tabular"]
    input_shape: tuple[PositiveInt, ...]  # one example: (H, W, 1) or (H, W, 3) images, (F,) features
    class_names: tuple[Name, ...] = Field(min_length=2)
    feature_names: tuple[str, ...] = ()
    scaling: Scaling
    image: ImageRecord | None = None  # image models: how image files are converted
    table: TableRecord | None = None  # your CSV table: its columns and text columns' values
    sizes: dict[Literal["train", "val", "test"], Count]
    test_split: str  # how each split was chosen, for a reader of the file
    val_split: str

    @model_validator(mode="after")
    def _consistent(self) -> PreparedMeta:
        problem = _inconsistency(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns a CSV row gives: your table's feature columns, or the built-in dataset's features."""
        return self.table.columns if self.table else self.feature_names

    @property
    def categories(self) -> Mapping[str, tuple[str, ...]]:
        return self.table.categories if self.table else {}

    def dump(self) -> dict[str, Any]:
        """As JSON data, absent records left out (a tabular meta.json has no `image`; a table without date
        columns or imputed values no `dates` or `fill`)."""
        data = self.model_dump(mode="json", exclude_none=True)
        if "table" in data:
            empty = {key for key in ("dates", "fill") if not data["table"][key]}
            data["table"] = {key: value for key, value in data["table"].items() if key not in empty}
        return data

    def serving(self, files: Mapping[str, str], temperature: float = 1.0) -> ServingDescription:
        """serving.json: this record plus the tensors, the scaling in words, the export's `files` by format and
        the temperature baked into them (1: none)."""
        return ServingDescription.model_validate(
            self.dump()
            | {
                "temperature": temperature,
                "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, *self.input_shape]},
                "output": {
                    "name": OUTPUT_NAME, "dtype": "float32", "shape": [None, len(self.class_names)],
                    "meaning": "softmax probabilities, one per class, in class_names order",
                },
                "scaling_text": scaling_text(self),
                "files": dict(files),
            }
        )  # fmt: skip


def _inconsistency(meta: PreparedMeta) -> str | None:  # noqa: PLR0911 - one early return per check
    """What makes the fields of `meta`, each valid alone, disagree with each other, or None."""
    shape, scaling, image = meta.input_shape, meta.scaling, meta.image
    if len(set(meta.class_names)) != len(meta.class_names):
        return "lists a class name twice"
    if meta.kind == "image":
        if len(shape) != 3 or shape[2] not in (1, 3):
            return f"gives input_shape {list(shape)} for image data (images: [H, W, 1] or [H, W, 3])"
        if not isinstance(scaling, DivideScaling):
            return f"gives image scaling method '{scaling.method}'; images need method 'divide' and a pixel_max"
        if image is None or meta.table is not None:
            return "needs an image record (color_mode, resize) and no table record for image data"
        if image.channels != shape[2]:
            return f"gives color_mode '{image.color_mode}' for images of input_shape {list(shape)}"
        return None
    if len(shape) != 1:
        return f"gives input_shape {list(shape)} for tabular data (tabular: [F])"
    if not isinstance(scaling, MinmaxScaling) or not len(scaling.min) == len(scaling.range) == shape[0]:
        shown = scaling.model_dump(mode="json")
        return f"gives tabular scaling {shown}; it needs method 'minmax' and {shape[0]} min and range"
    if len(meta.feature_names) not in (0, shape[0]):
        return f"lists feature names {list(meta.feature_names)} that do not match the input shape {list(shape)}"
    if image is not None or (meta.table is not None and meta.table.width != shape[0]):
        return f"gives an image record, or a table record of other than {shape[0]} features, for tabular data"
    return None


class Tensor(Record):
    name: Name
    dtype: Literal["float32"]
    shape: tuple[PositiveInt | None, ...]  # None: any batch size


class Output(Tensor):
    meaning: str


class ServingDescription(PreparedMeta):
    """serving.json: meta.json's record plus what calling an exported model takes (`PreparedMeta.serving`)."""

    input: Tensor
    output: Output
    scaling_text: str
    files: dict[str, Name]  # "keras", and each exported format: its file or folder in the export's folder
    # The temperature every format but model.keras has baked in (pipeline/calibration.py); predict applies it to
    # model.keras. 1 (the default, and what an export made before temperature scaling means): none.
    temperature: PositiveFinite = 1.0

    @model_validator(mode="after")
    def _tensors_match(self) -> ServingDescription:
        if self.input.shape != (None, *self.input_shape) or self.output.shape != (None, len(self.class_names)):
            raise ValueError(
                f"gives tensors of shape {list(self.input.shape)} and {list(self.output.shape)}, not the input_shape "
                f"{list(self.input_shape)} and {len(self.class_names)} classes it describes"
            )
        return self


SERVING_KEYS = frozenset(ServingDescription.model_fields) - frozenset(PreparedMeta.model_fields)


def scaling_text(meta: PreparedMeta) -> str:
    """The scaling, in words, for a consumer writing it in another language."""
    scaling, shape = meta.scaling, meta.input_shape
    if isinstance(scaling, DivideScaling) and meta.image is not None:
        (height, width, channels), most = shape, f"{scaling.pixel_max:g}"
        colour = "RGB images, channels last (red, green, blue)" if channels == 3 else "grayscale images"
        channel_axis = "" if channels == 3 else " and add a channel axis"
        converted = "RGB" if channels == 3 else "grayscale (ITU-R 601-2 luma)"
        return (
            f"{colour}, {height}x{width} pixels with raw values 0..{most}: divide each by {most}{channel_axis}, "
            f"giving float32 arrays of shape (N, {height}, {width}, {channels}); an image file is converted to "
            f"{converted} with transparency on white, resized to {width}x{height} by area averaging (Pillow's BOX "
            "filter, the aspect ratio not kept) and divided by 255"
        )
    table = meta.table
    steps = [
        "a missing cell given its column's value in table.fill" if table and table.fill else "",
        "each text column of table.columns one-hot encoded (1 for its value in table.categories, 0 for the others)"
        if meta.categories else "",
        "each ISO date column of table.dates as the numbers it lists (weekday: Monday 0; hour: since midnight)"
        if table and table.dates else "",
    ]  # fmt: skip
    encoded = "".join(f", {step}" for step in steps if step) + (" first" if any(steps) else "")
    return (
        f"one row of raw features per example, in feature_names order{encoded}: x = (raw - scaling.min) / "
        f"scaling.range, per feature, giving float32 arrays of shape (N, {shape[0]})"
    )


def load_meta(data: Any, where: Path | str) -> PreparedMeta:
    """meta.json's or serving.json's JSON data, checked: one sentence naming `where` and the stage to rerun."""
    kind = ServingDescription if isinstance(data, dict) and SERVING_KEYS & data.keys() else PreparedMeta
    try:
        return kind.model_validate(data)
    except ValidationError as err:
        raise PipelineError(f"{where} {_problem(err.errors()[0])}; {paths.rerun_hint(where)}") from None


def _problem(error: Any) -> str:
    """The first of pydantic's errors as the middle of a sentence: 'gives input_shape[0] -3: input should be ...'."""
    location = [part for part in error["loc"] if part not in ("divide", "minmax")]  # the union's tag
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        return f"lacks its {where}"
    if kind == "extra_forbidden":
        return f"has a key '{where}' that it does not know"
    if kind == "value_error":
        return str(error["ctx"]["error"]) if not where else f"gives {where}: {error['ctx']['error']}"
    if kind in ("model_type", "model_attributes_type") and not where:
        return "is not a JSON object"
    if kind.startswith("union_tag"):
        return f"gives {where} {_shown(error['input'])}, whose method is not 'divide' or 'minmax'"
    return f"gives {where} {_shown(error['input'])}: {message[0].lower()}{message[1:]}"


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# ----------------------------------------------------------------------------- a split's manifest.json

FileName = Annotated[str, Field(strict=True, pattern=r"^(x-\d{5}|y|source)\.npy$")]  # in the split's folder: no '..'
Sha256 = Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]


class StoredFile(Record):
    """One `.npy` file of a split: its name in the split's folder, rows, size and sha256 (pipeline/io/shards.py)."""

    file: FileName
    rows: PositiveInt
    bytes: PositiveInt
    sha256: Sha256


class StoredSplit(Record):
    """data/prepared/SPLIT/manifest.json: the split's examples in shards, in order, and its labels (int32 class
    indices) in one file (docs/data-on-disk.md)."""

    format: Literal[1]
    count: PositiveInt
    dtype: Literal["uint8", "float32"]  # images' pixels, tables' scaled features
    row_shape: tuple[PositiveInt, ...]  # one example as stored: (H, W) grayscale, (H, W, 3) RGB, (F,) features
    shards: tuple[StoredFile, ...] = Field(min_length=1)
    labels: StoredFile
    source: StoredFile | None = None  # where each example comes from (the test split's, for evaluate)

    @model_validator(mode="after")
    def _rows_add_up(self) -> StoredSplit:
        if sum(shard.rows for shard in self.shards) != self.count or self.labels.rows != self.count:
            raise ValueError(f"lists shards or labels whose rows do not add up to its count {self.count}")
        return self


def load_manifest(data: Any, where: Path | str) -> StoredSplit:
    """A split's manifest.json's JSON data, checked: one sentence naming `where` and the stage to rerun."""
    try:
        return StoredSplit.model_validate(data)
    except ValidationError as err:
        raise PipelineError(f"{where} {_problem(err.errors()[0])}; {paths.rerun_hint(where)}") from None
