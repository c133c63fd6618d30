"""params.yaml validation: every class of bad input gets one sentence naming the key, before any work."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipeline import cpu
from pipeline.datasets import REGISTRY
from pipeline.errors import PipelineError
from pipeline.params import (
    ARCHITECTURES,
    DATASETS,
    EXPORT_FORMATS,
    DataParams,
    EvaluateParams,
    ExportParams,
    PreprocessParams,
    TrainParams,
    load_params,
    parse_section,
)
from tests.harness import PROJECT_ROOT, stage, tree_digest

SECTIONS = [DataParams, PreprocessParams, TrainParams, EvaluateParams, ExportParams]
SHIPPED = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("section", SECTIONS)
def test_shipped_params_are_valid(section: type) -> None:
    parsed = load_params(section, PROJECT_ROOT / "params.yaml")
    assert isinstance(parsed, section)


def test_parsed_values_keep_their_types() -> None:
    train = parse_section(TrainParams, SHIPPED["train"])
    assert isinstance(train.mlp.hidden_units, tuple) and all(isinstance(u, int) for u in train.mlp.hidden_units)
    assert isinstance(train.learning_rate, float)
    with pytest.raises(ValidationError, match="frozen"):
        train.epochs = 5  # frozen: stages cannot change what params.yaml says


@pytest.mark.parametrize(
    ("changes", "warned_keys"),
    [
        ({}, []),  # the shipped defaults (dense net, no XLA) are the fast settings
        ({"jit_compile": True}, []),  # XLA on the dense net without dropout: the measured speed-up
        ({"jit_compile": True, "mlp": {"dropout": 0.2}}, ["train.jit_compile"]),
        ({"model": "cnn"}, ["train.steps_per_execution"]),  # the default 64 suits the dense nets only
        ({"model": "cnn", "steps_per_execution": 1}, []),
        ({"model": "cnn", "jit_compile": True, "steps_per_execution": 1}, ["train.jit_compile"]),
        ({"model": "cnn", "jit_compile": True}, ["train.jit_compile", "train.steps_per_execution"]),
        ({"model": "cnn", "jit_compile": True, "distributed": {"engine": "jax"}}, []),  # jax always compiles
    ],
)
def test_cpu_speed_warnings_name_the_slow_setting(changes: dict, warned_keys: list[str]) -> None:
    raw = copy.deepcopy(SHIPPED["train"])
    for key, value in changes.items():
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    warnings = cpu.speed_warnings(parse_section(TrainParams, raw))
    assert [text.split("=")[0].split(" ")[0] for text in warnings] == warned_keys
    assert all(text.endswith("unless you train on a GPU.") for text in warnings)
    assert all("slower" in text and "BENCHMARKS.md, section 1" in text for text in warnings)
    # The figures live in BENCHMARKS.md, where they are re-measured; a message quoting one would go stale.
    assert not any(re.search(r"\d(\.\d+)?x\b", text) for text in warnings)


def with_change(section: str, dotted: str, value: object) -> dict:
    raw = copy.deepcopy(SHIPPED[section])
    *parents, last = dotted.split(".")
    target = raw
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return raw


class _Delete:
    """Marks a key to remove; a stable repr keeps test ids equal across pytest-xdist workers."""

    def __repr__(self) -> str:
        return "<deleted>"


DELETE = _Delete()

BAD = [
    # (section class, section, dotted key inside the section, bad value, words the message must hold)
    (TrainParams, "train", "epoch", 5, ["'train.epoch'", "did you mean 'train.epochs'"]),
    (TrainParams, "train", "mlp.hiden_units", [5], ["'train.mlp.hiden_units'", "hidden_units"]),
    (TrainParams, "train", "epochs", "ten", ["'train.epochs'", "'ten'", "an integer"]),
    (TrainParams, "train", "epochs", 2.5, ["'train.epochs'", "2.5", "an integer"]),
    (TrainParams, "train", "epochs", True, ["'train.epochs'", "True", "an integer"]),
    (TrainParams, "train", "epochs", 0, ["'train.epochs'", "from 1 to 100000"]),
    (TrainParams, "train", "epochs", None, ["'train.epochs'", "None"]),
    (TrainParams, "train", "learning_rate", -0.1, ["'train.learning_rate'", "(0.0, 10.0]"]),
    (TrainParams, "train", "learning_rate", float("nan"), ["'train.learning_rate'", "nan"]),
    (TrainParams, "train", "optimizer", "adamw2", ["'train.optimizer'", "one of adam, sgd"]),
    (TrainParams, "train", "model", "resnet", ["'train.model'", "one of mlp, cnn"]),
    (TrainParams, "train", "mlp.hidden_units", [64, "a"], ["'train.mlp.hidden_units'", "a list of integers"]),
    (TrainParams, "train", "mlp.hidden_units", 64, ["'train.mlp.hidden_units'", "a list"]),
    (TrainParams, "train", "cnn.filters", [], ["'train.cnn.filters'", "at least 1"]),
    (TrainParams, "train", "fast_cnn.kernel_sizes", [5], ["'train.fast_cnn.kernel_sizes'", "one kernel size per"]),
    (TrainParams, "train", "fast_cnn.convs_per_pool", [1], ["fast_cnn.convs_per_pool'", "one convolution count per"]),
    (TrainParams, "train", "fast_cnn.convs_per_pool", [1, 0], ["'train.fast_cnn.convs_per_pool'", "from 1 to 8"]),
    (TrainParams, "train", "label_smoothing", 1.0, ["'train.label_smoothing'", "[0.0, 1.0)"]),
    (TrainParams, "train", "augment.flip", "vertical", ["'train.augment.flip'", "one of none, horizontal"]),
    (TrainParams, "train", "lr_schedule", "step", ["'train.lr_schedule'", "one_cycle"]),
    (TrainParams, "train", "mlp.dropout", 1.0, ["'train.mlp.dropout'", "[0.0, 1.0)"]),
    (TrainParams, "train", "mlp", "big", ["section 'train.mlp'", "mapping"]),
    (TrainParams, "train", "jit_compile", "yes", ["'train.jit_compile'", "true or false"]),
    (TrainParams, "train", "backbone.weights", "w/x.h5", ["'train.backbone.weights'", "a .h5 weights file under"]),
    (TrainParams, "train", "backbone.weights", "data/backbone/../x.h5", ["'train.backbone.weights'", "under data/"]),
    (TrainParams, "train", "backbone.unfreeze", 0, ["'train.backbone.unfreeze'", "all, or the number"]),
    (TrainParams, "train", "backbone.unfreeze", "top", ["'train.backbone.unfreeze'", "'top'", "all, or the number"]),
    (TrainParams, "train", "backbone.frozen_epochs", -1, ["'train.backbone.frozen_epochs'", "from 0 to"]),
    (TrainParams, "train", "seed", DELETE, ["'train.seed' is missing"]),
    (PreprocessParams, "preprocess", "val_fraction", 1.5, ["'preprocess.val_fraction'", "1.5", "(0.0, 1.0)"]),
    (PreprocessParams, "preprocess", "val_fraction", 0, ["'preprocess.val_fraction'", "(0.0, 1.0)"]),
    (PreprocessParams, "preprocess", "seed", -1, ["'preprocess.seed'", "from 0 to"]),
    (DataParams, "data", "dataset", "cifar10", ["'data.dataset'", "one of digits, iris, mnist, fashion_mnist"]),
    (DataParams, "data", "source", 42, ["'data.source'", "a string"]),
    (DataParams, "data", "checksums", {"mnist.npz": "abc"}, ["'data.checksums'", "64-character hex"]),
    (DataParams, "data", "checksums", {"mnist.npz": "z" * 64}, ["'data.checksums'", "64-character hex"]),
    (EvaluateParams, "evaluate", "misclassified_max", 1000, ["'evaluate.misclassified_max'", "from 0 to 400"]),
]


@pytest.mark.parametrize(
    ("cls", "section", "key", "value", "words"), BAD, ids=[f"{s}.{k}={v!r}" for _, s, k, v, _ in BAD]
)
def test_bad_value_names_key_value_and_what_is_allowed(
    cls: type, section: str, key: str, value: object, words: list[str]
) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_section(cls, with_change(section, key, value))
    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("train: [unclosed\n", ["line", "fix the YAML syntax"]),
        ("- just\n- a list\n", ["must be a mapping of sections"]),
        ("data: {}\n", ["section 'train' is missing"]),
        ("train: 3\n", ["section 'train'", "must be a mapping"]),
    ],
)
def test_malformed_files_are_one_sentence(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError) as caught:
        load_params(TrainParams, path)
    for word in words:
        assert word in str(caught.value)


def test_missing_file_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="project's root folder"):
        load_params(TrainParams, tmp_path / "params.yaml")


@pytest.mark.parametrize("name", ["download", "preprocess", "train", "evaluate"])
def test_every_stage_has_help(name: str) -> None:
    result = stage(PROJECT_ROOT, name, "--help")
    assert result.returncode == 0
    assert f"python -m stages.{name}" in result.stdout
    assert name in result.stdout.split("\n\n")[1]  # the docstring's first line names the stage


def test_stage_with_bad_params_exits_nonzero_and_keeps_outputs(project_repo: Path) -> None:
    assert stage(project_repo, "download").returncode == 0
    assert stage(project_repo, "preprocess").returncode == 0
    prepared = tree_digest(project_repo / "data/prepared")
    text = (project_repo / "params.yaml").read_text()
    (project_repo / "params.yaml").write_text(text.replace("val_fraction: 0.1", "val_fraction: 10%"))
    result = stage(project_repo, "preprocess")
    assert result.returncode == 1
    assert "'preprocess.val_fraction' is '10%'" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_digest(project_repo / "data/prepared") == prepared


def test_train_with_a_typo_fails_and_writes_nothing(project_repo: Path) -> None:
    text = (project_repo / "params.yaml").read_text()
    (project_repo / "params.yaml").write_text(text.replace("  epochs: 60", "  epochs: 60\n  epoch: 3"))
    result = stage(project_repo, "train")
    assert result.returncode == 1
    assert "unknown key 'train.epoch'; did you mean 'train.epochs'?" in result.stderr
    assert not (project_repo / "models").exists()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_registered_dataset_is_allowed(name: str) -> None:
    assert parse_section(DataParams, SHIPPED["data"] | {"dataset": name}).dataset == name


def test_each_table_of_names_is_keyed_by_the_names_params_allows() -> None:
    """params.py holds each list of names (it imports no reader, exporter or builder); the tables that act on
    the names are keyed by exactly those."""
    from pipeline import export, models  # Keras: imported by this test only

    assert set(REGISTRY) == set(DATASETS)
    assert set(export.FORMATS) == set(EXPORT_FORMATS)
    assert set(models.MODEL_BUILDERS) == set(ARCHITECTURES.values())
    assert all(TrainParams.model_fields[name].annotation is section for name, section in ARCHITECTURES.items())


# ----------------------------------------------------------------------------- every section, up front


def write_params(tmp_path: Path, section: str, dotted: str, value: object) -> Path:
    document = copy.deepcopy(SHIPPED)
    document[section] = with_change(section, dotted, value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


BAD_ELSEWHERE = [
    # (section, dotted key inside it, bad value, the message)
    ("train", "epochs", "O", "'train.epochs' is 'O', but it must be an integer from 1 to 100000."),
    ("train", "epoch", 3, "unknown key 'train.epoch'; did you mean 'train.epochs'?"),
    ("export", "formats", [], "'export.formats' is [], but it must be a non-empty list"),
    ("data", "dataset", "cifar10", "'data.dataset' is 'cifar10', but it must be one of digits"),
]


@pytest.mark.parametrize("own", SECTIONS)
@pytest.mark.parametrize("bad", BAD_ELSEWHERE, ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD_ELSEWHERE])
def test_every_stage_checks_every_section(tmp_path: Path, own: type, bad: tuple) -> None:
    """#26: whichever stage runs first refuses a bad key of any section, before it does any work."""
    section, dotted, value, message = bad
    with pytest.raises(PipelineError, match=re.escape(message)):
        load_params(own, write_params(tmp_path, section, dotted, value))


def test_a_missing_section_of_another_stage_is_refused(tmp_path: Path) -> None:
    document = {name: value for name, value in SHIPPED.items() if name != "export"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(PipelineError, match="section 'export' is missing; restore it"):
        load_params(DataParams, tmp_path / "params.yaml")


def test_the_stage_own_section_is_reported_first(tmp_path: Path) -> None:
    document = copy.deepcopy(SHIPPED)
    document["train"]["epochs"] = 0
    document["data"]["dataset"] = "cifar10"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(PipelineError, match="'train.epochs' is 0"):
        load_params(TrainParams, tmp_path / "params.yaml")
    with pytest.raises(PipelineError, match="'data.dataset' is 'cifar10'"):
        load_params(DataParams, tmp_path / "params.yaml")


@pytest.mark.slow  # the stage in a subprocess
def test_download_refuses_a_bad_train_key_before_downloading(tmp_path: Path) -> None:
    """The subprocess a user runs: `python -m stages.download` fails in one sentence and writes no data."""
    for folder in ("pipeline", "stages"):
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("  epochs: 60", "  epochs: O"))
    result = stage(tmp_path, "download")
    assert result.returncode == 1
    assert "'train.epochs' is 'O', but it must be an integer from 1 to 100000." in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"label_smoothing": 0.1, "loss": "mean_squared_error"}, "loss 'mean_squared_error' takes no label smoothing"),
        ({"beta_1": 0.7, "optimizer": "sgd"}, "optimizer 'sgd' has no betas"),
        ({"model": "fast_cnn", "fast_cnn": {"optimizer": "sgd"}}, "'train.fast_cnn.beta_1' and 'beta_2' are 0.7"),
        ({"model": "mobilenet_v3_small", "distributed": {"engine": "jax"}}, "trains in one process only"),
        ({"model": "efficientnetv2_b0", "backbone": {"frozen_epochs": 61}}, "is 61, more than the 60 epochs"),
        ({"model": "mobilenet_v3_large", "backbone": {"weights": "none"}}, "weights 'none' start from random"),
    ],
)
def test_train_keys_that_do_not_go_together_are_one_sentence(changes: dict, sentence: str) -> None:
    raw = copy.deepcopy(SHIPPED["train"])
    for key, value in changes.items():
        raw[key] = raw[key] | value if isinstance(value, dict) else value
    with pytest.raises(PipelineError, match=re.escape(sentence)) as caught:
        parse_section(TrainParams, raw)
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(".")
