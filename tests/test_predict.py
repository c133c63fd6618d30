"""predict: new images, .npy arrays and CSV rows, converted as preprocess converted the training data."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.datasets import RawDataset
from pipeline.errors import PipelineError
from pipeline.inputs import parse_csv, read_inputs
from pipeline.meta import PreparedMeta, load_meta
from pipeline.prediction import (
    as_records,
    check_model_matches,
    check_top_k,
    format_text,
    top_classes,
)
from pipeline.preprocessing import prepare_splits, scale_pixels
from tests.harness import PROJECT_ROOT, dvc, edit_params, make_project_repo, prepared_split, run, stage

FEATURES = ("length", "width", "height")


def tiny_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 17, size=(count, 8, 8)).astype(np.uint8), np.arange(count) % 2


def tiny_features(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(5.0, 2.0, size=(count, len(FEATURES))), np.arange(count) % 2


def prepared(kind: str) -> tuple[RawDataset, np.ndarray, PreparedMeta]:
    """A tiny dataset with an official test split through the real preprocess: (raw, scaled test x, spec)."""
    make = tiny_images if kind == "image" else tiny_features
    (x_train, y_train), (x_test, y_test) = make(40, 0), make(6, 1)
    raw = RawDataset(
        "tiny", kind, x_train, y_train, x_test, y_test, ("no", "yes"),
        pixel_max=16.0 if kind == "image" else None,
        feature_names=FEATURES if kind == "tabular" else (),
    )  # fmt: skip
    splits, meta = prepare_splits(raw, val_fraction=0.25, test_fraction=0.2, seed=0)
    test_x = scale_pixels(splits["test"].x, 16.0) if kind == "image" else splits["test"].x  # as train/evaluate load it
    return raw, test_x, load_meta(json.loads(json.dumps(meta.dump())), "meta.json")  # as read from meta.json


def image_meta(input_shape: tuple[int, ...], color_mode: str) -> PreparedMeta:
    """The description of a two-class model of your own images of `input_shape`, as preprocess writes it."""
    return PreparedMeta(
        dataset="image_folder", kind="image", input_shape=input_shape, class_names=("a", "b"),
        scaling={"method": "divide", "pixel_max": 255.0}, image={"color_mode": color_mode, "resize": "pillow-box"},
        sizes={"train": 8, "val": 2, "test": 2}, test_split="official", val_split="stratified 0.2",
    )  # fmt: skip


def save_png(pixels: np.ndarray, path: Path, pixel_max: float, size: int = 64) -> Path:
    """Raw pixels as an 8-bit grayscale PNG, enlarged (each pixel a block) to `size` x `size`."""
    image = Image.fromarray(np.round(pixels * 255.0 / pixel_max).astype(np.uint8), mode="L")
    image.resize((size, size), Image.Resampling.NEAREST).save(path)
    return path


# ----------------------------------------------------------------------------- scaling, as preprocess does it


def test_npy_images_scale_exactly_as_preprocess(tmp_path: Path) -> None:
    raw, expected, spec = prepared("image")
    np.save(tmp_path / "stack.npy", raw.x_test)
    np.save(tmp_path / "one.npy", raw.x_test[0][..., np.newaxis])  # a channel axis is accepted
    batch = read_inputs([tmp_path / "stack.npy", tmp_path / "one.npy"], spec)
    np.testing.assert_array_equal(batch.x, np.concatenate([expected, expected[:1]]))
    assert batch.labels[0] == f"{tmp_path / 'stack.npy'}[0]" and batch.labels[-1] == str(tmp_path / "one.npy")


def test_image_files_of_any_size_match_the_training_scaling(tmp_path: Path) -> None:
    raw, expected, spec = prepared("image")
    png = save_png(raw.x_test[0], tmp_path / "digit.png", 16.0, size=64)
    batch = read_inputs([png], spec)
    assert batch.x.shape == (1, 8, 8, 1)
    np.testing.assert_allclose(batch.x[0], expected[0], atol=0.5 / 255 + 1e-6)  # 8-bit rounding only


def test_16_bit_png_keeps_its_gray_levels(tmp_path: Path) -> None:
    raw, expected, spec = prepared("image")
    deep = np.round(raw.x_test[2].astype(np.float64) * 65535.0 / 16.0).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_allclose(read_inputs([tmp_path / "deep.png"], spec).x[0], expected[2], atol=0.5 / 255 + 1e-6)


def test_dark_on_light_rgba_and_jpeg_images_with_invert(tmp_path: Path) -> None:
    raw, expected, spec = prepared("image")
    light_on_dark = np.round(raw.x_test[1] * 255.0 / 16.0).astype(np.uint8)
    ink = Image.fromarray(255 - light_on_dark, mode="L").resize((80, 80), Image.Resampling.NEAREST)
    ink.convert("RGB").save(tmp_path / "scan.jpg", quality=95)
    # Black ink whose paper is transparent: transparent counts as white.
    transparent = Image.new("RGBA", ink.size, (0, 0, 0, 0))
    transparent.putalpha(Image.fromarray(light_on_dark, mode="L").resize(ink.size, Image.Resampling.NEAREST))
    transparent.save(tmp_path / "drawn.png")
    batch = read_inputs([tmp_path / "scan.jpg", tmp_path / "drawn.png"], spec, invert=True)
    np.testing.assert_allclose(batch.x[0], expected[1], atol=0.05)  # JPEG is lossy
    np.testing.assert_allclose(batch.x[1], expected[1], atol=1 / 255 + 1e-6)


def test_csv_and_npy_rows_scale_exactly_as_preprocess(tmp_path: Path) -> None:
    raw, expected, spec = prepared("tabular")
    order = [2, 0, 1]  # a header lets the columns come in any order, and other columns (a label, an id) be there
    lines = [",".join(FEATURES[i] for i in order) + ",label"] + [
        ",".join(str(float(row[i])) for i in order) + f",{label}"
        for row, label in zip(raw.x_test, raw.y_test, strict=True)
    ]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "bare.csv").write_text(",".join(str(float(v)) for v in raw.x_test[0]) + "\n")
    np.save(tmp_path / "rows.npy", raw.x_test)
    batch = read_inputs([tmp_path / "rows.csv", tmp_path / "bare.csv", tmp_path / "rows.npy"], spec)
    np.testing.assert_allclose(batch.x, np.concatenate([expected, expected[:1], expected]), rtol=1e-6)
    assert batch.labels[0] == f"{tmp_path / 'rows.csv'} line 2"
    assert batch.labels[len(expected)] == f"{tmp_path / 'bare.csv'} line 1"


# ----------------------------------------------------------------------------- bad inputs: one clear sentence


@pytest.mark.parametrize(
    ("kind", "name", "content", "message"),
    [
        ("image", "big.npy", np.zeros((9, 9)), r"has shape \(9, 9\), but this model takes images of shape \(8, 8\)"),
        ("image", "flat.npy", np.zeros(64), r"has shape \(64,\)"),
        ("image", "empty.npy", np.zeros((0, 8, 8)), r"has shape \(0, 8, 8\)"),
        ("image", "nan.npy", np.full((8, 8), np.nan), "NaN or infinite"),
        ("image", "text.npy", np.array(["a"] * 64).reshape(8, 8), "holds <U1 values; a numeric array is needed"),
        ("image", "rows.csv", "1,2,3\n", "a '.csv' file is not an input this image model takes"),
        ("image", "notes.txt", "hello", "a '.txt' file is not an input"),
        ("image", "fake.png", "not an image", r"fake.png is not an image Pillow can read \(in another format than PNG"),
        ("image", "blank.jpg", "", r"blank.jpg is empty \(0 bytes\); replace or delete the file\."),
        ("tabular", "wide.npy", np.zeros((2, 4)), r"takes rows of 3 features"),
        ("tabular", "photo.png", "", "a '.png' file is not an input this tabular model takes"),
        ("tabular", "short.csv", "1,2,3\n4,5\n", "line 2 has 2 values, but this model takes rows of 3 features"),
        ("tabular", "word.csv", "1,2,3\n4,five,6\n", "line 2: 'five' is not a number"),
        ("tabular", "header.csv", "length,width,depth\n1,2,3\n", r"the header lacks \['height'\]"),
        ("tabular", "twice.csv", "length,width,height,width\n1,2,3,4\n", r"names \['width'\] more than once"),
        (
            "tabular",
            "ragged.csv",
            "length,width,height,id\n1,2,3,a\n1,2,3\n",
            "line 3 has 3 values, but this model takes its header.s 4",
        ),
        ("tabular", "only_header.csv", "length,width,height\n", "has a header but no data rows"),
        ("tabular", "blank.csv", "\n\n", "has no rows"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, kind: str, name: str, content: object, message: str) -> None:
    _, _, spec = prepared(kind)
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(str(content))
    with pytest.raises(PipelineError, match=message) as caught:
        read_inputs([path], spec)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_file_pickled_array_top_k_and_mismatched_model(tmp_path: Path) -> None:
    _, _, spec = prepared("image")
    with pytest.raises(PipelineError, match="not found"):
        read_inputs([tmp_path / "absent.png"], spec)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PipelineError, match="not a readable numeric .npy array"):
        read_inputs([tmp_path / "objects.npy"], spec)  # never unpickled
    with pytest.raises(PipelineError, match="--top-k 3 is out of range: the model knows 2 classes"):
        check_top_k(3, spec)
    check_model_matches((None, 8, 8, 1), 2, spec)
    with pytest.raises(PipelineError, match=r"the model takes \(28, 28, 1\) and gives 10 classes"):
        check_model_matches((None, 28, 28, 1), 10, spec)


def test_top_classes_rank_by_probability() -> None:
    probabilities = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    ranked = top_classes(probabilities, ["a", "b", "c"], 2)
    assert ranked == [[("b", 0.7), ("c", 0.2)], [("a", 0.5), ("c", 0.3)]]
    assert format_text(["x.png", "y.png"], ranked) == "x.png: b (0.7000), c (0.2000)\ny.png: a (0.5000), c (0.3000)\n"
    assert as_records(["x.png"], ranked[:1]) == [
        {"input": "x.png", "predictions": [{"class": "b", "probability": 0.7}, {"class": "c", "probability": 0.2}]}
    ]
    assert parse_csv("1,2,3\n", Path("r.csv"), prepared("tabular")[2]).labels == ("r.csv line 1",)


# ----------------------------------------------------------------------------- the stage, end to end


def test_help_lists_the_options() -> None:
    result = stage(PROJECT_ROOT, "predict", "--help")
    assert result.returncode == 0
    for option in ("--top-k", "--json", "--invert", "--model", "--meta", "INPUT"):
        assert option in result.stdout


def test_bad_input_fails_before_tensorflow_is_imported(digits_run: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "wrong.npy", np.zeros((28, 28)))
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['predict', sys.argv[1]]\n"
        "try:\n"
        "    runpy.run_module('stages.predict', run_name='__main__')\n"
        "except SystemExit as end:\n"
        "    print('exit', end.code, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = run([sys.executable, "-c", probe, str(tmp_path / "wrong.npy")], digits_run)
    assert result.stdout.split() == ["exit", "1", "False", "False"]
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "has shape (28, 28), but this model takes images of shape (8, 8)" in errors[0]


def test_digits_model_classifies_pngs_and_npy_alike(digits_run: Path, tmp_path: Path) -> None:
    meta = json.loads((digits_run / "data/prepared/meta.json").read_text())
    x_test, labels = prepared_split(digits_run, "test")
    count, pixel_max = 20, meta["scaling"]["pixel_max"]
    raw = x_test[:count].astype(np.float64)  # prepared images are the raw 0..16 values of data/raw
    np.save(tmp_path / "digits.npy", raw)
    # Sizes that are whole multiples of 8: resizing back to 8x8 then restores the pixels exactly.
    pngs = [save_png(raw[i], tmp_path / f"digit{i:02d}.png", pixel_max, size=8 * (2 + i % 7)) for i in range(count)]
    result = stage(digits_run, "predict", "--json", "--top-k", "3", *map(str, pngs), str(tmp_path / "digits.npy"))
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 2 * count
    for record in records:
        probabilities = [p["probability"] for p in record["predictions"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert {p["class"] for p in record["predictions"]} <= set(meta["class_names"])
    from_png, from_npy = records[:count], records[count:]
    for png, npy in zip(from_png, from_npy, strict=True):
        assert png["predictions"][0]["class"] == npy["predictions"][0]["class"]
        assert png["predictions"][0]["probability"] == pytest.approx(npy["predictions"][0]["probability"], abs=0.01)
    truth = [meta["class_names"][label] for label in labels[:count]]
    hits = sum(record["predictions"][0]["class"] == name for record, name in zip(from_npy, truth, strict=True))
    assert hits >= 0.8 * count  # the model reaches ~0.97 on the whole test split


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with a (briefly) trained iris model: the tabular case."""
    repo = make_project_repo(tmp_path_factory.mktemp("iris") / "repo")
    edit_params(repo, **{"data.dataset": "iris", "train.epochs": 3})
    dvc(repo, "repro", "train")
    return repo


@pytest.mark.slow
def test_iris_model_classifies_csv_rows(iris_model: Path, tmp_path: Path) -> None:
    meta = json.loads((iris_model / "data/prepared/meta.json").read_text())
    rows = np.load(iris_model / "data/raw/iris.npz")["x"][::30]  # five raw rows, in cm
    header = ",".join(meta["feature_names"])
    (tmp_path / "flowers.csv").write_text(header + "\n" + "\n".join(",".join(map(str, row)) for row in rows) + "\n")
    np.save(tmp_path / "flowers.npy", rows)
    result = stage(iris_model, "predict", "--top-k", "3", str(tmp_path / "flowers.csv"), str(tmp_path / "flowers.npy"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines[: len(rows)]] == [
        f"{tmp_path / 'flowers.csv'} line {i}" for i in range(2, len(rows) + 2)
    ]
    for csv_line, npy_line in zip(lines[: len(rows)], lines[len(rows) :], strict=True):
        assert csv_line.split(": ", 1)[1] == npy_line.split(": ", 1)[1]  # same rows, same answer
        classes = [part.split(" (")[0] for part in csv_line.split(": ", 1)[1].split(", ")]
        assert sorted(classes) == sorted(meta["class_names"])
    image = stage(iris_model, "predict", str(tmp_path / "flowers.png"))
    assert image.returncode == 1
    assert "a '.png' file is not an input this tabular model takes" in image.stderr


def test_rgb_model_takes_image_files_and_rgb_arrays_alike(tmp_path: Path) -> None:
    spec = image_meta((8, 8, 3), "rgb")
    pixels = np.random.default_rng(5).integers(0, 256, size=(3, 8, 8, 3)).astype(np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image, mode="RGB").save(tmp_path / f"{i}.png")
    np.save(tmp_path / "one.npy", pixels[0])
    np.save(tmp_path / "stack.npy", pixels)
    files = [tmp_path / f"{i}.png" for i in range(3)]
    batch = read_inputs([*files, tmp_path / "one.npy", tmp_path / "stack.npy"], spec)
    assert batch.x.shape == (7, 8, 8, 3)
    np.testing.assert_array_equal(batch.x[:3], pixels.astype(np.float32) / 255)  # files and arrays: the same input
    np.testing.assert_array_equal(batch.x[3:], batch.x[[0, 0, 1, 2]])
    assert batch.labels[4] == f"{tmp_path / 'stack.npy'}[0]"
    np.save(tmp_path / "gray.npy", pixels[0, ..., 0])  # a grayscale array for an RGB model: one sentence
    with pytest.raises(PipelineError, match=r"has shape \(8, 8\), but this model takes images of shape \(8, 8, 3\)"):
        read_inputs([tmp_path / "gray.npy"], spec)


def test_a_folder_of_images_is_its_image_files_sorted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw, expected, spec = prepared("image")
    new = tmp_path / "new"
    (new / "b" / "deeper").mkdir(parents=True)
    (new / ".hidden").mkdir()
    names = ["b/deeper/2.png", "a.png", "b/1.JPG"]
    for i, name in enumerate(names):
        image = save_png(raw.x_test[i], tmp_path / f"{i}.png", 16.0)
        Image.open(image).save(new / name, format="JPEG" if name.endswith("JPG") else "PNG", quality=100)
    (new / ".hidden" / "3.png").write_bytes((new / "a.png").read_bytes())
    (new / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (new / "notes.txt").write_text("taken on Tuesday", encoding="utf-8")
    caplog.set_level(logging.INFO)
    batch = read_inputs([new, tmp_path / "0.png"], spec)
    assert batch.labels == (
        str(new / "a.png"),
        str(new / "b/1.JPG"),
        str(new / "b/deeper/2.png"),
        str(tmp_path / "0.png"),
    )
    np.testing.assert_allclose(batch.x[[0, 2, 3]], expected[[1, 0, 0]], atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(batch.x[1], expected[2], atol=0.05)  # the JPEG
    assert any("skipped 2 files (1 hidden or system, 1 without an image extension; e.g." in m for m in caplog.messages)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match=r"empty holds no images \(.png, .jpg,.*\); check the path\.$"):
        read_inputs([tmp_path / "empty"], spec)
    with pytest.raises(PipelineError, match=r"new is a folder; this tabular model takes .csv or .npy files\.$"):
        read_inputs([new], prepared("tabular")[2])
