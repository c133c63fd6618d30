"""Corrupted intermediate state and hostile predict inputs: one sentence naming the file and what to do.

Real files written by the real writers (np.savez, Keras's model.save, save_state), then damaged the
ways a crash, a careless edit or an attacker would.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
from test_predict import prepared

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.inputs import read_inputs
from pipeline.io.reading import load_npz
from pipeline.models import check_model_fits, load_model
from pipeline.prediction import check_probabilities, check_top_k
from pipeline.prepared import open_split, write_splits
from pipeline.preprocessing import read_meta
from pipeline.resume import RunRecord, load_state, save_state
from pipeline.runtimes import open_model
from stages import predict
from tests.harness import PROJECT_ROOT, copy_repo, stage

# ----------------------------------------------------------------------------- the resume state


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dropout(0.1)(keras.layers.Dense(5, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    return model


def _rewrite(path: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    arrays = load_npz(path)
    change(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _edit_meta(**changes: object) -> Callable[[dict[str, np.ndarray]], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays["meta"] = np.array(json.dumps(json.loads(str(arrays["meta"])) | changes))

    return change


def _drop_best(arrays: dict[str, np.ndarray]) -> None:
    for key in [k for k in arrays if k.startswith("best_")]:
        del arrays[key]


STATE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: p.write_bytes(b"\x00garbage" * 100),
    "empty": lambda p: p.write_bytes(b""),
    "extra-array": lambda p: _rewrite(p, lambda a: a.update(model_99=np.zeros(3))),
    "extra-counter": lambda p: _rewrite(p, _edit_meta(surprise=1)),
    "counter-of-wrong-type": lambda p: _rewrite(p, _edit_meta(epochs_done="three")),
    "bool-as-count": lambda p: _rewrite(p, _edit_meta(best_epoch=True)),
    "weights-of-wrong-shape": lambda p: _rewrite(p, lambda a: a.update(model_0=np.zeros((5, 4), np.float32))),
    "weights-of-wrong-dtype": lambda p: _rewrite(p, lambda a: a.update(model_0=a["model_0"].astype(np.float64))),
    "best-weights-missing": lambda p: _rewrite(p, _drop_best),
    "meta-not-json": lambda p: _rewrite(p, lambda a: a.update(meta=np.array("{not json"))),
    "meta-a-list": lambda p: _rewrite(p, lambda a: a.update(meta=np.array("[1, 2]"))),
    "within-an-epoch-without-its-metrics": lambda p: _rewrite(p, _edit_meta(steps_done=2)),
    "a-step-past-the-epoch": lambda p: _rewrite(p, _edit_meta(steps_done=5)),
    "metrics-at-an-epoch-end": lambda p: _rewrite(p, lambda a: a.update(metrics_0=np.zeros((), np.float32))),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", STATE_DAMAGE.values(), ids=STATE_DAMAGE.keys())
def test_a_damaged_resume_state_is_set_aside_and_training_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    model = tiny_model()
    path = tmp_path / "state.npz"
    best = [np.asarray(w.numpy()) for w in model.weights]
    save_state(path, model, best, RunRecord("run", epochs_done=2, best_epoch=1, history=[{"epoch": 1}, {"epoch": 2}]))
    fresh = tiny_model()
    before = [np.asarray(v.numpy()).copy() for v in fresh.variables]
    assert load_state(path, tiny_model(), "run", batches_per_epoch=5) is not None  # the undamaged state restores

    damage(path)
    with caplog.at_level(logging.WARNING):
        assert load_state(path, fresh, "run", batches_per_epoch=5) is None
    assert "set aside" in caplog.text and "training from scratch" in caplog.text
    assert not path.exists() and (tmp_path / "state.npz.corrupt").exists()
    # Nothing was half-assigned before the damage was found: the fresh model is as it was built.
    for a, b in zip(before, fresh.variables, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


# ----------------------------------------------------------------------------- data/prepared


META = {
    "dataset": "tiny", "kind": "tabular", "input_shape": [3], "class_names": ["a", "b"],
    "feature_names": ["x", "y", "z"], "scaling": {"method": "minmax", "min": [0, 0, 0], "range": [1, 1, 1]},
    "sizes": {"train": 4}, "test_split": "official", "val_split": "stratified 0.2 of the training data, seed 1",
}  # fmt: skip
IMAGE_META = META | {
    "kind": "image", "input_shape": [8, 8, 1], "scaling": {"method": "divide", "pixel_max": 16.0},
    "image": {"color_mode": "grayscale", "resize": "pillow-box"},
}  # fmt: skip


def _write_train(x: np.ndarray, labels: np.ndarray) -> None:
    """data/prepared/train as preprocess writes it (pipeline/prepared.py), with these features and labels."""
    paths.PREPARED_DIR.mkdir(parents=True, exist_ok=True)
    write_splits(
        paths.PREPARED_DIR, iter([("train", x)]), labels={"train": labels}, row_shape=x.shape[1:], dtype="float32",
        shard_mb=256, sources={},
    )  # fmt: skip


@pytest.fixture
def in_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with a good data/prepared/train and meta.json, the cwd for the test."""
    monkeypatch.chdir(tmp_path)
    _write_train(np.zeros((4, 3), np.float32), np.array([0, 1] * 2))
    paths.PREPARED_META.write_text(json.dumps(META))
    return tmp_path


# Splits whose files agree with their manifest but not with meta.json or with what a split may hold (a damaged
# shard or manifest: tests/test_prepared.py).
SPLIT_DAMAGE: dict[str, tuple[np.ndarray, np.ndarray, str]] = {
    "labels-outside-the-classes": (np.zeros((4, 3), np.float32), np.array([0, 1, 2, 1]), "y.npy holds labels"),
    "wrong-feature-count": (np.zeros((4, 5), np.float32), np.array([0, 1] * 2), "manifest.json stores train"),
    "nan-features": (np.full((4, 3), np.nan, np.float32), np.array([0, 1] * 2), "x-00000.npy holds NaN"),
}


@pytest.mark.parametrize(("x", "labels", "phrase"), SPLIT_DAMAGE.values(), ids=SPLIT_DAMAGE.keys())
def test_a_damaged_prepared_split_names_itself_and_the_stage_to_rerun(
    in_workspace: Path, x: np.ndarray, labels: np.ndarray, phrase: str
) -> None:
    open_split("train", read_meta(paths.PREPARED_META))  # the undamaged split loads
    shutil.rmtree(paths.split_dir("train"))
    _write_train(x, labels)
    with pytest.raises(PipelineError) as caught:
        open_split("train", read_meta(paths.PREPARED_META))
    message = str(caught.value)
    assert message.startswith(str(paths.split_dir("train"))) and phrase in message, message
    assert "dvc repro -f preprocess" in message and "\n" not in message


def _cut_names(meta: dict) -> dict:
    return meta | {"class_names": meta["class_names"][:1]}


META_DAMAGE: dict[str, Callable[[dict], str | None]] = {
    "deleted": lambda meta: None,
    "garbage": lambda meta: "\x00\xff garbage",
    "truncated": lambda meta: json.dumps(meta)[:40],
    "a-list": lambda meta: "[]",
    "class-names-cut": lambda meta: json.dumps(_cut_names(meta)),
    "class-names-twice": lambda meta: json.dumps(meta | {"class_names": ["a", "a"]}),
    "scaling-missing": lambda meta: json.dumps({k: v for k, v in meta.items() if k != "scaling"}),
    "pixel-max-0": lambda meta: json.dumps(IMAGE_META | {"scaling": {"method": "divide", "pixel_max": 0}}),
    "pixel-max-nan": lambda meta: json.dumps(IMAGE_META | {"scaling": {"method": "divide", "pixel_max": math.nan}}),
    "range-0": lambda meta: json.dumps(meta | {"scaling": meta["scaling"] | {"range": [1, 0, 1]}}),
    "shape-negative": lambda meta: json.dumps(meta | {"input_shape": [-3]}),
    "shape-of-other-kind": lambda meta: json.dumps(meta | {"input_shape": [8, 8, 1]}),
    "shape-a-string": lambda meta: json.dumps(meta | {"input_shape": "3"}),
    "kind-unknown": lambda meta: json.dumps(meta | {"kind": "audio"}),
    "feature-names-cut": lambda meta: json.dumps(meta | {"feature_names": ["x"]}),
    "unknown-key": lambda meta: json.dumps(meta | {"surprise": 1}),
    "rgb-for-gray": lambda meta: json.dumps(IMAGE_META | {"image": {"color_mode": "rgb", "resize": "pillow-box"}}),
}


@pytest.mark.parametrize("damage", META_DAMAGE.values(), ids=META_DAMAGE.keys())
def test_a_damaged_meta_json_names_itself_and_the_stage_to_rerun(
    in_workspace: Path, damage: Callable[[dict], str | None]
) -> None:
    read_meta(paths.PREPARED_META)
    text = damage(META)
    if text is None:
        paths.PREPARED_META.unlink()
    else:
        paths.PREPARED_META.write_text(text, encoding="latin-1")
    with pytest.raises(PipelineError) as caught:
        read_meta(paths.PREPARED_META)
    message = str(caught.value)
    assert message.startswith(str(paths.PREPARED_META)) and "dvc repro -f preprocess" in message, message
    assert "\n" not in message


def test_an_image_meta_json_passes_its_own_checks(in_workspace: Path) -> None:
    paths.PREPARED_META.write_text(json.dumps(IMAGE_META))
    assert read_meta(paths.PREPARED_META).scaling.pixel_max == 16.0


# ----------------------------------------------------------------------------- models/model.keras


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.keras"
    tiny_model().save(path)
    return path


def _lambda_model(path: Path) -> None:
    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)  # its code would run when the file is loaded
    keras.Model(inputs, outputs).save(path)


def _config_naming_os_system(path: Path, good: bytes) -> None:
    """`good` (a .keras file) with every layer's activation made os.system: loading it would call os.system(x)."""
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(path, "w") as dest:
        for name in source.namelist():
            data = source.read(name)
            if name == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if "activation" in layer["config"]:
                        layer["config"]["activation"] = {
                            "module": "os", "class_name": "function", "config": "system", "registered_name": "system"
                        }  # fmt: skip
                data = json.dumps(config).encode()
            dest.writestr(name, data)


MODEL_DAMAGE: dict[str, Callable[[Path, bytes], None]] = {
    "garbage": lambda path, good: path.write_bytes(b"\x89garbage" * 100),
    "empty": lambda path, good: path.write_bytes(b""),
    "truncated": lambda path, good: path.write_bytes(good[: len(good) // 2]),
    "config-garbled": lambda path, good: path.write_bytes(good.replace(b'"class_name"', b'"klass_name"')),
    "lambda-layer": lambda path, good: _lambda_model(path),
    "config-names-os-system": _config_naming_os_system,
}


@pytest.mark.parametrize("damage", MODEL_DAMAGE.values(), ids=MODEL_DAMAGE.keys())
def test_a_damaged_or_unsafe_model_file_is_one_sentence(
    saved_model: Path, tmp_path: Path, damage: Callable[[Path, bytes], None]
) -> None:
    path = tmp_path / "model.keras"
    damage(path, saved_model.read_bytes())
    with pytest.raises(PipelineError) as caught:
        load_model(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message and "dvc repro -f train" in message, message
    assert "safe_mode=False" not in message, "never advise turning the safety off"


def test_another_datasets_model_is_refused_before_it_runs(saved_model: Path) -> None:
    model = load_model(saved_model)
    check_model_fits(model, saved_model, [4], 3)
    for shape, classes in (([8, 8, 1], 3), ([4], 10)):
        with pytest.raises(PipelineError, match="trained on other data; rerun dvc repro -f train"):
            check_model_fits(model, saved_model, shape, classes)


def test_a_lambda_model_says_it_is_refused_for_running_code(tmp_path: Path) -> None:
    _lambda_model(tmp_path / "model.keras")
    with pytest.raises(PipelineError, match="would run Python code"):
        load_model(tmp_path / "model.keras")


def test_a_model_naming_os_system_says_it_names_code_outside_keras(saved_model: Path, tmp_path: Path) -> None:
    _config_naming_os_system(tmp_path / "model.keras", saved_model.read_bytes())
    with pytest.raises(PipelineError, match="names the function 'system', which is not Keras's own"):
        load_model(tmp_path / "model.keras")


def test_every_keras_file_is_opened_by_the_one_checked_loader() -> None:
    """A second loader skips safe mode's refusal and the one-sentence errors (issue #31: predict had one)."""
    keras_loader = re.compile(
        r"\bkeras\.(saving|models)\.load_model\b|\bsaving\.load_model\b|from keras\S* import .*load_model"
    )
    calls = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}"
        for folder in ("pipeline", "stages", "bench")
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if keras_loader.search(line)
    ]
    assert len(calls) == 1 and calls[0].startswith("pipeline/models.py:"), calls


# ----------------------------------------------------------------------------- predict's inputs


def _npy_claiming(path: Path, shape: tuple[int, ...]) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    path.write_bytes(header.getvalue() + b"\0" * 64)


NPY_INPUTS: dict[str, Callable[[Path], None]] = {
    "header-claims-596GiB": lambda path: _npy_claiming(path, (10**4, 8, 8 * 10**5)),
    "zero-bytes": lambda path: path.write_bytes(b""),
    "magic-only": lambda path: path.write_bytes(b"\x93NUMPY\x01\x00"),
    "nan": lambda path: np.save(path, np.full((8, 8), np.nan)),
    "inf": lambda path: np.save(path, np.full((8, 8), -np.inf)),
    "beyond-float32": lambda path: np.save(path, np.full((8, 8), 1e300)),
    "complex": lambda path: np.save(path, np.zeros((8, 8), np.complex64)),
}


@pytest.mark.parametrize("write", NPY_INPUTS.values(), ids=NPY_INPUTS.keys())
def test_a_hostile_npy_input_is_one_sentence_in_bounded_memory(tmp_path: Path, write: Callable[[Path], None]) -> None:
    _, _, spec = prepared("image")
    path = tmp_path / "input.npy"
    write(path)
    with pytest.raises(PipelineError) as caught:
        read_inputs([path], spec)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


CSV_INPUTS = {
    "field-over-128KB": "1," + "9" * 200_000 + ",3\n",
    "nan": "1,nan,3\n",
    "inf": "1,2,-inf\n",
    "beyond-float32": "1,2,1e39\n",
    "nul-byte": "1,2\x00,3\n",
}


@pytest.mark.parametrize("text", CSV_INPUTS.values(), ids=CSV_INPUTS.keys())
def test_a_hostile_csv_input_is_one_sentence(tmp_path: Path, text: str) -> None:
    _, _, spec = prepared("tabular")
    path = tmp_path / "rows.csv"
    path.write_text(text)
    with pytest.raises(PipelineError) as caught:
        read_inputs([path], spec)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("top_k", [0, -1, 3, 10**9])
def test_top_k_outside_one_to_the_class_count_is_refused(top_k: int) -> None:
    _, _, spec = prepared("image")  # two classes
    with pytest.raises(PipelineError, match=f"--top-k {top_k} is out of range.*give 1 to 2"):
        check_top_k(top_k, spec)


# ----------------------------------------------------------------------------- the stages, end to end


def test_predict_with_damaged_meta_or_input_fails_before_loading_tensorflow(digits_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    _npy_claiming(tmp_path / "huge.npy", (10**4, 8, 8 * 10**5))
    result = stage(repo, "predict", str(tmp_path / "huge.npy"), "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr and result.stdout == "", result.stderr
    meta = json.loads((repo / paths.PREPARED_META).read_text())
    (repo / paths.PREPARED_META).write_text(json.dumps(meta | {"scaling": {"method": "divide", "pixel_max": 0}}))
    np.save(tmp_path / "digit.npy", np.zeros((8, 8)))
    result = stage(repo, "predict", str(tmp_path / "digit.npy"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "data/prepared/meta.json" in result.stderr and "dvc repro -f preprocess" in result.stderr


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_model_giving_nan_is_refused_rather_than_printed(bad: float) -> None:
    check_probabilities(np.array([[0.25, 0.75]]), Path("models/model.keras"))
    with pytest.raises(PipelineError, match="model.keras gave NaN or infinite probabilities.*dvc repro -f train"):
        check_probabilities(np.array([[bad, 0.5]]), Path("models/model.keras"))


def _predict_error(repo: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """predict's error with `--model model` on one digit, in this process, so that TensorFlow loads once for every
    case: a PipelineError, which the stages' wrapper prints as its one line with exit 1 (the CLI test below)."""
    np.save(tmp_path / "digit.npy", np.zeros((8, 8)))
    monkeypatch.chdir(repo)
    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    with pytest.raises(PipelineError) as caught:
        predict.main(parser.parse_args(["--model", str(model), str(tmp_path / "digit.npy")]))
    return str(caught.value)


def test_predict_prints_one_sentence_for_a_garbage_model_and_exits_1(digits_run: Path, tmp_path: Path) -> None:
    """The whole command line: exit 1, one error line, nothing on stdout, no traceback."""
    model = tmp_path / paths.MODEL
    model.parent.mkdir()
    MODEL_DAMAGE["garbage"](model, (digits_run / paths.MODEL).read_bytes())
    np.save(tmp_path / "digit.npy", np.zeros((8, 8)))
    result = stage(digits_run, "predict", "--model", str(model), str(tmp_path / "digit.npy"))
    assert result.returncode == 1 and "Traceback" not in result.stderr and result.stdout == "", result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"{model} is " in errors[0] and "dvc repro -f train" in errors[0], result.stderr


@pytest.mark.parametrize("damage", ["garbage", "truncated", "lambda-layer", "config-names-os-system"])
def test_predict_refuses_a_damaged_or_unsafe_model_keras_in_one_sentence(
    digits_run: Path, tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / paths.MODEL
    model.parent.mkdir()
    MODEL_DAMAGE[damage](model, (digits_run / paths.MODEL).read_bytes())
    error = _predict_error(digits_run, model, tmp_path, monkeypatch)
    assert f"{model} is " in error and "dvc repro -f train" in error, error
    assert "safe_mode=False" not in error


EXPORT_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda good: b"\x89garbage" * 100,
    "truncated": lambda good: good[: len(good) // 2],
}
# The file of each exported format that is damaged: a SavedModel is a folder, its graph and its weights apart.
EXPORT_MEMBERS = {
    "saved_model": "saved_model/saved_model.pb",
    "saved_model-weights": "saved_model/variables/variables.data-00000-of-00001",
    "saved_model-weights-index": "saved_model/variables/variables.index",
    "tflite": "model.tflite",
    "onnx": "model.onnx",
}


def _damaged_export(digits_run: Path, dest: Path, member: str, damage: str) -> Path:
    """A copy of the digits run's models/export with `member` damaged: the path to give as --model."""
    export = shutil.copytree(digits_run / "models/export", dest)
    (export / member).write_bytes(EXPORT_DAMAGE[damage]((export / member).read_bytes()))
    return export / Path(member).parts[0]


@pytest.mark.parametrize("damage", EXPORT_DAMAGE)
@pytest.mark.parametrize("member", EXPORT_MEMBERS.values(), ids=EXPORT_MEMBERS.keys())
def test_a_damaged_export_is_one_sentence(digits_run: Path, tmp_path: Path, member: str, damage: str) -> None:
    model = _damaged_export(digits_run, tmp_path / "export", member, damage)
    open_model(digits_run / "models/export" / model.name)  # the undamaged export opens
    with pytest.raises(PipelineError) as caught:
        open_model(model)
    message = str(caught.value)
    assert message.startswith(f"{model} is not a readable ") and message.endswith("dvc repro -f export."), message
    assert "\n" not in message


@pytest.mark.parametrize("damage", EXPORT_DAMAGE)
@pytest.mark.parametrize("member", ["saved_model/saved_model.pb", "model.tflite", "model.onnx"])
def test_predict_refuses_a_damaged_export_in_one_sentence(
    digits_run: Path, tmp_path: Path, member: str, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _damaged_export(digits_run, tmp_path / "export", member, damage)
    error = _predict_error(digits_run, model, tmp_path, monkeypatch)
    assert f"{model} is not a readable " in error and "dvc repro -f export" in error, error
