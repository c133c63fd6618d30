"""Your own data through the real pipeline: `dvc exp run`, reruns, predict, a remote, and every kind of bad data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_own_data import COUNTS, SHAPES, draw_folder, draw_shape, one_error, sha256_of

from pipeline.training import class_weights
from tests.harness import dvc, edit_params, git_commit, make_project_repo, ran_stages, read_metrics, run, stage

pytestmark = pytest.mark.slow  # dvc exp run and the stages on your own data, as subprocesses

# A small CNN that learns the shapes in seconds: 0.97-1.0 test accuracy measured, grayscale and RGB.
SHAPES_TRAINING = {
    "train.cnn.filters": [16, 32],
    "train.cnn.dense_units": 64,
    "train.steps_per_execution": 1,
    "train.epochs": 40,
    "train.batch_size": 16,
    "train.learning_rate": 0.003,
    "train.early_stopping_patience": 10,
    "export.formats": ["saved_model"],  # every format of an RGB folder's model: tests/test_serving.py
}
USE_SHAPES = [
    "-S", "data.dataset=image_folder", "-S", "data.source=data/own/shapes",
    "-S", "preprocess.image_size=[16,16]", "-S", "train.model=cnn",
]  # fmt: skip


def test_image_folder_end_to_end_with_reruns_predict_and_a_remote(tmp_path: Path) -> None:
    repo = make_project_repo(tmp_path / "repo")
    shapes = repo / "data/own/shapes"
    draw_folder(shapes, COUNTS)
    (shapes / ".DS_Store").write_bytes(b"\0")
    (shapes / "circle" / "notes.txt").write_text("drawn by the test")
    dvc(repo, "add", "data/own/shapes")
    edit_params(repo, **SHAPES_TRAINING)
    git_commit(repo, "my shapes")

    gray = dvc(repo, "exp", "run", *USE_SHAPES)
    assert ran_stages(gray.stdout) == ["download", "preprocess", "train", "evaluate", "export"]
    assert read_metrics(repo)["test"]["accuracy"] >= 0.9
    assert "skipped 2 files (1 hidden or system, 1 without an image extension; e.g." in gray.stderr
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["input_shape"] == [16, 16, 1] and meta["class_names"] == list(SHAPES)
    git_commit(repo, "grayscale run")

    # One more image: the index changes, so preprocess reruns and what follows it is out of date.
    draw_shape("circle", np.random.default_rng(99)).save(shapes / "circle" / "new.png")
    dvc(repo, "add", "data/own/shapes")
    added = dvc(repo, "repro", "preprocess")
    assert ran_stages(added.stdout) == ["download", "preprocess"]
    assert json.loads((repo / "data/prepared/meta.json").read_text())["sizes"]["train"] == meta["sizes"]["train"] + 1
    status = dvc(repo, "status").stdout
    assert "train:" in status and "evaluate:" in status

    rgb = dvc(repo, "exp", "run", *USE_SHAPES, "-S", "preprocess.color_mode=rgb")
    assert ran_stages(rgb.stdout) == ["preprocess", "train", "evaluate", "export"]
    assert read_metrics(repo)["test"]["accuracy"] >= 0.9
    assert json.loads((repo / "data/prepared/meta.json").read_text())["input_shape"] == [16, 16, 3]
    assert Image.open(repo / "reports/misclassified.png").mode == "RGB"
    assert ran_stages(dvc(repo, "repro").stdout) == []
    git_commit(repo, "rgb run")

    # New drawings, larger than the training images, PNG and JPEG: converted as the training images were.
    rng = np.random.default_rng(7)
    drawings = []
    for shape, fmt in zip(SHAPES, ("png", "jpg", "png"), strict=True):
        drawings.append(tmp_path / f"new_{shape}.{fmt}")
        draw_shape(shape, rng, 64, centred=True).save(drawings[-1])
    predicted = stage(repo, "predict", "--json", *map(str, drawings), check=True)
    assert [record["predictions"][0]["class"] for record in json.loads(predicted.stdout)] == list(SHAPES)

    # The folder, the prepared data and the model through a local-folder remote into a fresh clone.
    dvc(repo, "remote", "add", "-d", "team", str(tmp_path / "remote"))
    git_commit(repo, "team remote")
    dvc(repo, "push")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    dvc(clone, "pull")
    assert sha256_of(clone / "data/own/shapes") and (clone / "data/own/shapes/circle/new.png").is_file()
    assert ran_stages(dvc(clone, "repro").stdout) == []
    assert "up to date" in dvc(clone, "status").stdout


def test_balanced_class_weights_come_from_the_training_split() -> None:
    one_hot = np.eye(3, dtype=np.float32)[[0, 0, 0, 1]]  # 3 of class 0, 1 of class 1, none of class 2
    assert class_weights(one_hot, "none") is None
    assert class_weights(one_hot, "balanced") == pytest.approx({0: 4 / 9, 1: 4 / 3, 2: 1.0})


def write_iris_csv(path: Path, *, as_collected: bool = False) -> None:
    """Iris with its species as strings, the label column in the middle, the features shuffled, and a text
    column (petal size: small, medium or large) that preprocess one-hot encodes. `as_collected`: also a plant
    id per row, the plot it grew in (5 plants of mixed species each), the ISO date it was measured, and gaps."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    columns = ["petal width", "sepal length", "species", "petal size", "petal length", "sepal width"]
    source = {name.replace(" (cm)", ""): iris.data[:, i] for i, name in enumerate(iris.feature_names)}
    source["species"] = [iris.target_names[t] for t in iris.target]
    source["petal size"] = ["small" if cm < 2.5 else "medium" if cm < 5 else "large" for cm in source["petal length"]]
    if as_collected:
        columns = ["plant", *columns, "plot", "measured"]
        source["plant"] = [f"plant-{row:03d}" for row in range(150)]
        source["plot"] = [f"plot {row % 30}" for row in range(150)]
        days = np.datetime64("2024-05-01") + (np.arange(150) * 7) % 61
        source["measured"] = [str(day) for day in days]
    lines = [",".join(columns)]
    for row in range(len(iris.target)):
        cells = [c if isinstance(c, str) else f"{c:.1f}" for c in (source[n][row] for n in columns)]
        if as_collected and row % 17 == 5:  # gaps, as a spreadsheet export has them
            cells[columns.index("sepal width")], cells[columns.index("petal size")] = "NA", ""
        lines.append(",".join(cells))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_iris_as_collected_with_ids_groups_dates_and_gaps(tmp_path: Path) -> None:
    """The one CSV run: string labels, a plant id dropped, plots as groups, a date, gaps imputed; then the
    misclassified list names real lines, and predict fills a gap and writes its CSV."""
    repo = make_project_repo(tmp_path / "repo")
    write_iris_csv(repo / "data/own/iris.csv", as_collected=True)
    dvc(repo, "add", "data/own/iris.csv")
    git_commit(repo, "my table")
    # One export format: a table model in every format is tests/test_serving.py's.
    edit_params(repo, **{"data.dataset": "csv", "data.source": "data/own/iris.csv", "data.label_column": "species",
                         "export.formats": ["saved_model"]})  # fmt: skip
    refused = one_error(stage(repo, "download"))
    assert "data/own/iris.csv has a column that cannot be features: 'plant' holds a different text in 150" in refused
    assert "drop it with data.drop_columns: [plant]" in refused
    result = dvc(
        repo, "exp", "run", "-S", "data.drop_columns=[plant]", "-S", "data.group_column=plot",
        "-S", "preprocess.missing=impute",
    )  # fmt: skip
    assert ran_stages(result.stdout) == ["download", "preprocess", "train", "evaluate", "export"]
    assert "missing values (preprocess.missing=impute) in 9 rows, by column: 'petal size' 9, 'sepal width' 9" in (
        result.stdout + result.stderr
    )
    metrics = read_metrics(repo)
    assert metrics["test"]["accuracy"] >= 0.85 and set(metrics["per_class"]) == {"setosa", "versicolor", "virginica"}
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["table"]["dates"] == {"measured": ["year", "month", "day", "weekday", "day_of_year"]}
    assert set(meta["table"]["fill"]) == set(meta["table"]["columns"]) and "plot" not in meta["table"]["columns"]
    assert [name for name in meta["feature_names"] if name.startswith("petal size")] == [
        "petal size=large", "petal size=medium", "petal size=small"
    ]  # fmt: skip
    serving = json.loads((repo / "models/export/serving.json").read_text())
    assert serving["table"] == meta["table"]
    file_lines = (repo / "data/own/iris.csv").read_text().splitlines()
    with open(repo / "reports/misclassified.csv", encoding="utf-8") as handle:
        mistakes = list(csv.DictReader(handle))
    for mistake in mistakes:  # each names the line of the file holding that example, and its true class
        path, _, line = mistake["source"].rpartition(" line ")
        assert path == "data/own/iris.csv" and mistake["true"] in file_lines[int(line) - 1].split(",")
    assert [float(m["probability"]) for m in mistakes] == sorted(
        (float(m["probability"]) for m in mistakes), reverse=True
    )
    # New rows with the columns in yet another order, the label column left out, a gap filled as in training.
    new = tmp_path / "new.csv"
    new.write_text(
        "plant,sepal width,petal size,petal length,sepal length,petal width,measured\n"
        "p1,3.5,small,1.4,5.1,0.2,2024-06-01\np2,NA,large,5.8,7.2,2.2,2024-06-02\n"
    )
    output = tmp_path / "preds.csv"
    stage(repo, "predict", str(new), "--output", str(output), "--id-column", "plant", "--top-k", "2", check=True)
    with open(output, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["input"], row["class_1"]) for row in rows] == [("p1", "setosa"), ("p2", "virginica")]
    assert list(rows[0]) == ["input", "class_1", "probability_1", "class_2", "probability_2"]
    new.write_text("sepal width,petal size,petal length,sepal length,petal width,measured\n3.5,tiny,1.4,5.1,0.2,\n")
    refused = stage(repo, "predict", str(new))
    assert refused.returncode != 0
    assert "column 'petal size': 'tiny' is not one of the values the model was trained on (large, medium, small)" in (
        refused.stderr
    )


# ----------------------------------------------------------------------------- bad data: one sentence, nothing touched


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository whose download and preprocess stages have run on a small good folder."""
    repo = make_project_repo(tmp_path_factory.mktemp("bad") / "repo")
    draw_folder(repo / "data/own/good", {"circle": 12, "square": 12})
    edit_params(
        repo, **{"data.dataset": "image_folder", "data.source": "data/own/good", "preprocess.image_size": [8, 8]}
    )
    for name in ("download", "preprocess"):
        assert stage(repo, name).returncode == 0
    return repo


def folder(repo: Path, name: str, files: dict[str, Image.Image | str]) -> str:
    root = repo / "data/own" / name
    shutil.rmtree(root, ignore_errors=True)
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            (root / path).write_text(content)
        else:
            content.save(root / path)
    return f"data/own/{name}"


SMALL = Image.new("RGB", (10, 10), "red")


@pytest.mark.parametrize(
    ("params", "files", "message"),
    [
        ({"data.source": "data/own/nowhere"}, None, "data.source: data/own/nowhere does not exist"),
        ({"data.source": "pets"}, None, "data.source='pets' is not inside data/own/; move the data to data/own/NAME"),
        ({}, {"a/1.png": SMALL, "b/notes.txt": "x"}, "class folder data/own/bad/b holds no images"),
        ({}, {"a/1.png": SMALL}, "data/own/bad has only one class folder ('a')"),
        ({"data.dataset": "csv"}, None, "data.source: data/own/good is not a file; data.dataset=csv needs a CSV file"),
    ],
)
def test_bad_data_stops_the_download_stage(small_repo: Path, params: dict, files: dict | None, message: str) -> None:
    source = folder(small_repo, "bad", files) if files else "data/own/good"
    before = sha256_of(small_repo / "data/raw", small_repo / "data/prepared")
    edit_params(small_repo, **({"data.source": source} | params))
    try:
        assert message in one_error(stage(small_repo, "download"))
    finally:
        edit_params(small_repo, **{"data.dataset": "image_folder", "data.source": "data/own/good"})
    assert sha256_of(small_repo / "data/raw", small_repo / "data/prepared") == before


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("x,label\n1,a\n2,a\n", "data/own/t.csv: column 'label' holds only one value ('a')"),
        ("x,kind\n1,a\n2,b\n", "data/own/t.csv has no column 'label' (data.label_column)"),
        ("", "data/own/t.csv is empty"),
    ],
)
def test_bad_tables_stop_the_download_stage(small_repo: Path, table: str, message: str) -> None:
    (small_repo / "data/own/t.csv").write_text(table)
    before = sha256_of(small_repo / "data/raw")
    edit_params(small_repo, **{"data.dataset": "csv", "data.source": "data/own/t.csv"})
    try:
        assert message in one_error(stage(small_repo, "download"))
    finally:
        edit_params(small_repo, **{"data.dataset": "image_folder", "data.source": "data/own/good"})
    assert sha256_of(small_repo / "data/raw") == before


def uniform_folder(counts: dict[str, int], extra: dict[str, Image.Image | str]) -> dict[str, Image.Image | str]:
    """10x10 images, `counts` per class, plus `extra` files."""
    return {f"{name}/{i:02d}.png": SMALL for name, count in counts.items() for i in range(count)} | extra


TWO = {"a": 12, "b": 12}


@pytest.mark.parametrize(
    ("params", "files", "message"),
    [
        ({}, uniform_folder({"a": 12, "b": 3}, {}), "class 'b' has 3 examples: too few for preprocess.val_fraction"),
        ({"preprocess.image_size": []}, uniform_folder(TWO, {"a/z.png": Image.new("L", (10, 12))}),
         "data/own/bad/a/z.png is 10x12 pixels but data/own/bad/a/"),
        ({}, uniform_folder(TWO, {"a/z.jpg": "not a photo"}), "data/own/bad/a/z.jpg is not an image Pillow can read"),
        ({"preprocess.image_size": [4096, 4096], "preprocess.memory_limit_mb": 50}, uniform_folder(TWO, {}),
         "decoding holds 6 images of 4096x4096 at once (101 MB), more than 50 MB (preprocess.memory_limit_mb=50)"),
    ],
)  # fmt: skip
def test_bad_data_stops_the_preprocess_stage(small_repo: Path, params: dict, files: dict, message: str) -> None:
    edit_params(small_repo, **({"data.source": folder(small_repo, "bad", files)} | params))
    before = sha256_of(small_repo / "data/prepared")
    try:
        assert stage(small_repo, "download").returncode == 0
        assert message in one_error(stage(small_repo, "preprocess"))
    finally:
        defaults = {"preprocess.image_size": [8, 8], "preprocess.memory_limit_mb": 0}
        edit_params(small_repo, **({"data.source": "data/own/good"} | defaults))
    assert sha256_of(small_repo / "data/prepared") == before
