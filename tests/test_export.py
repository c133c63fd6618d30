"""The export stage: each format matches model.keras in its own runtime, predict runs it, the registry versions it.

Real converters (Keras's SavedModel export, the TFLite converter, tf2onnx), real runtimes
(TensorFlow, LiteRT, ONNX Runtime), real DVC + GTO in temporary git repositories.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.meta import SERVING_KEYS, PreparedMeta
from pipeline.preprocessing import read_meta
from tests.harness import ENV, PROJECT_ROOT, copy_repo, dvc, edit_params, git_commit, run, stage, tree_digest

FORMATS = ("saved_model", "tflite", "onnx")
TOLERANCE = 1e-5


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR" in line]


# ----------------------------------------------------------------------------- the digits pipeline


def test_digits_exports_match_model_keras_and_describe_themselves(digits_run: Path) -> None:
    from pipeline.export import describe_export

    figures = json.loads((digits_run / "reports/export_parity.json").read_text())
    assert figures["tolerance"] == TOLERANCE and figures["test_examples"] == 359  # the whole test split
    for name in FORMATS:
        assert figures[name]["max_abs_diff"] <= TOLERANCE, name
        assert figures[name]["tolerance_used"] == figures[name]["max_abs_diff"] / TOLERANCE, name
        assert figures[name]["top1_mismatches"] == 0 and figures[name]["top1_agreement"] == 1.0, name
        assert "size_bytes" not in figures[name], name  # logged: the SavedModel differs by bytes run to run
    export = digits_run / "models/export"
    assert (export / "model.keras").read_bytes() == (digits_run / "models/model.keras").read_bytes()
    assert (export / "saved_model/saved_model.pb").is_file()
    meta = read_meta(digits_run / "data/prepared/meta.json")
    description = json.loads((export / "serving.json").read_text())
    assert description == describe_export(meta, FORMATS)  # written by the one function, from meta.json
    assert description == meta.dump() | {key: description[key] for key in SERVING_KEYS}  # meta.json, and more
    assert description["input"] == {"name": "inputs", "dtype": "float32", "shape": [None, 8, 8, 1]}
    assert description["class_names"] == [str(digit) for digit in range(10)]
    assert description["scaling"] == {"method": "divide", "pixel_max": 16.0}
    assert description["image"] == {"color_mode": "grayscale", "resize": "pillow-box"}  # how predict converts files
    assert "grayscale images" in description["scaling_text"] and "(N, 8, 8, 1)" in description["scaling_text"]


def test_predict_prints_the_same_lines_with_every_format(digits_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    raw = np.load(digits_run / "data/raw/digits.npz")
    np.save(tmp_path / "digits.npy", raw["x"][:6])
    Image.fromarray((raw["x"][7] * 15).astype(np.uint8)).resize((32, 32)).save(tmp_path / "seven.png")
    inputs = [str(tmp_path / "digits.npy"), str(tmp_path / "seven.png")]
    outputs = {}
    for model in (
        "models/model.keras",
        "models/export/saved_model",
        "models/export/model.tflite",
        "models/export/model.onnx",
    ):
        result = stage(digits_run, "predict", "--model", model, "--top-k", "3", *inputs)
        assert result.returncode == 0, result.stderr
        outputs[model] = result.stdout
    assert len(set(outputs.values())) == 1, outputs
    assert len(outputs["models/model.keras"].splitlines()) == 7


# ----------------------------------------------------------------------------- parity, in process


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory: pytest.TempPathFactory):
    """A small CNN with batch normalisation, trained two epochs on random 8x8 images (moving statistics set)."""
    import keras

    from pipeline.models import build_cnn

    keras.utils.set_random_seed(3)
    model = build_cnn(
        (8, 8, 1),
        3,
        filters=(4, 8),
        kernel_size=3,
        pool_size=2,
        pool_after_each_conv=False,
        batch_norm=True,
        dense_units=16,
        conv_dropout=0.25,
        dense_dropout=0.5,
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(3)
    x = rng.random((200, 8, 8, 1), dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 200)]
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    model_file = tmp_path_factory.mktemp("cnn") / "model.keras"
    model.save(model_file)
    meta = PreparedMeta(
        dataset="random",
        kind="image",
        input_shape=(8, 8, 1),
        class_names=("a", "b", "c"),
        scaling={"method": "divide", "pixel_max": 16.0},
        image={"color_mode": "grayscale", "resize": "pillow-box"},
        sizes={"train": 200, "val": 0, "test": 100},
        test_split="random",
        val_split="none",
    )
    return model, model_file, meta, x[:100]


@pytest.mark.slow
def test_small_cnn_exports_match_through_their_runtimes(small_cnn, tmp_path: Path) -> None:
    from pipeline.export import export_model
    from pipeline.runtimes import open_model

    model, model_file, meta, x = small_cnn
    figures = export_model(model, model_file, meta, x, formats=FORMATS, tolerance=TOLERANCE, dest=tmp_path / "export")
    reference = model.predict(x, verbose=0)
    for name, file in (("saved_model", "saved_model"), ("tflite", "model.tflite"), ("onnx", "model.onnx")):
        assert figures[name]["max_abs_diff"] <= TOLERANCE and figures[name]["top1_mismatches"] == 0, name
        runner = open_model(tmp_path / "export" / file)
        assert runner.format == name and runner.input_shape == (None, 8, 8, 1) and runner.n_outputs == 3
        assert np.abs(runner.predict(x, batch_size=7) - reference).max() <= TOLERANCE  # batching changes nothing
    # Without saved_model in the list the SavedModel (the others' source) is not left behind.
    export_model(model, model_file, meta, x, formats=("tflite",), tolerance=TOLERANCE, dest=tmp_path / "lite")
    assert sorted(p.name for p in (tmp_path / "lite").iterdir()) == ["model.keras", "model.tflite", "serving.json"]


@pytest.mark.slow
def test_parity_check_catches_an_export_of_a_perturbed_model(small_cnn, tmp_path: Path) -> None:
    import keras

    from pipeline import export
    from pipeline.runtimes import open_model

    model, _, meta, x = small_cnn
    reference = model.predict(x, verbose=0)
    perturbed = keras.models.clone_model(model)
    weights = model.get_weights()
    weights[-2] = weights[-2].copy()
    weights[-2][0, 0] += 0.05  # one weight of the output layer
    perturbed.set_weights(weights)
    serve = export.serving_function(perturbed, meta.input_shape)
    saved_model = tmp_path / export.FORMATS["saved_model"]
    export.write_saved_model(perturbed, serve, saved_model)
    for name in FORMATS:
        target = tmp_path / export.FORMATS[name]
        if name != "saved_model":
            export.CONVERTERS[name](saved_model, serve, target)
        figures = export.parity_figures(reference, open_model(target).predict(x))
        assert 1e-4 < figures["max_abs_diff"] < 0.1, (name, figures)
        with pytest.raises(PipelineError, match=rf"the {name} export does not match model.keras") as caught:
            export.check_parity(name, figures, TOLERANCE, len(x))
        assert f"{figures['max_abs_diff']:.3g}" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_a_model_the_converters_refuse_leaves_the_earlier_export(small_cnn, tmp_path: Path) -> None:
    import keras

    from pipeline.export import export_model

    model, model_file, meta, x = small_cnn
    dest = tmp_path / "export"
    export_model(model, model_file, meta, x, formats=("tflite",), tolerance=TOLERANCE, dest=dest)
    before = tree_digest(dest)
    inputs = keras.Input((8, 8, 1))
    hidden = keras.ops.erfinv(keras.ops.tanh(keras.layers.Flatten()(inputs)))  # no LiteRT or ONNX op for Erfinv
    refused = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    for name in ("tflite", "onnx"):
        with pytest.raises(
            PipelineError, match=rf"the {name} converter.* refused the model \(ops it cannot convert: Erfinv\)"
        ) as caught:
            export_model(refused, model_file, meta, x, formats=("saved_model", name), tolerance=TOLERANCE, dest=dest)
        assert "\n" not in str(caught.value)
        assert tree_digest(dest) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch folder left


# ----------------------------------------------------------------------------- the stage's errors


def test_the_stage_has_help() -> None:
    result = stage(PROJECT_ROOT, "export", "--help")
    assert result.returncode == 0 and "python -m stages.export" in result.stdout
    assert "export: models/model.keras" in result.stdout


@pytest.mark.parametrize(
    ("formats", "message"),
    [
        ([], "'export.formats' is [], but it must be a non-empty list"),
        (["saved_model", "pmml"], "'export.formats' is ['saved_model', 'pmml'], but it must be a non-empty list"),
        (["tflite", "tflite"], "names out of saved_model, tflite, onnx"),
    ],
)
def test_missing_or_unknown_format_is_one_sentence(digits_run: Path, tmp_path: Path, formats, message) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    before = tree_digest(repo / "models/export")
    edit_params(repo, **{"export.formats": formats})
    result = stage(repo, "export")
    assert result.returncode == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert tree_digest(repo / "models/export") == before


def test_an_export_that_cannot_be_written_is_one_sentence(digits_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    models = repo / "models"
    before = tree_digest(models / "export")
    # Root ignores file modes: it needs the immutable attribute (ext4, xfs, btrfs) to be refused a write.
    if os.geteuid() == 0:
        locked = subprocess.run(["chattr", "+i", str(models)], capture_output=True, text=True, check=False)
        if locked.returncode != 0:
            pytest.skip(f"running as root on a file system without chattr +i: {locked.stderr.strip()}")
    else:
        models.chmod(0o555)
    try:
        result = stage(repo, "export")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(models)], check=True)
        else:
            models.chmod(0o755)
    assert result.returncode == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "cannot write models/export" in errors[0], result.stderr
    assert "the earlier export there is unchanged" in errors[0]
    assert tree_digest(models / "export") == before


# ----------------------------------------------------------------------------- the registry


def gto(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).parent / "gto"), *args], repo)


def test_registry_versions_and_stages_fetch_the_exact_model(digits_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    dvc(repo, "remote", "add", "-d", "store", str(tmp_path / "remote"))
    git_commit(repo, "a local-folder remote")
    dvc(repo, "push", "-q")
    gto(repo, "register", "classifier", "--version", "v1.0.0")
    first = tree_digest(repo / "models/export")

    # A retrain: another model (3 epochs do), exported in one format (v1's tflite is the one predict reads below).
    edit_params(repo, **{"train.seed": 7, "train.epochs": 3, "export.formats": ["saved_model"]})
    assert "Running stage 'export'" in dvc(repo, "repro").stdout
    git_commit(repo, "retrain with seed 7")
    dvc(repo, "push", "-q")
    gto(repo, "register", "classifier", "--version", "v1.1.0")
    gto(repo, "assign", "classifier", "--version", "v1.0.0", "--stage", "prod")
    second = tree_digest(repo / "models/export")
    assert second["model.keras"] != first["model.keras"]
    assert "reports/export_parity.json" in dvc(repo, "metrics", "show").stdout

    # Another machine: a fresh clone (no DVC cache: the files come from the remote).
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for option, out in ((["--rev", "v1.0.0"], "v1"), (["--stage", "prod"], "prod"), ([], "latest")):
        dvc(fetched, "artifacts", "get", str(clone), "classifier", *option, "-o", out)
    assert tree_digest(fetched / "v1") == first
    assert tree_digest(fetched / "prod") == first
    assert tree_digest(fetched / "latest") == second

    # The fetched folder is self-contained: predict needs nothing from the repository's data.
    np.save(tmp_path / "digit.npy", np.load(repo / "data/raw/digits.npz")["x"][0])
    elsewhere = ENV | {"PYTHONPATH": str(PROJECT_ROOT)}
    result = run(
        [
            sys.executable,
            "-m",
            "stages.predict",
            "--model",
            str(fetched / "v1/model.tflite"),
            str(tmp_path / "digit.npy"),
        ],
        tmp_path,
        env=elsewhere,
    )
    assert result.stdout.startswith(f"{tmp_path / 'digit.npy'}: 0 (")
