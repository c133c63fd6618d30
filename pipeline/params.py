"""Read `params.yaml` once, check one section, and hand the stage a frozen, typed object.

Each stage calls `load_params(SectionClass)`. A typo, a wrong type or a value out
of range raises `PipelineError` with one sentence naming the key, the value given
and what is allowed, before the stage touches any file.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline import paths
from pipeline.datasets import REGISTRY
from pipeline.errors import PipelineError
from pipeline.rules import (
    Invalid,
    boolean,
    choice,
    choice_list,
    describe,
    host_port,
    image_size,
    integer,
    integer_list,
    real,
    sha256_mapping,
    text,
)

# The dataset names are the registry's (pipeline/datasets.py, NumPy only): a dataset added there is allowed here.
# Its cost: every stage imports pipeline/datasets.py through this module, so it is a code dep of each in dvc.yaml.
DATASETS = tuple(REGISTRY)
COLOR_MODES = ("grayscale", "rgb")
CLASS_WEIGHTS = ("none", "balanced")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "silu", "leaky_relu")
LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adadelta", "adagrad", "adamax", "nadam", "ftrl")
DISTRIBUTED_ENGINES = ("none", "jax")
LAUNCHERS = ("local", "external")
EXPORT_FORMATS = ("saved_model", "tflite", "onnx")  # pipeline/export.py, FORMATS: what each one writes
PRECISIONS = ("float32", "mixed_bfloat16")
LOSSES = (
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "kl_divergence",
    "mean_squared_error",
    "categorical_hinge",
)


# Keys that decide how fast the train stage runs, or how its processes find each other, but never the model it
# trains (steps_per_execution only groups the same steps into fewer backend calls: bit-identical weights for any
# value, tests/test_training.py; measured so on TensorFlow and JAX, with XLA and without). They are deliberately
# not in the train stage's `params:` in dvc.yaml, nor in the resume fingerprint, so that changing only them
# retrains nothing (tests/test_dvc_yaml.py checks it with DVC, tests/test_training.py the fingerprint);
# `dvc params diff` and `dvc exp show` still show them, as they show every key of params.yaml.
EXECUTION_ONLY = (
    "train.steps_per_execution",
    "train.distributed.launcher",
    "train.distributed.coordinator",
    "train.distributed.join_timeout",
)


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataParams:
    SECTION = "data"
    RULES = {
        "dataset": choice(*DATASETS),
        "source": text(),
        "checksums": sha256_mapping(),
        "label_column": text(),
    }
    dataset: str
    source: str
    checksums: dict[str, str]
    label_column: str


@dataclass(frozen=True)
class PreprocessParams:
    SECTION = "preprocess"
    RULES = {
        "val_fraction": real(0.0, 1.0, low_open=True, high_open=True),
        "test_fraction": real(0.0, 1.0, low_open=True, high_open=True),
        "seed": integer(0, 2**32 - 1),
        "image_size": image_size(),
        "color_mode": choice(*COLOR_MODES),
        "memory_limit_mb": integer(0),
    }
    val_fraction: float
    test_fraction: float
    seed: int
    image_size: tuple[int, ...]
    color_mode: str
    memory_limit_mb: int


@dataclass(frozen=True)
class MlpParams:
    SECTION = "train.mlp"
    RULES = {
        "hidden_units": integer_list(1),
        "activation": choice(*ACTIVATIONS),
        "dropout": real(0.0, 1.0, high_open=True),
    }
    hidden_units: tuple[int, ...]
    activation: str
    dropout: float


@dataclass(frozen=True)
class CnnParams:
    SECTION = "train.cnn"
    RULES = {
        "filters": integer_list(1, min_length=1),
        "kernel_size": integer(1, 15),
        "pool_size": integer(1, 8),
        "pool_after_each_conv": boolean(),
        "batch_norm": boolean(),
        "dense_units": integer(1),
        "conv_dropout": real(0.0, 1.0, high_open=True),
        "dense_dropout": real(0.0, 1.0, high_open=True),
    }
    filters: tuple[int, ...]
    kernel_size: int
    pool_size: int
    pool_after_each_conv: bool
    batch_norm: bool
    dense_units: int
    conv_dropout: float
    dense_dropout: float


# The model names of `train.model`, each with its own section of sizes (train.mlp, train.cnn): the one list of
# models. pipeline.models keys its builders by these sections (TensorFlow is not imported here).
ARCHITECTURES: dict[str, type] = {"mlp": MlpParams, "cnn": CnnParams}
MODELS = tuple(ARCHITECTURES)


@dataclass(frozen=True)
class DistributedParams:
    SECTION = "train.distributed"
    RULES = {
        "engine": choice(*DISTRIBUTED_ENGINES),
        "processes": integer(1, 4096),
        "launcher": choice(*LAUNCHERS),
        "coordinator": host_port(),
        "join_timeout": integer(1, 3600),
    }
    engine: str
    processes: int
    launcher: str
    coordinator: str
    join_timeout: int


@dataclass(frozen=True)
class TrainParams:
    SECTION = "train"
    RULES = {
        "model": choice(*MODELS),
        **ARCHITECTURES,
        "optimizer": choice(*OPTIMIZERS),
        "learning_rate": real(0.0, 10.0, low_open=True),
        "lr_schedule": choice(*LR_SCHEDULES),
        "loss": choice(*LOSSES),
        "batch_size": integer(1, 1_000_000),
        "epochs": integer(1, 100_000),
        "early_stopping_patience": integer(0),
        "seed": integer(0, 2**32 - 1),
        "jit_compile": boolean(),
        "steps_per_execution": integer(1, 100_000),
        "onednn": boolean(),
        "precision": choice(*PRECISIONS),
        "distributed": DistributedParams,
        "class_weight": choice(*CLASS_WEIGHTS),
    }
    model: str
    mlp: MlpParams
    cnn: CnnParams
    optimizer: str
    learning_rate: float
    lr_schedule: str
    loss: str
    batch_size: int
    epochs: int
    early_stopping_patience: int
    seed: int
    jit_compile: bool
    steps_per_execution: int
    onednn: bool
    precision: str
    distributed: DistributedParams
    class_weight: str

    def check_combinations(self, where: str) -> None:
        """The checks no single key's rule can make: `train.distributed` against the rest of `train`."""
        dist = self.distributed
        if dist.engine == "none" and dist.processes != 1:
            raise PipelineError(
                f"{where}: 'train.distributed.processes' is {dist.processes}, but engine 'none' trains in one "
                "process; set 'train.distributed.engine' to jax, or processes to 1."
            )
        if self.batch_size % dist.processes:
            raise PipelineError(
                f"{where}: 'train.batch_size' is {self.batch_size}, which {dist.processes} processes cannot split "
                f"evenly ('train.distributed.processes'); use a batch size that is a multiple of {dist.processes}."
            )

    def cpu_speed_warnings(self, bf16_flags: tuple[str, ...] = ()) -> list[str]:
        """Speed settings measured to slow this model down on a CPU (bench/step_time.py, bench/bf16.py), as
        sentences to log. `bf16_flags`: the CPU's bfloat16 instructions (pipeline.cpu.bf16_flags)."""
        warnings = []
        if self.precision == "mixed_bfloat16":
            warnings += self._bf16_warnings(bf16_flags)
        if self.distributed.engine != "none":  # engine jax compiles every step, whatever jit_compile says
            return self._with_advice(warnings)
        if self.jit_compile and self.model == "cnn":
            warnings.append("train.jit_compile=true with a CNN: XLA made convolution steps 2.6-4.2x slower")
        if self.jit_compile and self.model == "mlp" and self.mlp.dropout > 0:
            warnings.append("train.jit_compile=true with train.mlp.dropout > 0: XLA's dropout made steps ~4x slower")
        if self.steps_per_execution > 1 and self.model == "cnn":
            warnings.append("train.steps_per_execution > 1 with a CNN: its epochs ran ~1.4x slower than with 1")
        return self._with_advice(warnings)

    def cpu_speed_hint(self, bf16_flags: tuple[str, ...]) -> str | None:
        """One line for the log when this CPU has a faster setting for this model than the one asked for."""
        if self.precision == "float32" and self.model == "cnn" and bf16_flags and self.onednn:
            return (
                f"this CPU has {' and '.join(bf16_flags)}: train.precision=mixed_bfloat16 ran the tutorial CNN's "
                "steps 1.6-1.85x faster than float32 on AVX-512 BF16, 2.4-2.9x with AMX (docs/bf16.md)"
            )
        return None

    def _bf16_warnings(self, bf16_flags: tuple[str, ...]) -> list[str]:
        # Measured by bench/bf16.py on an AMD EPYC with avx512_bf16 (no AMX): the tutorial CNN 1.6-1.85x faster
        # with oneDNN, 11x slower without it; the dense net 784-784-100 at batch 32 0.71-0.99x (no gain on AMX either).
        # On an AVX2-only EPYC (bench/results/bf16_avx2.json): the CNN 0.13x, the dense net 0.66x.
        setting = "train.precision=mixed_bfloat16"
        if not bf16_flags:
            return [
                f"{setting} on a CPU without bfloat16 instructions (neither amx_bf16 nor avx512_bf16 in "
                "/proc/cpuinfo): there it is converted, not computed natively; the tutorial CNN ran 7.8x slower "
                "than float32 on an AVX2 EPYC (the dense net 1.5x)"
            ]
        if self.distributed.engine == "none" and not self.onednn:
            return [f"{setting} with train.onednn=false: without oneDNN, bfloat16 convolutions ran ~11x slower"]
        if self.model == "mlp":
            return [f"{setting} with a dense net: its steps ran 0.71-0.99x as fast as float32 (no faster with AMX)"]
        return []

    @staticmethod
    def _with_advice(warnings: list[str]) -> list[str]:
        advice = "on a CPU (BENCHMARKS.md, section 1; docs/bf16.md); change it unless you train on a GPU."
        return [f"{text} {advice}" for text in warnings]


@dataclass(frozen=True)
class EvaluateParams:
    SECTION = "evaluate"
    RULES = {"batch_size": integer(1, 1_000_000), "misclassified_max": integer(0, 400)}
    batch_size: int
    misclassified_max: int


@dataclass(frozen=True)
class ExportParams:
    SECTION = "export"
    RULES = {"formats": choice_list(*EXPORT_FORMATS), "tolerance": real(0.0, 1.0, low_open=True)}
    formats: tuple[str, ...]
    tolerance: float


Section = TypeVar("Section")


def parse_section(cls: type[Section], raw: Any, where: str = "params.yaml") -> Section:
    """Check `raw` (the YAML mapping of one section) against `cls.RULES` and build `cls`."""
    name = cls.SECTION
    if not isinstance(raw, dict):
        raise PipelineError(
            f"{where}: section '{name}' is {describe(raw)}, but it must be a mapping of keys; "
            "restore it from the project's params.yaml."
        )
    rules: dict[str, Any] = cls.RULES
    for key in raw:
        if key not in rules:
            close = difflib.get_close_matches(str(key), rules, n=1)
            hint = f"did you mean '{name}.{close[0]}'?" if close else f"allowed keys: {', '.join(rules)}."
            raise PipelineError(f"{where}: unknown key '{name}.{key}'; {hint}")
    values = {}
    for key, rule in rules.items():
        if key not in raw:
            raise PipelineError(
                f"{where}: key '{name}.{key}' is missing; add it (the committed params.yaml has every key)."
            )
        if dataclasses.is_dataclass(rule):
            values[key] = parse_section(rule, raw[key], where)
            continue
        try:
            values[key] = rule(raw[key])
        except Invalid as allowed:
            raise PipelineError(f"{where}: '{name}.{key}' is {describe(raw[key])}, but it must be {allowed}.") from None
    section = cls(**values)
    if hasattr(section, "check_combinations"):  # a section whose keys constrain each other checks them here
        section.check_combinations(where)
    return section


def read_params_file(path: Path = paths.PARAMS) -> dict[str, Any]:
    try:
        text_ = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path} not found; run the stage from the project's root folder.") from None
    try:
        document = yaml.safe_load(text_)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise PipelineError(f"{path}{line}: {problem}; fix the YAML syntax there.") from None
    if not isinstance(document, dict):
        raise PipelineError(f"{path}: must be a mapping of sections (data, preprocess, train, evaluate).")
    return document


def load_params(cls: type[Section], path: Path = paths.PARAMS) -> Section:
    """Read `path` and return its validated section `cls.SECTION`."""
    document = read_params_file(path)
    if cls.SECTION not in document:
        raise PipelineError(f"{path}: section '{cls.SECTION}' is missing; restore it from the project's params.yaml.")
    return parse_section(cls, document[cls.SECTION], str(path))


def section_as_dict(section: Any) -> dict[str, Any]:
    """A section as plain data (lists for tuples), e.g. to fingerprint it or store it with a model."""
    return dataclasses.asdict(section)


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
