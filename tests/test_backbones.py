"""Pretrained backbones (Keras Applications): the model around them, weights from a file, the two phases, and one
real pipeline run on drawn RGB shapes (resume in either phase, exports, predict, a changed weights file).

Every backbone is built with weights=None or from a weights file the test writes: no test downloads anything.
"""

from __future__ import annotations

import argparse
import copy
import csv
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_own_data import SHAPES, draw_folder, draw_shape, one_error
from test_resume import start_and_kill

from pipeline import backbones, models, paths
from pipeline.errors import PipelineError
from pipeline.meta import PreparedMeta
from pipeline.params import BACKBONES, TrainParams, parse_section
from tests.harness import (
    ENV,
    PROJECT_ROOT,
    copy_repo,
    dvc,
    edit_params,
    git_commit,
    make_project_repo,
    read_json,
    run,
    stage,
)

SHIPPED = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["train"]
SMALL = "mobilenet_v3_small"


def train_params(model: str = SMALL, **backbone: object) -> TrainParams:
    """The shipped train params for `model`, from scratch, then `backbone`'s keys set unchecked (a weights file of
    the test's own lies outside data/backbone/)."""
    raw = copy.deepcopy(SHIPPED) | {"model": model, "epochs": 3}
    raw["backbone"] |= {"weights": "none", "frozen_epochs": 0}
    params = parse_section(TrainParams, raw)
    return params.model_copy(update={"backbone": params.backbone.model_copy(update=backbone)})


def trainable_count(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def with_live_statistics(model, x: np.ndarray) -> None:
    """Set the moving statistics of every batch normalisation in `model` (and in a model inside it) to those `x`
    gives it, as training leaves them. Keras starts them at 0 and 1, with which a backbone in inference mode turns
    every image into nearly zero features (some 30 layers each shrink their input): every example would get the
    same probabilities, and a parity check or a trained head would have nothing to go on."""
    import keras

    inner = [layer for outer in model.layers if isinstance(outer, keras.Model) for layer in outer.layers]
    for layer in [*model.layers, *inner]:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the statistics of this one batch, whatever they were
    model(x, training=True)


def drawn_pixels(count: int, seed: int = 0) -> np.ndarray:
    """`count` drawn shapes (test_own_data's), 32x32 RGB, as 0..255 floats: what MobileNetV3 takes."""
    rng = np.random.default_rng(seed)
    return np.stack([np.asarray(draw_shape(SHAPES[i % 3], rng, 32), np.float32) for i in range(count)])


def backbone_file(tmp_path: Path, name: str = SMALL, seed: int = 1) -> tuple[Path, list[np.ndarray]]:
    """A weights file of `name` without its top, as `model.get_layer('backbone').save_weights` writes one: random
    weights, and batch normalisation statistics of drawn shapes, as a pretrained backbone's are of its data."""
    import keras

    keras.utils.set_random_seed(seed)
    source = backbones.load_backbone(name, (32, 32), "none")
    with_live_statistics(source, drawn_pixels(16, seed))
    path = tmp_path / f"{name}.weights.h5"
    source.save_weights(path)
    return path, source.get_weights()


# ----------------------------------------------------------------------------- the model around a backbone


# Parameters of each backbone without its top at 32x32 (Keras's own counts: independent of the image size), and of
# the head on it for 3 classes: its last feature map's channels x 3 + 3.
@pytest.mark.parametrize(
    ("name", "backbone_params", "features"),
    [
        ("mobilenet_v3_small", 939_120, 576),
        # Seconds each to build: the slow tier (the fast one builds the small one, and test_models all by name).
        pytest.param("mobilenet_v3_large", 2_996_352, 960, marks=pytest.mark.slow),
        pytest.param("efficientnetv2_b0", 5_919_312, 1280, marks=pytest.mark.slow),
    ],
)
def test_each_backbone_has_its_pinned_size_and_takes_gray_or_rgb(
    name: str, backbone_params: int, features: int
) -> None:
    for channels in (1, 3):
        model = models.build_model(train_params(name), (32, 32, channels), 3)
        assert model.get_layer(backbones.BACKBONE_LAYER).count_params() == backbone_params
        assert model.count_params() == backbone_params + features * 3 + 3
        assert model.output_shape == (None, 3) and model.input_shape == (None, 32, 32, channels)
        kinds = [type(layer).__name__ for layer in model.layers]
        repeat = ["Concatenate"] if channels == 1 else []  # gray repeated to the three channels the backbone takes
        assert kinds == ["InputLayer", *repeat, "Rescaling", "Functional", "GlobalAveragePooling2D", "Dropout", "Dense"]


@pytest.mark.slow  # builds several backbones, seconds each
def test_the_model_takes_the_prepared_scale_and_gray_is_rgb_repeated() -> None:
    """Pixels in [0, 1] (as preprocess stores them) reach the backbone as 0..255; a gray image is its RGB twin."""
    import keras

    keras.utils.set_random_seed(0)
    gray = models.build_model(train_params(), (32, 32, 1), 3)
    rgb = models.build_model(train_params(), (32, 32, 3), 3)
    rgb.set_weights(gray.get_weights())
    pixels = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(gray.predict(pixels, verbose=0), rgb.predict(np.repeat(pixels, 3, -1), verbose=0))
    scaled = keras.Model(gray.input, gray.layers[2].output)(pixels)
    np.testing.assert_allclose(np.asarray(scaled), np.repeat(pixels, 3, -1) * 255, rtol=1e-6)  # MobileNetV3: 0..255


def test_efficientnet_input_scaling_is_kerass_own() -> None:
    """One Rescaling layer (which converts to ONNX) computes what EfficientNetV2's Rescaling + Normalization do."""
    import keras

    pixels = np.random.default_rng(1).random((2, 4, 4, 3), dtype=np.float32)
    keras_own = keras.Sequential([keras.layers.Rescaling(1 / 255), keras.layers.Normalization(
        mean=backbones.IMAGENET_MEAN, variance=[std**2 for std in backbones.IMAGENET_STD])])  # fmt: skip
    ours = backbones.input_scaling("efficientnetv2_b0")
    np.testing.assert_allclose(np.asarray(ours(pixels)), np.asarray(keras_own(pixels * 255)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("shape", "words"), [((31, 64, 3), "at least 32x32 pixels, but the prepared images are 31x64"),
                                              ((4,), "use train.model=mlp for tabular data")])  # fmt: skip
def test_too_small_or_tabular_inputs_are_one_sentence(shape: tuple[int, ...], words: str) -> None:
    with pytest.raises(PipelineError, match=words) as caught:
        models.build_model(train_params(), shape, 3)
    assert "\n" not in str(caught.value)


@pytest.mark.slow  # builds several backbones, seconds each
def test_the_frozen_phase_trains_the_head_and_fine_tuning_the_chosen_layers_but_batch_norm(tmp_path: Path) -> None:
    weights = str(backbone_file(tmp_path)[0])
    params = train_params(weights=weights, frozen_epochs=1, unfreeze="all", fine_tune_learning_rate=0.0005)
    model = models.build_model(params, (32, 32, 3), 3)
    assert trainable_count(model) == 576 * 3 + 3  # the head alone
    backbones.enter_phase(model, params, 0, steps_per_epoch=1)  # already in it: nothing changes
    assert backbones.current_phase(model) == backbones.FROZEN
    backbones.enter_phase(model, params, 1, steps_per_epoch=1)
    assert backbones.current_phase(model) == backbones.FINE_TUNE
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0005)
    inner = model.get_layer(backbones.BACKBONE_LAYER)
    norms = [layer for layer in inner.layers if type(layer).__name__ == "BatchNormalization"]
    assert norms and not any(layer.trainable for layer in norms)
    norm_params = sum(int(np.prod(v.shape)) for layer in norms for v in layer.weights)
    assert trainable_count(model) == model.count_params() - norm_params
    scratch = models.build_model(train_params(), (32, 32, 3), 3)  # from scratch: batch norm learns, as in any convnet
    assert trainable_count(scratch) == scratch.count_params() - norm_params // 2  # all but the moving statistics
    scratch_layers = scratch.get_layer(backbones.BACKBONE_LAYER).layers
    scratch_norms = [layer for layer in scratch_layers if type(layer).__name__ == "BatchNormalization"]
    assert {layer.momentum for layer in scratch_norms} == {backbones.SCRATCH_MOMENTUM}  # Keras's 0.999 would lag
    assert {layer.momentum for layer in norms} == {0.999}  # pretrained statistics are frozen: momentum unused
    top = train_params(weights=weights, frozen_epochs=1, unfreeze=3)
    model = models.build_model(top, (32, 32, 3), 3)
    backbones.enter_phase(model, top, 1, steps_per_epoch=1)
    last = model.get_layer(backbones.BACKBONE_LAYER).layers[-3:]  # MobileNetV3Small ends conv -> batch norm -> act
    assert [type(layer).__name__ for layer in last] == ["Conv2D", "BatchNormalization", "Activation"]
    assert trainable_count(model) == 576 * 3 + 3 + last[0].count_params()


# ----------------------------------------------------------------------------- weights from a file


@pytest.mark.slow  # builds several backbones, seconds each
def test_weights_from_a_file_are_the_ones_loaded_at_any_image_size(tmp_path: Path) -> None:
    path, saved = backbone_file(tmp_path)
    for shape in ((32, 32, 3), (48, 40, 1)):  # convolutions do not depend on the image size
        model = backbones.build_backbone_model(SMALL, shape, 3, weights=str(path), dropout=0.2)
        loaded = model.get_layer(backbones.BACKBONE_LAYER).get_weights()
        assert len(loaded) == len(saved) and all(np.array_equal(a, b) for a, b in zip(loaded, saved, strict=True))


@pytest.mark.slow  # builds several backbones, seconds each
def test_a_missing_corrupt_or_other_backbones_weights_file_is_one_sentence(tmp_path: Path) -> None:
    other, _ = backbone_file(tmp_path, "mobilenet_v3_large")
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    absent = tmp_path / "absent.weights.h5"
    cases = [(absent, "not found; put the weights file there"), (corrupt, "could not be loaded"),
             (other, "could not be loaded")]  # fmt: skip
    for path, words in cases:
        with pytest.raises(PipelineError, match=words) as caught:
            backbones.build_backbone_model(SMALL, (32, 32, 3), 3, weights=str(path), dropout=0.2)
        assert str(caught.value).startswith(f"train.backbone.weights: {path}") and "\n" not in str(caught.value)


# ----------------------------------------------------------------------------- exports of the other backbones


# The run below exports mobilenet_v3_small through the export stage; EfficientNetV2-B0 and a bfloat16 backbone are
# converted here, in process (bfloat16 to LiteRT only: the float32 twin is made for the format that needs it). Not
# mobilenet_v3_large: a minute or more here, and its ops are Small's (docs/backbones.md, BENCHMARKS.md 10b).
@pytest.mark.slow  # converts to three formats
@pytest.mark.parametrize(
    ("name", "channels", "precision", "formats"),
    [("efficientnetv2_b0", 1, "float32", ("saved_model", "tflite", "onnx")), (SMALL, 3, "mixed_bfloat16", ("tflite",))],
)
def test_each_backbone_exports_with_parity(
    name: str, channels: int, precision: str, formats: tuple[str, ...], tmp_path: Path
) -> None:
    """EfficientNetV2's swish converts to every format; a backbone in bfloat16 trains a step and exports as its
    float32 twin (pipeline/export.py), as every other model does. Within 1e-4, not export.tolerance's 1e-5: some
    50 layers of float32 sums in another order move the deeper backbones' probabilities by up to 5e-5 once their
    features are alive (measured: docs/backbones.md)."""
    import keras

    from pipeline.export import export_model

    keras.utils.set_random_seed(2)
    model = models.build_model(train_params(name).model_copy(update={"precision": precision}), (32, 32, channels), 3)
    head = model.get_layer(index=-1)
    head.set_weights([np.random.default_rng(2).normal(0, 0.5, w.shape).astype(np.float32) for w in head.get_weights()])
    pixels = drawn_pixels(16, seed=2) / 255  # as preprocess stores them: random noise would move them further
    x = pixels if channels == 3 else pixels.mean(axis=-1, keepdims=True)
    with_live_statistics(model, x)
    if precision != "float32":
        inner = model.get_layer(backbones.BACKBONE_LAYER).layers
        assert {layer.dtype_policy.name for layer in inner} == {precision} and head.dtype_policy.name == "float32"
        model.train_on_batch(x, keras.utils.to_categorical(np.arange(16) % 3, 3))
    probabilities = model.predict(x, verbose=0)
    assert np.ptp(probabilities, axis=0).max() > 0.1, "every example gets the same probabilities: parity of nothing"
    model_file = tmp_path / "model.keras"
    models.save_model_atomic(model, model_file)
    meta = PreparedMeta(
        dataset="random", kind="image", input_shape=(32, 32, channels), class_names=("a", "b", "c"),
        scaling={"method": "divide", "pixel_max": 255.0},
        image={"color_mode": "grayscale" if channels == 1 else "rgb", "resize": "pillow-box"},
        sizes={"train": 0, "val": 0, "test": 16}, test_split="random", val_split="none",
    )  # fmt: skip
    figures = export_model(
        models.load_model(model_file), model_file, meta, x, formats=formats, tolerance=1e-4, dest=tmp_path / "export"
    )
    for fmt in formats:
        assert figures[fmt]["max_abs_diff"] <= 1e-4 and figures[fmt]["top1_mismatches"] == 0, (fmt, figures[fmt])
    if precision != "float32":  # the twin computes otherwise than the bfloat16 model; how far, recorded
        assert figures["float32_twin"]["max_abs_diff"] > 0, figures["float32_twin"]


# ----------------------------------------------------------------------------- one real pipeline run

EPOCHS = 3  # one frozen, two fine-tuning
RUN_PARAMS = {
    "data.dataset": "image_folder", "data.source": "data/own/shapes", "preprocess.image_size": [32, 32],
    "preprocess.color_mode": "rgb", "train.model": SMALL, "train.backbone.weights": "data/backbone/shapes.weights.h5",
    "train.backbone.frozen_epochs": 1, "train.epochs": EPOCHS, "train.batch_size": 16, "train.steps_per_execution": 1,
    "train.early_stopping_patience": 0,
}  # fmt: skip


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dvc repro` on drawn RGB shapes with mobilenet_v3_small from a weights file the test wrote; committed.

    Read-only for tests: copy it (`copy_repo`) before changing anything.
    """
    repo = make_project_repo(tmp_path_factory.mktemp("backbone") / "repo")
    draw_folder(repo / "data/own/shapes", {"circle": 20, "square": 20, "triangle": 20})
    backbone_file(repo / "data/backbone", seed=4)[0].rename(repo / "data/backbone/shapes.weights.h5")
    dvc(repo, "add", "data/own/shapes", "data/backbone/shapes.weights.h5")
    edit_params(repo, **RUN_PARAMS)
    dvc(repo, "repro")
    git_commit(repo, "a backbone run")
    return repo


@pytest.mark.slow
def test_a_backbone_run_trains_both_phases_exports_and_predicts(
    backbone_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from stages import predict

    with open(backbone_run / paths.TRAIN_HISTORY, newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]
    parity = read_json(backbone_run / "reports/export_parity.json")
    assert {"saved_model", "tflite", "onnx"} <= set(parity), parity
    with open(backbone_run / "reports/confusion.csv", newline="") as handle:  # one class for all: parity of nothing
        assert len({row["predicted"] for row in csv.DictReader(handle)}) > 1, "the model tells no image apart"
    # The photos stay in colour in the report: the misclassified grid, and the page `dvc plots show` draws with it.
    dvc(backbone_run, "plots", "show", "-o", str(tmp_path / "report"))
    assert 'id="reports_misclassified_png"' in (tmp_path / "report/index.html").read_text()
    shown = list((tmp_path / "report/static").glob("*misclassified.png"))
    for grid in (backbone_run / paths.MISCLASSIFIED, *shown):
        pixels = np.asarray(Image.open(grid), dtype=np.int16)
        assert pixels.ndim == 3 and np.ptp(pixels[..., :3], axis=2).max() > 100, f"{grid} is not in colour"
    assert len(shown) == 1, shown
    image = tmp_path / "circle.png"
    draw_shape("circle", np.random.default_rng(3), 64, centred=True).save(image)
    monkeypatch.chdir(backbone_run)
    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    printed = []
    for model in ("models/model.keras", *(f"models/export/{name}" for name in ("saved_model", "model.tflite",
                                                                             "model.onnx"))):  # fmt: skip
        predict.main(parser.parse_args(["--model", model, str(image)]))
        printed.append(capsys.readouterr().out)
    # Every format prints the same class; probabilities agree to export.tolerance, printed to 4 places.
    assert len({line.split(" (")[0] for line in printed}) == 1, printed


def saved_state(repo: Path) -> dict[str, np.ndarray]:
    with np.load(repo / paths.RESUME_DIR / "state.npz", allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files if name != "meta"}


def positions(within: list, wanted: list) -> list[int]:
    """Where each of `wanted` (variables) sits in `within`, as the resume state numbers them."""
    index = {id(variable): i for i, variable in enumerate(within)}
    return [index[id(variable)] for variable in wanted]


@pytest.mark.slow
def test_killed_in_either_phase_the_run_resumes_to_the_same_bytes(backbone_run: Path, tmp_path: Path) -> None:
    """Killed after the frozen epoch and inside fine-tuning; each state also shows what each phase trained. Every
    epoch runs again here, in other processes, and ends in the fixture's bytes: a rerun gives the same bytes."""
    repo = copy_repo(backbone_run, tmp_path / "repo")
    for output in (paths.MODEL, paths.TRAIN_HISTORY):
        (repo / output).unlink()
    reference = models.load_model(backbone_run / paths.MODEL)  # built as the run builds it: the state's numbering
    inner = reference.get_layer(backbones.BACKBONE_LAYER)
    loaded = backbones.load_backbone(SMALL, (32, 32), str(repo / RUN_PARAMS["train.backbone.weights"])).get_weights()
    train = [sys.executable, "-m", "stages.train"]

    assert start_and_kill(train, repo, signal.SIGKILL, after_epochs=1) == 1  # at the end of the frozen phase
    state = saved_state(repo)
    after_frozen = [state[f"best_{i}"] for i in positions(reference.weights, inner.weights)]  # epoch 1 is the best
    assert all(np.array_equal(a, b) for a, b in zip(after_frozen, loaded, strict=True)), "phase one moved the backbone"

    assert start_and_kill(train, repo, signal.SIGKILL, after_epochs=2) == 2  # inside the fine-tuning phase
    state = saved_state(repo)
    norms = {id(v) for layer in inner.layers if type(layer).__name__ == "BatchNormalization" for v in layer.weights}
    numbered = positions(reference.variables, inner.weights)
    moved = {
        id(variable): not np.array_equal(state[f"model_{i}"], before)
        for i, variable, before in zip(numbered, inner.weights, loaded, strict=True)
    }
    assert not any(moved[key] for key in norms), "batch normalisation must stay in inference mode, frozen"
    # Squeeze-excite units behind a ReLU that is off for every one of these plain drawings get no gradient: left out.
    others = {v.path: moved[id(v)] for v in inner.weights if id(v) not in norms and "squeeze_excite" not in v.path}
    still = [path for path, did in others.items() if not did]
    assert len(still) <= 0.1 * len(others), f"fine-tuning left {still} of {len(others)} variables as they were"
    result = stage(repo, "train", check=True)
    assert f"resuming at epoch 3 of {EPOCHS}" in result.stderr
    for output in (paths.TRAIN_HISTORY, paths.MODEL_SUMMARY):
        assert (repo / output).read_bytes() == (backbone_run / output).read_bytes(), output
    ours = models.load_model(repo / paths.MODEL)
    for mine, theirs in zip(ours.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


@pytest.mark.slow
def test_a_changed_weights_file_makes_the_train_stage_stale(backbone_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(backbone_run, tmp_path / "repo")
    assert "up to date" in dvc(repo, "status").stdout
    weights = repo / "data/backbone/shapes.weights.h5"
    weights.write_bytes(weights.read_bytes() + b"\0")
    status = dvc(repo, "status").stdout
    assert "train:" in status and "data/backbone" in status and "preprocess:" not in status, status


@pytest.mark.slow
def test_imagenet_offline_names_the_file_keras_wanted(backbone_run: Path, tmp_path: Path) -> None:
    """No network (a proxy on a closed port, so that a machine with internet downloads nothing either)."""
    repo = copy_repo(backbone_run, tmp_path / "repo")
    edit_params(repo, **{"train.backbone.weights": "imagenet"})
    offline = ENV | {"KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9",
                     "https_proxy": "http://127.0.0.1:9"}  # fmt: skip
    result = run([sys.executable, "-m", "stages.train"], repo, check=False, env=offline)
    line = one_error(result)
    wanted = "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    assert f"could not download the {SMALL} weights from https://" in line and wanted in line, line
    assert f"copy that file to {tmp_path / 'keras' / 'models' / wanted}" in line, line
    assert (repo / paths.MODEL).read_bytes() == (backbone_run / paths.MODEL).read_bytes()  # the model stays


def test_every_backbone_name_has_a_constructor() -> None:
    assert set(backbones.CONSTRUCTORS) == set(BACKBONES)
