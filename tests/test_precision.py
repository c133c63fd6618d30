"""train.precision: mixed_bfloat16 builds, trains, saves and is read back by evaluate and predict; the CPU check.

(Determinism and bit-exact resume with it: tests/test_resume.py.)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import cpu
from pipeline.errors import PipelineError
from pipeline.params import TrainParams, parse_section
from tests.harness import PROJECT_ROOT, make_prepared_repo, prepared_split, read_metrics, stage

SHIPPED = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
BASE = parse_section(TrainParams, SHIPPED["train"])
BF16 = BASE.model_copy(update={"precision": "mixed_bfloat16"})
CNN = BASE.model_copy(update={"model": "cnn", "steps_per_execution": 1})
CNN_BF16 = CNN.model_copy(update={"precision": "mixed_bfloat16"})


# ----------------------------------------------------------------------------- the CPU's flags


def write_cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    return path


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", ("amx_bf16", "avx512_bf16")),  # Intel Sapphire Rapids
        ("fpu avx2 avx512f avx512_bf16", ("avx512_bf16",)),  # AMD EPYC Zen 4
        ("fpu avx2 fma", ()),  # AMD EPYC before Zen 4
        ("fpu avx512_bf16x", ()),  # whole flags only
    ],
)
def test_bf16_flags_are_read_from_the_first_cpu(tmp_path: Path, flags: str, expected: tuple[str, ...]) -> None:
    assert cpu.bf16_flags(write_cpuinfo(tmp_path, flags)) == expected


def test_no_cpuinfo_means_no_flags(tmp_path: Path) -> None:
    assert cpu.bf16_flags(tmp_path / "missing") == ()


# ----------------------------------------------------------------------------- the param and its warnings


def test_precision_is_validated() -> None:
    raw = copy.deepcopy(SHIPPED["train"]) | {"precision": "float16"}
    with pytest.raises(PipelineError, match=r"'train.precision' is 'float16', but it must be one of float32"):
        parse_section(TrainParams, raw)
    assert BASE.precision == "float32"  # the shipped default


@pytest.mark.parametrize(
    ("params", "flags", "warned"),
    [
        (CNN_BF16, (), "without bfloat16 instructions"),
        (CNN_BF16, ("avx512_bf16",), None),  # measured faster (docs/bf16.md)
        (CNN_BF16, ("amx_bf16", "avx512_bf16"), None),
        (CNN_BF16.model_copy(update={"onednn": False}), ("avx512_bf16",), "train.onednn=false"),
        (BF16, ("avx512_bf16",), "with a dense net"),  # measured no faster
        (BF16, (), "without bfloat16 instructions"),
        (BASE, (), None),
        (CNN, (), None),
    ],
)
def test_bf16_where_it_is_slower_warns(params: TrainParams, flags: tuple[str, ...], warned: str | None) -> None:
    warnings = cpu.speed_warnings(params, flags)
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warned in warnings[0] and "train.precision=mixed_bfloat16" in warnings[0]
        assert "docs/bf16.md" in warnings[0]  # the numbers are there, measured per CPU


@pytest.mark.parametrize(
    ("params", "flags", "hinted"),
    [
        (CNN, ("avx512_bf16",), True),  # float32 where bf16 was measured faster: one log line says so
        (CNN, (), False),
        (CNN_BF16, ("avx512_bf16",), False),
        (BASE, ("amx_bf16", "avx512_bf16"), False),  # dense nets did not gain
        (CNN.model_copy(update={"onednn": False}), ("avx512_bf16",), False),
    ],
)
def test_cnn_in_float32_on_a_bf16_cpu_logs_the_faster_setting(params, flags, hinted: bool) -> None:
    hint = cpu.speed_hint(params, flags)
    assert (hint is not None) == hinted
    if hinted:
        assert "train.precision=mixed_bfloat16" in hint and "avx512_bf16" in hint and "docs/bf16.md" in hint


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_bf16_model_computes_in_bfloat16_with_a_float32_output(model: str) -> None:
    import keras

    from pipeline import models

    built = models.build_model(BF16.model_copy(update={"model": model}), (8, 8, 1), 10)
    assert keras.config.dtype_policy().name == "float32", "the global policy must be restored after the build"
    *hidden, output = [layer for layer in built.layers if layer.weights]
    assert {layer.dtype_policy.name for layer in hidden} == {"mixed_bfloat16"}
    assert output.dtype_policy.name == "float32"  # softmax and loss in float32
    assert {v.dtype for v in built.weights} == {"float32"}  # the weights themselves stay float32
    probabilities = built.predict(np.random.default_rng(0).random((4, 8, 8, 1)), verbose=0)
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert models.build_model(BASE, (8, 8, 1), 10).layers[-1].dtype_policy.name == "float32"


# ----------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits trained with mixed_bfloat16 (a few epochs) and evaluated."""
    params = {"train.precision": "mixed_bfloat16", "train.epochs": 8, "train.early_stopping_patience": 0}
    repo = make_prepared_repo(tmp_path_factory.mktemp("bf16") / "repo", params)
    for name in ("train", "evaluate"):
        result = stage(repo, name)
        assert result.returncode == 0, result.stderr
    return repo


@pytest.mark.slow
def test_evaluate_reads_a_bf16_model(bf16_run: Path) -> None:
    from pipeline.models import load_model

    model = load_model(bf16_run / "models/model.keras")
    assert model.layers[1].dtype_policy.name == "mixed_bfloat16"  # saved with the model: evaluated as trained
    test = read_metrics(bf16_run)["test"]
    assert 0.85 <= test["accuracy"] <= 1.0  # float32 reaches ~0.95 in these 8 epochs
    assert 0.85 <= test["macro_f1"] <= 1.0


@pytest.mark.slow
def test_predict_reads_a_bf16_model(bf16_run: Path, tmp_path: Path) -> None:
    x_test, labels = prepared_split(bf16_run, "test")
    np.save(tmp_path / "digits.npy", x_test[:10].astype(np.float64))  # prepared digits keep their 0..16 values
    result = stage(bf16_run, "predict", "--json", str(tmp_path / "digits.npy"))
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    truth = labels[:10]
    hits = sum(record["predictions"][0]["class"] == str(label) for record, label in zip(records, truth, strict=True))
    assert len(records) == 10 and hits >= 7
    assert all(0 < record["predictions"][0]["probability"] <= 1 for record in records)


@pytest.mark.slow
def test_export_of_a_bf16_model_is_its_float32_twin_in_every_format(bf16_run: Path, tmp_path: Path) -> None:
    repo = bf16_run
    result = stage(repo, "export")
    assert result.returncode == 0, result.stderr
    assert "computes in a lower precision: the formats are its float32 twin" in result.stderr
    figures = json.loads((repo / "reports/export_parity.json").read_text())
    twin = figures["float32_twin"]  # how far float32 arithmetic moves bf16's probabilities, recorded
    assert 0 < twin["max_abs_diff"] < 0.1 and twin["top1_agreement"] >= 0.97, twin
    for name in ("saved_model", "tflite", "onnx"):  # each format within the tolerance of the twin it was made from
        assert figures[name]["max_abs_diff"] <= figures["tolerance"] and figures[name]["top1_mismatches"] == 0, name
    # predict gives the same classes through the exported formats as through the bf16 model.keras, bar the
    # few examples the twin's float32 arithmetic tips over (counted above).
    np.save(tmp_path / "digits.npy", prepared_split(repo, "test")[0][:40].astype(np.float64))
    classes = {}
    for model in ("models/model.keras", "models/export/model.tflite", "models/export/model.onnx"):
        output = stage(repo, "predict", "--json", "--model", model, str(tmp_path / "digits.npy"))
        assert output.returncode == 0, output.stderr
        classes[model] = [record["predictions"][0]["class"] for record in json.loads(output.stdout)]
    assert classes["models/export/model.tflite"] == classes["models/export/model.onnx"]
    agree = sum(a == b for a, b in zip(classes["models/model.keras"], classes["models/export/model.onnx"], strict=True))
    assert agree >= 38, classes
