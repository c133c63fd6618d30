"""meta.json and serving.json as one typed record, and an exported folder that predicts on its own for every input kind.

Real files drawn here (RGB, RGBA, palette and 16-bit PNGs), the real stages, the real converters and runtimes;
predict runs from a folder holding only a copy of models/export/: no data/, no repository files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_own_data import SHAPES, draw_shape
from test_own_data_pipeline import write_iris_csv

from pipeline.errors import PipelineError
from pipeline.meta import PreparedMeta, ServingDescription, load_meta, scaling_text
from tests.harness import ENV, PROJECT_ROOT, edit_params, make_project_repo, run, stage

MODELS = ("model.keras", "saved_model", "model.tflite", "model.onnx")
META = {
    "dataset": "image_folder", "kind": "image", "input_shape": [16, 16, 3], "class_names": list(SHAPES),
    "feature_names": [], "scaling": {"method": "divide", "pixel_max": 255.0},
    "image": {"color_mode": "rgb", "resize": "pillow-box"}, "sizes": {"train": 26, "val": 3, "test": 7},
    "test_split": "stratified 0.2 of the data, seed 42", "val_split": "stratified 0.1 of the training data, seed 43",
}  # fmt: skip
GRAY_META = META | {"input_shape": [16, 16, 1], "image": {"color_mode": "grayscale", "resize": "pillow-box"}}
TABLE_META = META | {
    "dataset": "csv", "kind": "tabular", "input_shape": [4], "feature_names": ["a", "b=x", "b=y", "c"],
    "scaling": {"method": "minmax", "min": [0, 0, 0, 1.5], "range": [1, 1, 1, 2]},
    "table": {"columns": ["a", "b", "c"], "categories": {"b": ["x", "y"]}},
}  # fmt: skip
del TABLE_META["image"]


# ----------------------------------------------------------------------------- the record


@pytest.mark.parametrize("data", [META, GRAY_META, TABLE_META], ids=["rgb", "grayscale", "table"])
def test_meta_and_serving_json_round_trip(data: dict) -> None:
    meta = load_meta(json.loads(json.dumps(data)), "meta.json")
    assert type(meta) is PreparedMeta and meta.dump() == data
    assert load_meta(json.loads(json.dumps(meta.dump())), "meta.json") == meta
    serving = meta.serving({"keras": "model.keras", "tflite": "model.tflite"})
    again = load_meta(json.loads(json.dumps(serving.dump())), "serving.json")  # the same loader reads both
    assert type(again) is ServingDescription and again == serving
    assert {key: value for key, value in serving.dump().items() if key in meta.dump()} == meta.dump()
    assert serving.input.shape == (None, *meta.input_shape) and serving.output.shape == (None, 3)


def test_scaling_text_names_the_colour_mode_and_channels() -> None:
    rgb = load_meta(META, "meta.json")
    gray = load_meta(GRAY_META, "meta.json")
    assert scaling_text(rgb).startswith("RGB images") and "(N, 16, 16, 3)" in scaling_text(rgb)
    assert "grayscale" not in scaling_text(rgb) and "add a channel axis" not in scaling_text(rgb)
    assert scaling_text(gray).startswith("grayscale images") and "(N, 16, 16, 1)" in scaling_text(gray)
    assert "one-hot encoded" in scaling_text(load_meta(TABLE_META, "meta.json"))


BAD_META = {
    "wrong-kind": (META | {"kind": "audio"}, "gives kind 'audio'"),
    "shape-of-other-kind": (META | {"input_shape": [16, 3]}, "gives input_shape [16, 3] for image data"),
    "shape-negative": (TABLE_META | {"input_shape": [-4]}, "gives input_shape[0] -4"),
    "scaling-unknown": (META | {"scaling": {"method": "zscore"}}, "whose method is not 'divide' or 'minmax'"),
    "scaling-of-other-kind": (META | {"scaling": TABLE_META["scaling"]}, "gives image scaling method 'minmax'"),
    "scaling-too-short": (TABLE_META | {"scaling": {"method": "minmax", "min": [0], "range": [1]}}, "4 min and range"),
    "class-names-twice": (META | {"class_names": ["circle", "circle"]}, "lists a class name twice"),
    "feature-names-mismatch": (TABLE_META | {"feature_names": ["a"]}, "lists feature names ['a'] that do not match"),
    "unknown-key": (META | {"image_size": [16, 16]}, "has a key 'image_size' that it does not know"),
    "colour-mode-mismatch": (META | {"input_shape": [16, 16, 1]}, "gives color_mode 'rgb' for images of input_shape"),
    "table-of-other-width": (TABLE_META | {"table": {"columns": ["a"], "categories": {}}}, "a table record of other"),
    "tensor-of-other-shape": (
        load_meta(META, "m").serving({}).dump()
        | {"output": {"name": "p", "dtype": "float32", "shape": [None, 9], "meaning": "m"}},
        "gives tensors of shape",
    ),  # fmt: skip
}


@pytest.mark.parametrize(("data", "problem"), BAD_META.values(), ids=BAD_META.keys())
def test_each_kind_of_bad_meta_json_is_one_sentence(data: dict, problem: str) -> None:
    where = Path("data/prepared/meta.json")
    with pytest.raises(PipelineError) as caught:
        load_meta(json.loads(json.dumps(data)), where)
    message = str(caught.value)
    assert message.startswith(f"{where} ") and problem in message, message
    assert message.endswith("; rerun the stage that writes it: dvc repro -f preprocess.") and "\n" not in message


# ----------------------------------------------------------------------------- exported folders, predicting alone


def draw_mixed_folder(root: Path, per_class: int = 12) -> None:
    """Coloured shapes saved the ways a real folder mixes them: RGBA with a transparent background, palette,
    16-bit grayscale and plain RGB PNGs."""
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        (root / shape).mkdir(parents=True)
        for i in range(per_class):
            image, path = draw_shape(shape, rng), root / shape / f"{i:02d}.png"
            if i % 4 == 0:
                image.putalpha(Image.eval(image.convert("L"), lambda v: 0 if v > 250 else 255))
            elif i % 4 == 1:
                image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
            elif i % 4 == 2:
                image = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
            image.save(path)
            assert Image.open(path).mode == ("RGBA", "P", "I;16", "RGB")[i % 4]


def run_stages(repo: Path, params: dict) -> Path:
    edit_params(repo, **params)
    for name in ("download", "preprocess", "train", "export"):
        stage(repo, name, check=True)
    return repo / "models/export"


@pytest.fixture(scope="module")
def rgb_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/export/ of an RGB image_folder run on the mixed folder: a tiny CNN, trained briefly."""
    repo = make_project_repo(tmp_path_factory.mktemp("rgb") / "repo")
    draw_mixed_folder(repo / "data/own/shapes")
    return run_stages(repo, {
        "data.dataset": "image_folder", "data.source": "data/own/shapes", "preprocess.image_size": [16, 16],
        "preprocess.color_mode": "rgb", "train.model": "cnn", "train.cnn.filters": [4], "train.cnn.dense_units": 8,
        "train.epochs": 2, "train.steps_per_execution": 1,
    })  # fmt: skip


@pytest.fixture(scope="module")
def table_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/export/ of a CSV table run (iris, a text column one-hot encoded), trained briefly."""
    repo = make_project_repo(tmp_path_factory.mktemp("table") / "repo")
    write_iris_csv(repo / "data/own/iris.csv")
    return run_stages(repo, {
        "data.dataset": "csv", "data.source": "data/own/iris.csv", "data.label_column": "species", "train.epochs": 2,
    })  # fmt: skip


def predict_elsewhere(export: Path, model: str, inputs: list[Path], tmp_path: Path) -> subprocess.CompletedProcess:
    """predict run where only a copy of `export` and the inputs are: nothing of data/ or of the repository."""
    copy = shutil.copytree(export, tmp_path / "shipped")
    assert not (tmp_path / "data").exists()
    command = [sys.executable, "-m", "stages.predict", "--model", str(copy / model), *map(str, inputs)]
    return run(command, tmp_path, check=False, env=ENV | {"PYTHONPATH": str(PROJECT_ROOT)})


def predicted_classes(result: subprocess.CompletedProcess, count: int) -> list[str]:
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == count, result.stdout
    return [line.split(": ", 1)[1].split(" (")[0] for line in lines]


@pytest.mark.slow  # a pipeline run, shared by the module
def test_the_rgb_serving_json_describes_its_images(rgb_export: Path) -> None:
    description = json.loads((rgb_export / "serving.json").read_text())
    assert description["image"] == {"color_mode": "rgb", "resize": "pillow-box"}
    assert description["input"]["shape"] == [None, 16, 16, 3]
    assert description["scaling_text"].startswith("RGB images") and "(N, 16, 16, 3)" in description["scaling_text"]


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_an_exported_rgb_model_predicts_image_files_alone(rgb_export: Path, model: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    draw_shape("circle", rng, 40, centred=True).save(tmp_path / "circle.png")
    rgba = draw_shape("square", rng, 24, centred=True).convert("RGBA")
    rgba.save(tmp_path / "square.png")
    result = predict_elsewhere(rgb_export, model, [tmp_path / "circle.png", tmp_path / "square.png"], tmp_path)
    assert set(predicted_classes(result, 2)) <= set(SHAPES)


@pytest.mark.parametrize("model", MODELS)
def test_an_exported_grayscale_model_predicts_image_files_alone(digits_run: Path, model: str, tmp_path: Path) -> None:
    seven = np.load(digits_run / "data/raw/digits.npz")["x"][7]
    Image.fromarray((seven * 15).astype(np.uint8)).resize((32, 32)).save(tmp_path / "seven.png")
    np.save(tmp_path / "seven.npy", seven)
    result = predict_elsewhere(digits_run / "models/export", model, [tmp_path / "seven.png", tmp_path / "seven.npy"],
                               tmp_path)  # fmt: skip
    assert set(predicted_classes(result, 2)) <= {str(digit) for digit in range(10)}


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_an_exported_table_model_predicts_csv_rows_alone(table_export: Path, model: str, tmp_path: Path) -> None:
    (tmp_path / "new.csv").write_text(
        "sepal width,petal size,petal length,sepal length,petal width\n3.5,small,1.4,5.1,0.2\n3.0,large,5.8,7.2,2.2\n"
    )
    result = predict_elsewhere(table_export, model, [tmp_path / "new.csv"], tmp_path)
    assert set(predicted_classes(result, 2)) <= {"setosa", "versicolor", "virginica"}
