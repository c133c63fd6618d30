"""Read `params.yaml`, check every section of it, and hand the stage its own as a frozen, typed object.

Each stage calls `load_params(SectionClass)`. A typo, a wrong type or a value out of range anywhere in the
file raises `PipelineError` with one sentence naming the key, the value given and what is allowed, before
the stage touches any file. The sections are pydantic models; `_sentence` words pydantic's error.
Longer than most modules on purpose: every key of params.yaml is declared here, in one place.
"""

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from pipeline import paths
from pipeline.errors import PipelineError

# The one list of each kind of name: pipeline/datasets.py (REGISTRY), pipeline/export.py (FORMATS) and
# pipeline/models.py (MODEL_BUILDERS) key their tables by these, and tests check that they match. The
# names live here, not there, so that the stages do not import the dataset readers or TensorFlow to check
# a param (each import would be a code dep of every stage in dvc.yaml).
DATASETS = ("digits", "iris", "mnist", "fashion_mnist", "image_folder", "csv")
EXPORT_FORMATS = ("saved_model", "tflite", "onnx")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "silu", "leaky_relu")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adadelta", "adagrad", "adamax", "nadam", "ftrl", "adamw")
# The optimizers that take Adam's two moment decays (train.beta_1, train.beta_2); the others have no betas.
ADAM_FAMILY = ("adam", "adamw", "adamax", "nadam")
LR_SCHEDULES = ("constant", "cosine", "one_cycle")
LOSSES = ("categorical_crossentropy", "categorical_focal_crossentropy", "kl_divergence", "mean_squared_error",
          "categorical_hinge")  # fmt: skip

# Keys that decide how fast the train stage runs, how its processes find each other, or how often it saves its
# resume state, but never the model it trains (steps_per_execution only groups the same steps into fewer backend
# calls: bit-identical weights for any value, tests/test_training.py, on TensorFlow and JAX, with XLA and without).
# They are deliberately not in the train stage's `params:` in dvc.yaml, nor in the resume fingerprint, so that
# changing only them retrains nothing (tests/test_dvc_yaml.py checks it with DVC, tests/test_training.py the
# fingerprint); `dvc params diff` and `dvc exp show` still show them, as they show every key of params.yaml.
EXECUTION_ONLY = (
    "train.steps_per_execution",
    "train.feed",
    "train.checkpoint_minutes",
    "train.distributed.launcher",
    "train.distributed.coordinator",
    "train.distributed.join_timeout",
)


def _check(test: Any) -> AfterValidator:
    """A rule no type states; the message comes from the field's description (see `_allowed`)."""

    def rule(value: Any) -> Any:
        if not test(value):
            raise ValueError("refused")
        return value

    return AfterValidator(rule)


# YAML has no tuples: a list is taken where the stages keep an immutable tuple.
_LIST = BeforeValidator(lambda value: tuple(value) if isinstance(value, list) else value)
# An empty value in YAML (`source:`) is None: for these keys it means "none".
_NONE_IS_EMPTY = BeforeValidator(lambda value: "" if value is None else value)
Text = Annotated[str, _NONE_IS_EMPTY, Field(description='a string (use "" for none)')]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class Section(BaseModel):
    # strict: YAML's `true` is not the number 1, nor "5" the integer 5; an int is still taken for a float.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
    SECTION: ClassVar[str]


class DataParams(Section):
    SECTION = "data"
    dataset: Literal[DATASETS]
    source: Text
    checksums: Annotated[
        dict[str, str],
        BeforeValidator(lambda value: {} if value is None else value),
        _check(lambda mapping: all(re.fullmatch("[0-9a-fA-F]{64}", digest) for digest in mapping.values())),
        Field(description="a mapping of file name to a 64-character hex sha256 ({} for the published checksums)"),
    ]
    label_column: Text
    drop_columns: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...],
        _LIST,
        _check(lambda names: len(set(names)) == len(names)),
        Field(description="a list of distinct column names ([] for none), e.g. [id, name]"),
    ]
    feature_columns: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...],
        _LIST,
        _check(lambda names: len(set(names)) == len(names)),
        Field(description="a list of distinct column names ([] for every column), e.g. [bill_length_mm, island]"),
    ]
    group_column: Text
    group_by_name: bool


class PreprocessParams(Section):
    SECTION = "preprocess"
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    seed: Seed
    image_size: Annotated[
        tuple[Annotated[int, Field(ge=1, le=4096)], ...],
        _LIST,
        _check(lambda sides: len(sides) in (0, 2)),
        Field(description="[] (each image's own size) or [height, width], two integers from 1 to 4096, e.g. [64, 64]"),
    ]
    color_mode: Literal["grayscale", "rgb"]
    memory_limit_mb: Annotated[int, Field(ge=0)]
    shard_mb: Annotated[float, Field(gt=0.0, le=1_000_000)]
    missing: Literal["refuse", "drop_rows", "impute"]


class MlpParams(Section):
    hidden_units: Annotated[tuple[Annotated[int, Field(ge=1)], ...], _LIST, Field(description="a list of integers ≥ 1")]
    activation: Literal[ACTIVATIONS]
    dropout: Dropout


class CnnParams(Section):
    filters: Annotated[
        tuple[Annotated[int, Field(ge=1)], ...],
        _LIST,
        Field(min_length=1, description="a list of at least 1 integers ≥ 1"),
    ]
    kernel_size: Annotated[int, Field(ge=1, le=15)]
    pool_size: Annotated[int, Field(ge=1, le=8)]
    pool_after_each_conv: bool
    batch_norm: bool
    dense_units: Annotated[int, Field(ge=1)]
    conv_dropout: Dropout
    dense_dropout: Dropout


class FastCnnParams(Section):
    """The architecture of `train.model: fast_cnn` and the training recipe it was measured with.

    Why the recipe lives here and not in train.batch_size, train.epochs, ...: those keep the tutorials' values, which
    the seed recipes and the default digits run depend on, while a user who types `-S train.model=fast_cnn` expects
    the fast recipe whole (BENCHMARKS.md, section 2d). So when train.model is fast_cnn, RECIPE_KEYS below are read
    from here instead of from train (`TrainParams.effective`), and the train stage logs it in one line.
    """

    filters: Annotated[
        tuple[Annotated[int, Field(ge=1)], ...],
        _LIST,
        Field(min_length=1, description="a list of at least 1 integers ≥ 1"),
    ]
    kernel_sizes: Annotated[
        tuple[Annotated[int, Field(ge=1, le=15)], ...],
        _LIST,
        Field(min_length=1, description="a list of integers from 1 to 15, one per filter count"),
    ]
    convs_per_pool: Annotated[
        tuple[Annotated[int, Field(ge=1, le=8)], ...],
        _LIST,
        Field(min_length=1, description="a list of integers from 1 to 8, one per filter count"),
    ]
    pool_size: Annotated[int, Field(ge=1, le=8)]
    batch_norm: bool
    conv_dropout: Dropout
    global_pool: bool
    dense_units: Annotated[int, Field(ge=0)]
    dropout: Dropout
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)]
    epochs: Annotated[int, Field(ge=1, le=100_000)]
    optimizer: Literal[OPTIMIZERS]
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)]
    lr_schedule: Literal[LR_SCHEDULES]
    beta_1: Annotated[float, Field(ge=0.0, lt=1.0)]
    beta_2: Annotated[float, Field(ge=0.0, lt=1.0)]

    @model_validator(mode="after")
    def one_kernel_and_count_per_block(self) -> "FastCnnParams":
        for key, what in (("kernel_sizes", "kernel size"), ("convs_per_pool", "convolution count")):
            if len(getattr(self, key)) != len(self.filters):
                raise _combination(
                    f"'train.fast_cnn.{key}' has {len(getattr(self, key))} values for {len(self.filters)} "
                    f"filter counts ('train.fast_cnn.filters'); give one {what} per filter count."
                )
        return self


# The keys of train that train.fast_cnn holds its own values of (see FastCnnParams).
RECIPE_KEYS = ("batch_size", "epochs", "optimizer", "learning_rate", "lr_schedule", "beta_1", "beta_2")


class AugmentParams(Section):
    """Random changes to each training image, drawn from (seed, epoch, example): pipeline/augment.py."""

    flip: Literal["none", "horizontal"]
    rotation_degrees: Annotated[float, Field(ge=0.0, le=180.0)]
    translation: Annotated[float, Field(ge=0.0, le=0.5)]
    zoom: Annotated[float, Field(ge=0.0, lt=1.0)]
    contrast: Annotated[float, Field(ge=0.0, lt=1.0)]

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any((self.rotation_degrees, self.translation, self.zoom, self.contrast))


# The model names of `train.model`, each with its own section of sizes (train.mlp, train.cnn): the one list of
# models. pipeline.models keys its builders by these sections (TensorFlow is not imported here).
ARCHITECTURES: dict[str, type[Section]] = {"mlp": MlpParams, "cnn": CnnParams, "fast_cnn": FastCnnParams}
# The pretrained backbones of Keras Applications `train.model` also names, all set by one section, train.backbone
# (pipeline/backbones.py keys its constructors by these names; docs/backbones.md).
BACKBONES = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnetv2_b0")
MODELS = tuple(ARCHITECTURES) + BACKBONES
# A weights file of train.backbone.weights must live in this folder: the train stage's dependency in dvc.yaml.
BACKBONE_WEIGHTS_DIR = f"{paths.BACKBONE_WEIGHTS_DIR}/"


def _is_weights_choice(text: str) -> bool:
    return text in ("imagenet", "none") or (
        text.startswith(BACKBONE_WEIGHTS_DIR) and text.endswith(".h5") and ".." not in Path(text).parts
    )


class BackboneParams(Section):
    """The pretrained backbones (train.model mobilenet_v3_small, mobilenet_v3_large, efficientnetv2_b0): their start and
    the two phases they train in, the head alone over the frozen backbone, then the top layers fine-tuned too."""

    weights: Annotated[
        str,
        _check(_is_weights_choice),
        Field(description=f"imagenet, none, or a .h5 weights file under {BACKBONE_WEIGHTS_DIR}, e.g. "
                          f"{BACKBONE_WEIGHTS_DIR}shapes.weights.h5"),
    ]  # fmt: skip
    frozen_epochs: Annotated[int, Field(ge=0, le=100_000)]
    unfreeze: Annotated[
        Literal["all"] | Annotated[int, Field(ge=1)],
        Field(description="all, or the number (an integer ≥ 1) of the backbone's top layers to fine-tune"),
    ]
    fine_tune_learning_rate: Annotated[float, Field(gt=0.0, le=10.0)]
    dropout: Dropout


def _is_host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


class DistributedParams(Section):
    engine: Literal["none", "jax"]
    processes: Annotated[int, Field(ge=1, le=4096)]
    launcher: Literal["local", "external"]
    coordinator: Annotated[
        str,
        _NONE_IS_EMPTY,
        _check(lambda text: not text or _is_host_port(text)),
        Field(description='HOST:PORT with a port from 1 to 65535, e.g. "10.0.0.5:12355" ("" = detect it)'),
    ]
    join_timeout: Annotated[int, Field(ge=1, le=3600)]


def _combination(sentence: str) -> PydanticCustomError:
    """A refusal of two keys together: `_sentence` passes its words through as they are."""
    return PydanticCustomError("combination", "{sentence}", {"sentence": sentence})


class TrainParams(Section):
    SECTION = "train"
    model: Literal[MODELS]
    mlp: MlpParams
    cnn: CnnParams
    fast_cnn: FastCnnParams
    backbone: BackboneParams
    optimizer: Literal[OPTIMIZERS]
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)]
    lr_schedule: Literal[LR_SCHEDULES]
    warmup_fraction: Annotated[float, Field(ge=0.0, lt=1.0)]
    beta_1: Annotated[float, Field(ge=0.0, lt=1.0)]
    beta_2: Annotated[float, Field(ge=0.0, lt=1.0)]
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)]
    loss: Literal[LOSSES]
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)]
    augment: AugmentParams
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)]
    epochs: Annotated[int, Field(ge=1, le=100_000)]
    early_stopping_patience: Annotated[int, Field(ge=0)]
    seed: Seed
    jit_compile: bool
    steps_per_execution: Annotated[int, Field(ge=1, le=100_000)]
    feed: Literal["auto", "memory", "stream"]
    checkpoint_minutes: Annotated[float, Field(ge=0.0, le=10_080.0)]
    onednn: bool
    precision: Literal["float32", "mixed_bfloat16"]
    distributed: DistributedParams
    class_weight: Literal["none", "balanced"]

    @model_validator(mode="after")
    def processes_fit_the_batch(self) -> "TrainParams":
        """The checks no single key's type can make: `train.distributed` against the rest of `train`."""
        dist = self.distributed
        if dist.engine == "none" and dist.processes != 1:
            raise _combination(
                f"'train.distributed.processes' is {dist.processes}, but engine 'none' trains in one process; "
                "set 'train.distributed.engine' to jax, or processes to 1."
            )
        batch_size = self.effective().batch_size
        if batch_size % dist.processes:
            where = "train.fast_cnn.batch_size" if self.model == "fast_cnn" else "train.batch_size"
            raise _combination(
                f"'{where}' is {batch_size}, which {dist.processes} processes cannot split evenly "
                f"('train.distributed.processes'); use a batch size that is a multiple of {dist.processes}."
            )
        if self.label_smoothing and self.loss not in ("categorical_crossentropy", "categorical_focal_crossentropy"):
            raise _combination(
                f"'train.label_smoothing' is {self.label_smoothing}, but loss '{self.loss}' takes no label smoothing; "
                "use categorical_crossentropy or categorical_focal_crossentropy, or set label_smoothing to 0."
            )
        self._check_backbone()
        recipe = self.effective()
        if (recipe.beta_1, recipe.beta_2) != (0.9, 0.999) and recipe.optimizer not in ADAM_FAMILY:
            where = "train.fast_cnn" if self.model == "fast_cnn" else "train"
            raise _combination(
                f"'{where}.beta_1' and 'beta_2' are {recipe.beta_1} and {recipe.beta_2}, but optimizer "
                f"'{recipe.optimizer}' has no betas; use one of {', '.join(ADAM_FAMILY)}, or betas 0.9 and 0.999."
            )
        return self

    def _check_backbone(self) -> None:
        backbone = self.backbone
        if self.model not in BACKBONES:
            return
        if self.distributed.engine != "none":
            raise _combination(
                f"train.model={self.model} trains in one process only: its two phases recompile the model, which "
                "Keras's DataParallel does not follow, and convnets run slower on JAX's CPU backend; set "
                "'train.distributed.engine' to none (docs/backbones.md)."
            )
        if backbone.frozen_epochs > self.epochs:
            raise _combination(
                f"'train.backbone.frozen_epochs' is {backbone.frozen_epochs}, more than the {self.epochs} epochs of "
                "the run ('train.epochs' counts both phases); make frozen_epochs at most train.epochs."
            )
        if backbone.weights == "none" and backbone.frozen_epochs:
            raise _combination(
                f"'train.backbone.frozen_epochs' is {backbone.frozen_epochs}, but weights 'none' start from random "
                "weights, which freezing would keep random; set train.backbone.frozen_epochs to 0."
            )

    def effective(self) -> "TrainParams":
        """The params training runs with: for fast_cnn, its own recipe's RECIPE_KEYS replace train's (FastCnnParams)."""
        if self.model != "fast_cnn":
            return self
        return self.model_copy(update={key: getattr(self.fast_cnn, key) for key in RECIPE_KEYS})


# A threshold of the quality gate: a share in [0, 1], or null (YAML's `null` or an empty value) for none.
Threshold = Annotated[
    Annotated[float, Field(ge=0.0, le=1.0)] | None,
    Field(description="a number from 0 to 1, or null for no threshold"),
]


class GateParams(Section):
    """The bar a model must clear on the test split before it may be exported or promoted (docs/quality-gate.md)."""

    min_accuracy: Threshold
    min_macro_f1: Threshold
    max_ece: Threshold

    def thresholds(self) -> dict[str, float]:
        """The thresholds that are set, by key."""
        return {name: value for name, value in self.model_dump().items() if value is not None}


class EvaluateParams(Section):
    SECTION = "evaluate"
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)]
    misclassified_max: Annotated[int, Field(ge=0, le=400)]
    gate: GateParams


class ExportParams(Section):
    SECTION = "export"
    formats: Annotated[
        tuple[Literal[EXPORT_FORMATS], ...],
        _LIST,
        _check(lambda names: len(set(names)) == len(names)),
        Field(min_length=1, description=f"a non-empty list of distinct names out of {', '.join(EXPORT_FORMATS)}"),
    ]
    tolerance: Annotated[float, Field(gt=0.0, le=1.0)]
    temperature: bool


SECTIONS = (DataParams, PreprocessParams, TrainParams, EvaluateParams, ExportParams)
S = TypeVar("S", bound=Section)


def choices(annotation: Any) -> tuple[str, ...]:
    """The names a field's type allows: a `Literal`'s, or those of a tuple of them (export.formats); else ()."""
    if get_origin(annotation) is tuple:
        annotation = get_args(annotation)[0]
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def describe(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def _allowed(field: FieldInfo) -> str:
    """The "what is allowed" half of the sentence: the field's description, else its type and bounds."""
    if field.description:
        return field.description
    if names := choices(field.annotation):
        return f"one of {', '.join(names)}"
    if field.annotation is bool:
        return "true or false"
    bounds = {name: getattr(bound, name) for bound in field.metadata for name in ("ge", "gt", "le", "lt")
              if hasattr(bound, name)}  # fmt: skip
    if field.annotation is float:
        low, high = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
        return f"a number in {'(' if 'gt' in bounds else '['}{low}, {high}{')' if 'lt' in bounds else ']'}"
    low, high = bounds.get("ge"), bounds.get("le")
    return "an integer" + (f" from {low} to {high}" if high is not None else f" ≥ {low}" if low is not None else "")


def _not_a_mapping(name: str, value: Any) -> str:
    restore = "restore it from the project's params.yaml"
    return f"section '{name}' is {describe(value)}, but it must be a mapping of keys; {restore}."


def _is_section(field: FieldInfo | None) -> bool:
    return field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, Section)


def _sentence(cls: type[Section], raw: dict[str, Any], error: Any) -> str:
    """One of pydantic's errors as today's sentence: key, value given, what is allowed (or what to do)."""
    if error["type"] == "combination":
        return error["msg"]
    model, names, values = cls, [cls.SECTION], raw
    loc = error["loc"]
    for depth, part in enumerate(loc):  # down through the nested sections; an index into a list names the list
        names.append(str(part))
        field = model.model_fields.get(part)  # type: ignore[call-overload]
        if depth == len(loc) - 1 or not (_is_section(field) and isinstance(values.get(part), dict)):
            break
        model, values = field.annotation, values[part]  # type: ignore[union-attr]
    key, value = ".".join(names), values.get(part)
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(part), model.model_fields, n=1)
        hint = f"did you mean '{key.rpartition('.')[0]}.{close[0]}'?" if close else None
        return f"unknown key '{key}'; {hint or 'allowed keys: ' + ', '.join(model.model_fields) + '.'}"
    if error["type"] == "missing":
        return f"key '{key}' is missing; add it (the committed params.yaml has every key)."
    if _is_section(field):
        return _not_a_mapping(key, value)
    return f"'{key}' is {describe(value)}, but it must be {_allowed(field)}."  # type: ignore[arg-type]


def parse_section(cls: type[S], raw: Any, where: str = "params.yaml") -> S:
    """Check `raw` (the YAML mapping of one section) and build `cls`."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{where}: {_not_a_mapping(cls.SECTION, raw)}")
    try:
        return cls.model_validate(raw)
    except ValidationError as invalid:
        # A typo shows as an unknown key and a missing one: the unknown key's "did you mean" says more.
        ranks = {"extra_forbidden": 0, "missing": 1}
        first = min(invalid.errors(), key=lambda error: ranks.get(error["type"], 2))
        raise PipelineError(f"{where}: {_sentence(cls, raw, first)}") from None


def read_params_file(path: Path = paths.PARAMS) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path} not found; run the stage from the project's root folder.") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise PipelineError(f"{path}{line}: {problem}; fix the YAML syntax there.") from None
    if not isinstance(document, dict):
        raise PipelineError(f"{path}: must be a mapping of sections (data, preprocess, train, evaluate).")
    return document


def load_params(cls: type[S], path: Path = paths.PARAMS) -> S:
    """Check every section of `path`, the stage's own first, and return the stage's own (`cls.SECTION`).

    Every section, so that a bad `train.epochs` fails the first stage of `dvc repro` in seconds, not after
    download and preprocess. The other sections are only read: DVC tracks the keys in dvc.yaml's `params:`.
    """
    document = read_params_file(path)
    parsed = {}
    for section in sorted(SECTIONS, key=lambda section: section is not cls):
        if section.SECTION not in document:
            raise PipelineError(
                f"{path}: section '{section.SECTION}' is missing; restore it from the project's params.yaml."
            )
        parsed[section] = parse_section(section, document[section.SECTION], str(path))
    return parsed[cls]


def section_as_dict(section: Section) -> dict[str, Any]:
    """A section as plain data, e.g. to fingerprint it or store it with a model."""
    return section.model_dump()


def apply_params(document: dict[str, Any], changes: dict[str, Any]) -> None:
    """Set dotted keys, e.g. {"train.epochs": 3}, in a parsed params.yaml; a key it lacks is a KeyError.

    As `dvc exp run -S` does: a key that is not in params.yaml is refused, not added, so a typo in a
    test or a benchmark fails loudly. (The tests and bench/ edit params with this; the stages never do.)
    """
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        section = document
        for key in parents:
            section = section[key]
        if last not in section:
            raise KeyError(f"{dotted} is not in params.yaml")
        section[last] = value
