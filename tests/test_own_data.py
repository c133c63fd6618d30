"""Your own data: image folders and CSV tables, from real files drawn here, through real DVC and Keras."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline import decoding, images, tables
from pipeline.decoding import decode_splits
from pipeline.errors import PipelineError
from pipeline.folders import index_folder, own_source
from pipeline.images import Conversion, convert_image
from pipeline.inputs import parse_csv
from pipeline.meta import load_meta
from pipeline.prediction import describe_inputs
from pipeline.preprocessing import check_every_class_in_every_split
from pipeline.tables import delimiter_of, parse_table

COLOURS = ((200, 30, 30), (30, 150, 40), (40, 60, 210))
SHAPES = ("circle", "square", "triangle")
# Images per class: triangles are fewer, as real folders are rarely balanced.
COUNTS = {"circle": 60, "square": 60, "triangle": 36}


def draw_shape(shape: str, rng: np.random.Generator, side: int | None = None, *, centred: bool = False) -> Image.Image:
    """One filled circle, square or triangle in one of three colours, on white, of a random size and place."""
    side = side or int(rng.integers(20, 48))
    image = Image.new("RGB", (side, side), "white")
    extent = (0.8 if centred else rng.uniform(0.55, 0.9)) * side
    left, top = (
        ((side - extent) / 2,) * 2 if centred else (rng.uniform(0, side - extent), rng.uniform(0, side - extent))
    )
    colour = COLOURS[int(rng.integers(len(COLOURS)))]
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((left, top, left + extent, top + extent), fill=colour)
    elif shape == "square":
        draw.rectangle((left, top, left + extent, top + extent), fill=colour)
    else:
        draw.polygon([(left, top + extent), (left + extent, top + extent), (left + extent / 2, top)], fill=colour)
    return image


def draw_folder(root: Path, counts: dict[str, int], seed: int = 0) -> None:
    """PNG and JPEG files alternately, one subfolder per class."""
    rng = np.random.default_rng(seed)
    for shape, count in counts.items():
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = draw_shape(shape, rng)
            if i % 2:
                image.save(root / shape / f"{i:03d}.jpg", quality=90)
            else:
                image.save(root / shape / f"{i:03d}.png")


def sha256_of(*paths: Path) -> dict[str, str]:
    """Every file under `paths`, by path: to check that a failed stage left them as they were."""
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def one_error(result) -> str:
    """A failed stage's one ERROR line (and that there was exactly one, and no traceback)."""
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


# ----------------------------------------------------------------------------- converting one image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_every_format_converts_to_the_same_pixels() -> None:
    red = Image.new("RGB", (40, 20), (255, 0, 0))
    rgb, gray = Conversion("rgb", (10, 20)), Conversion("grayscale", (10, 20))
    for fmt in ("PNG", "BMP", "WEBP", "TIFF", "GIF"):
        options = {"lossless": True} if fmt == "WEBP" else {}
        pixels = convert_image(encoded(red, fmt, **options), rgb, fmt)
        assert pixels.shape == (10, 20, 3) and np.abs(pixels.astype(int) - [255, 0, 0]).max() <= 2, fmt
        assert convert_image(encoded(red, fmt, **options), gray, fmt).shape == (10, 20)
    assert np.abs(convert_image(encoded(red, "JPEG"), rgb, "jpeg").astype(int) - [255, 0, 0]).max() <= 8
    assert convert_image(encoded(red, "PNG"), gray, "png").max() == 76  # ITU-R 601-2 luma of pure red


def test_alpha_palette_16_bit_gif_frames_and_exif_orientation() -> None:
    size = Conversion("rgb", (8, 8))
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # fully transparent black -> white
    assert (convert_image(encoded(clear, "PNG"), size, "alpha") == 255).all()
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 0, 10, 200, 30])
    palette.info["transparency"] = 0
    assert (convert_image(encoded(palette, "PNG", transparency=0), size, "palette") == 255).all()
    deep = Image.fromarray(np.full((16, 16), 257 * 100, dtype=np.uint16))
    assert (convert_image(encoded(deep, "PNG"), Conversion("grayscale", (8, 8)), "16-bit") == 100).all()
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((0, 0, 255), (255, 0, 0))]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert convert_image(gif, size, "gif")[0, 0, 2] > 200  # the first frame: blue
    # A photo stored sideways: 20 wide, 10 high, with the top half dark; orientation 6 turns it upright.
    sideways = np.full((10, 20), 255, dtype=np.uint8)
    sideways[:, :10] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = convert_image(encoded(Image.fromarray(sideways), "PNG", exif=exif), Conversion("grayscale"), "exif")
    assert upright.shape == (20, 10) and upright[:10].max() == 0 and upright[10:].min() == 255


def test_plain_pngs_decode_through_libspng_to_the_pixels_pillow_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    # Bytes take the libspng path where it applies; an open file always goes through Pillow alone.
    rng = np.random.default_rng(3)
    conversions = [Conversion("rgb", (9, 14)), Conversion("grayscale", (9, 14)), Conversion("rgb"), Conversion()]
    for mode, channels in (("L", ()), ("RGB", (3,)), ("RGBA", (4,))):
        data = encoded(Image.fromarray(rng.integers(0, 256, size=(23, 31, *channels), dtype=np.uint8)), "PNG")
        with Image.open(io.BytesIO(data)) as image:
            assert images._decode_plain_png(image, data) is not None, mode
        for conversion in conversions:
            through_pillow = convert_image(io.BytesIO(data), conversion, mode)
            assert np.array_equal(convert_image(data, conversion, mode), through_pillow), (mode, conversion)
    # Pillow keeps what libspng would decode differently or not at all, and the largest images (memory).
    exif = Image.Exif()
    exif[0x0112] = 3
    plain = Image.new("RGB", (20, 10), (10, 200, 30))
    others = {
        "grey + alpha": encoded(Image.new("LA", (20, 10)), "PNG"),
        "palette": encoded(plain.convert("P"), "PNG"),
        "16-bit": encoded(Image.fromarray(np.full((10, 20), 40000, dtype=np.uint16)), "PNG"),
        "transparent colour": encoded(plain, "PNG", transparency=(10, 200, 30)),
        "exif": encoded(plain, "PNG", exif=exif),
    }
    monkeypatch.setattr(images, "FAST_PNG_MAX_PIXELS", 199)
    others["200 pixels"] = encoded(plain, "PNG")
    for name, data in others.items():
        with Image.open(io.BytesIO(data)) as image:
            assert images._decode_plain_png(image, data) is None, name
    assert convert_image(others["exif"], Conversion("rgb"), "exif").shape == (10, 20, 3)
    # A plain PNG that libspng refuses (its pixel data cut short) gets Pillow's verdict: the usual sentence.
    monkeypatch.undo()
    cut = others["200 pixels"][:-30]
    with pytest.raises(RuntimeError):
        images.pyspng.load(cut)
    with pytest.raises(PipelineError, match=r"cut.png is not a readable image"):
        convert_image(cut, Conversion(), "cut.png")


def test_bombs_huge_and_broken_images_are_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    image = encoded(Image.new("L", (40, 40)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's limit: 1,600 pixels warns, 3,200 errors
    with pytest.raises(PipelineError, match="bomb.png is too large to decode safely"):
        convert_image(image, Conversion(), "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(PipelineError, match="big.png is 40x40 pixels, more than the 1,000"):
        convert_image(image, Conversion(), "big.png")
    # A JPEG decodes at a reduced scale: 400x400 for a 16x16 target decodes at 100x100, under the cap.
    photo = encoded(Image.new("RGB", (400, 400), (0, 90, 0)), "JPEG")
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    assert convert_image(photo, Conversion("rgb", (16, 16)), "photo.jpg").shape == (16, 16, 3)
    with pytest.raises(PipelineError, match=r"cut.png is not an image Pillow can read \(.*damaged\); replace"):
        convert_image(image[: len(image) // 2], Conversion(), "cut.png")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"x.png is empty \(0 bytes\); replace or delete the file\.$"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>",
         r"x.png is not an image Pillow can read \(in another format than PNG, .*, or damaged\); replace"),
        (b"<html>Not Found</html>", r"x.png is not an image Pillow can read"),
        # 32-bit floats in 0..1: Pillow's conversion to 8 bits would make every pixel 0, silently.
        (encoded(Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)), "TIFF"),
         r"x.png holds floating-point pixels, which have no fixed range to map to 0..255; save it as an 8- or 16-bit"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["grayscale", "rgb"])
def test_files_that_are_no_image_or_have_no_pixel_scale_are_one_sentence(data: bytes, message: str, mode: str) -> None:
    with pytest.raises(PipelineError, match=message) as caught:
        convert_image(data, Conversion(mode, (4, 4)), "x.png")
    assert "BytesIO" not in str(caught.value)


# ----------------------------------------------------------------------------- indexing a folder


def test_index_sorts_classes_skips_and_counts_other_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = Path("data/own/pets")
    for name in ("dog/a.png", "cat/b.JPG", "cat/deep/c.png", "Zebra/d.gif"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(root / name, format="PNG")
    for name in (".DS_Store", "cat/Thumbs.db", "cat/.hidden.png", "dog/notes.txt", "README.md", ".git/x.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    index = index_folder(own_source("data/own/pets"))
    assert index["class_names"] == ["Zebra", "cat", "dog"]  # sorted, as image_dataset_from_directory sorts them
    assert [(path, label) for path, label, _ in index["train"]] == [
        ("data/own/pets/Zebra/d.gif", 0), ("data/own/pets/cat/b.JPG", 1),
        ("data/own/pets/cat/deep/c.png", 1), ("data/own/pets/dog/a.png", 2),
    ]  # fmt: skip
    assert index["test"] == [] and index["layout"] == "class folders"
    assert (
        "skipped 5 files (3 hidden or system, 1 without an image extension, 1 outside the class folders; e.g."
        in index["skipped"]
    )
    # A link to a folder is not entered, as `dvc add` does not follow it (its files would not be shared), and
    # says so; a link to a file is an image like any other (DVC tracks the file it points to).
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "elsewhere" / "e.png")
    (root / "cat/more").symlink_to(tmp_path / "elsewhere")
    (root / "dog/linked.png").symlink_to(tmp_path / "elsewhere" / "e.png")
    index = index_folder(own_source("data/own/pets"))
    assert [path for path, _, _ in index["train"]][-2:] == ["data/own/pets/dog/a.png", "data/own/pets/dog/linked.png"]
    assert index["skipped"].endswith(
        "; did not enter 1 link to a folder (e.g. data/own/pets/cat/more): DVC does not track what a link to a "
        "folder holds, so move the files in"
    )


def test_train_and_test_folders_give_the_official_test_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("train/a/1.png", "train/a/2.png", "train/b/3.png", "test/a/4.png", "test/b/5.png"):
        (Path("data/own/k") / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(Path("data/own/k") / name)
    index = index_folder(own_source("data/own/k"))
    assert index["layout"] == "train/ and test/ folders" and index["class_names"] == ["a", "b"]
    assert len(index["train"]) == 3 and [label for _, label, _ in index["test"]] == [0, 1]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["a/1.png"], r"has only one class folder \('a'\); a classifier needs at least two"),
        (["a/1.png", "b/notes.txt"], "class folder data/own/x/b holds no images"),
        (["1.png"], "data/own/x has no class folders"),
        (["train/a/1.png", "train/b/1.png", "test/a/1.png"], r"data/own/x/test has class folders \['a'\], but"),
        (["train/a/1.png", "train/b/1.png", "test/a/1.png", "test/b/1.png", "val/a/1.png"], "data/own/x/val: a folder"),
    ],
)
def test_bad_folders_are_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files, message) -> None:
    monkeypatch.chdir(tmp_path)
    for name in files:
        (Path("data/own/x") / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(Path("data/own/x") / name, format="PNG")
    with pytest.raises(PipelineError, match=message):
        index_folder(own_source("data/own/x"))


def _time_is_up(*_: object) -> None:
    raise TimeoutError("the index hung reading a file")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (os.mkfifo, "is not a regular file"),  # reading a pipe would wait for a writer forever
        (lambda path: path.symlink_to("/dev/zero"), "is not a regular file"),  # reading it would never end
        (lambda path: path.symlink_to(path.parent / "gone.png"), r"cannot be read \(No such file or directory\)"),
        (lambda path: path.write_bytes(b"\x89PNG" + bytes(4096)), r"is larger than [0-9.]+ MiB; no image"),
    ],
)
def test_pipes_devices_and_oversized_files_are_refused_without_reading_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make, message
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 4096)
    for name in ("a/1.png", "b/2.png"):
        (Path("data/own/x") / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(Path("data/own/x") / name)
    make(Path("data/own/x/a/odd.png"))
    signal.signal(signal.SIGALRM, _time_is_up)
    signal.alarm(30)  # a read that hangs fails the test instead of hanging the suite
    try:
        with pytest.raises(PipelineError, match=f"data/own/x/a/odd.png {message}") as caught:
            index_folder(own_source("data/own/x"))
    finally:
        signal.alarm(0)
    assert "\n" not in str(caught.value)
    with pytest.raises(PipelineError, match=f"data/own/x/a/odd.png {message}"):
        decoding.read_checked("data/own/x/a/odd.png", "0" * 64)  # preprocess reads the listed files alike


def test_sources_outside_data_own_or_missing_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for source in ("/home/me/pets", "pets", "data/own", "data/own/../../pets"):
        with pytest.raises(PipelineError, match="is not inside data/own/; move the data to data/own/NAME and track"):
            own_source(source)
    with pytest.raises(PipelineError, match="data.source: data/own/pets does not exist"):
        own_source("data/own/pets")
    with pytest.raises(PipelineError, match="data.source is empty"):
        own_source("")


# ----------------------------------------------------------------------------- decoding, memory, splits, weights


def test_decoding_checks_hashes_sizes_and_memory(tmp_path: Path) -> None:
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("L", (8, 8), 10).save(first)
    Image.new("L", (8, 6), 20).save(second)
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, second)}
    rows = np.array([[str(first), digest[first]], [str(second), digest[second]]])
    pixels = decode_splits({"train": rows[:1], "test": rows[1:]}, Conversion("grayscale", (4, 4)), 0)
    assert pixels["train"].shape == (1, 4, 4) and int(pixels["test"][0, 0, 0]) == 20
    with pytest.raises(PipelineError, match=r"b.png is 8x6 pixels but .*a.png is 8x8: images of different sizes"):
        decode_splits({"train": rows}, Conversion("grayscale"), 0)
    second.write_bytes(first.read_bytes())
    with pytest.raises(PipelineError, match="b.png changed after the download stage indexed it; run `dvc repro`"):
        decode_splits({"train": rows}, Conversion("grayscale", (4, 4)), 0)
    with pytest.raises(PipelineError, match=r"^decoding holds 1 image of 4x4 at once \(16 bytes\), more than 10 bytes"):
        decode_splits({"train": rows[:1]}, Conversion("grayscale", (4, 4)), 0.00001)  # 10 bytes


def test_decoding_in_several_processes_gives_the_same_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(24):
        path = tmp_path / f"{i:02d}.{'jpg' if i % 2 else 'png'}"
        draw_shape(SHAPES[i % 3], rng).save(path)
        rows.append([str(path), hashlib.sha256(path.read_bytes()).hexdigest()])
    files = {"train": np.array(rows[:16]), "test": np.array(rows[16:])}
    alone = decode_splits(files, Conversion("rgb", (12, 12)), 0)
    monkeypatch.setattr(decoding, "IMAGES_PER_PROCESS", 4)  # two processes on two cores
    monkeypatch.setattr(decoding, "CHUNK", 5)
    assert decoding.decoding_processes(24) == min(2, len(os.sched_getaffinity(0)))
    pooled = decode_splits(files, Conversion("rgb", (12, 12)), 0)
    for split in files:
        np.testing.assert_array_equal(pooled[split], alone[split])


def test_a_class_too_small_for_the_splits_is_named() -> None:
    labels = {"train": np.array([0, 0, 1]), "val": np.array([0, 1]), "test": np.array([0])}
    with pytest.raises(PipelineError, match="class 'dog' has 2 examples: too few for .* in the test split"):
        check_every_class_in_every_split(labels, ("cat", "dog"), 0.1, 0.2)


# ----------------------------------------------------------------------------- CSV tables


def test_csv_labels_by_name_strings_or_integers_and_feature_order() -> None:
    table = parse_table("b, species ,a\n1,dog,2\n3,cat,4\n\n5,dog,6\n", Path("t.csv"), "species")
    assert table.class_names == ("cat", "dog") and table.labels.tolist() == [1, 0, 1]
    assert table.feature_names == ("b", "a") and table.features.tolist() == [[1, 2], [3, 4], [5, 6]]
    numbered = parse_table("x,label\n1,10\n2,2\n3,10\n", Path("t.csv"), "label")
    assert numbered.class_names == ("2", "10")  # integers sort as numbers
    assert table.record.model_dump(mode="json") == {"columns": ["b", "a"], "categories": {}, "dates": {}, "fill": {}}


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_commas_semicolons_tabs_and_every_line_end_read_alike(delimiter: str, line_end: str) -> None:
    """Spreadsheets write ';' where the decimal mark is a comma, and tabs; old Macs end lines with '\\r'."""
    rows = [["mass", "species", "version", "note"], ["3.5", "dog", "1.2.3", "big; heavy, old"],
            ["4", "cat", "2.0.1", "x"], ["-1e2", "dog", "1.2.3", "tab\there"]]  # fmt: skip
    reference = parse_table("".join(",".join(f'"{c}"' for c in row) + "\n" for row in rows), Path("t.csv"), "species")
    text = line_end.join(delimiter.join(f'"{c}"' if delimiter in c or '"' in c else c for c in row) for row in rows)
    table = parse_table(text + line_end, Path("t.csv"), "species")
    assert table.features.tolist() == reference.features.tolist()
    assert table.feature_names == reference.feature_names == (
        "mass", "version=1.2.3", "version=2.0.1", "note=big; heavy, old", "note=tab\there", "note=x")  # fmt: skip
    assert table.labels.tolist() == reference.labels.tolist() == [1, 0, 1]


def test_the_delimiter_is_found_in_the_first_line_without_copying_a_huge_one() -> None:
    assert delimiter_of("a;b;c\n1,5;2;3\n") == ";"
    assert delimiter_of('"x,y";"z";w\n') == ";"  # commas inside quotes do not count
    assert delimiter_of("\n\n  \na\tb,c\tlabel\n") == "\t"
    assert delimiter_of("label\n1\n") == ","
    assert delimiter_of(";".join(["column"] * 200_000) + "\n") == ";"  # a 1.4 MB header: its head counts


def test_text_columns_are_one_hot_encoded_and_predict_encodes_new_rows_alike() -> None:
    text = "island,mass,species\nDream,3.5,a\nBiscoe,4.0,b\nTorgersen,3.0,a\nBiscoe,4.5,b\n"
    table = parse_table(text, Path("p.csv"), "species")
    assert table.record.categories == {"island": ("Biscoe", "Dream", "Torgersen")}
    assert table.feature_names == ("island=Biscoe", "island=Dream", "island=Torgersen", "mass")
    assert table.features.tolist() == [[0, 1, 0, 3.5], [1, 0, 0, 4.0], [0, 0, 1, 3.0], [1, 0, 0, 4.5]]
    # predict reads the record back from meta.json: the same columns, by name, in any order
    record = json.loads(json.dumps(table.record.model_dump(mode="json")))
    meta = {"dataset": "csv", "kind": "tabular", "input_shape": [4], "class_names": ["a", "b"], "table": record,
            "feature_names": list(table.feature_names),
            "scaling": {"method": "minmax", "min": [0, 0, 0, 0], "range": [1, 1, 1, 1]},
            "sizes": {"train": 4}, "test_split": "official", "val_split": "none"}  # fmt: skip
    spec = load_meta(meta, "meta.json")
    batch = parse_csv("mass,id,island\n4.5,7,Torgersen\n3.0,8,Dream\n", Path("new.csv"), spec)
    assert batch.x.tolist() == [[0, 0, 1, 4.5], [0, 1, 0, 3.0]]
    assert parse_csv("Biscoe,4\n", Path("bare.csv"), spec).x.tolist() == [[1, 0, 0, 4]]  # no header: file order
    assert parse_csv("mass;island\r4.5;Torgersen\r", Path("excel.csv"), spec).x.tolist() == [[0, 0, 1, 4.5]]
    with pytest.raises(PipelineError, match=r"new.csv line 2, column 'island': 'Atlantis' is not one of the values"):
        parse_csv("island,mass\nAtlantis,4\n", Path("new.csv"), spec)
    with pytest.raises(PipelineError, match=r"new.csv line 2, column 'mass' has no value; fill in every value: this"):
        parse_csv("island,mass\nDream,NA\n", Path("new.csv"), spec)
    with pytest.raises(PipelineError, match=r"new.csv line 2, column 'island' has no value; fill in"):
        parse_csv("island,mass\n,4\n", Path("new.csv"), spec)
    with pytest.raises(PipelineError, match=r"bare.csv line 1: 'heavy' is not a number"):
        parse_csv("Dream,heavy\n", Path("bare.csv"), spec)
    assert "island (one of Biscoe, Dream, Torgersen), mass" in describe_inputs(spec)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "t.csv is empty; it needs a header row"),
        ("\n\n", "t.csv is empty"),
        ("x,label\n", "t.csv has a header row but no data rows"),
        ("x,y\n1,2\n", r"t.csv has no column 'label' \(data.label_column\); its columns are x, y"),
        ("x,label\n1,a\n2\n", "t.csv line 3 has 1 values, but the header names 2 columns"),
        ("x,label\n1,a\nfour,b\n", "t.csv: column 'x' holds numbers and text \\(line 3 holds 'four'\\)"),
        ("x,label\n1,a\n2,b\n3 cm,a\n", "t.csv: column 'x' holds numbers and text \\(line 4 holds '3 cm'\\)"),
        ("id,label\n" + "".join(f"n{i},{i % 2}\n" for i in range(51)), "'id' holds a different text in 51 of 51 rows"),
        ("x,label\n1,a\ninf,b\n", "t.csv line 3, column 'x': 'inf' is not a finite number"),
        ("x,label\n1,a\n2,a\n", "t.csv: column 'label' holds only one value \\('a'\\)"),
        ("label\na\nb\n", "t.csv has no feature columns besides 'label'"),
        ("x,x,label\n1,2,a\n", "t.csv: the header names column 'x' twice"),
        # numbers in dress would become categories, their order lost
        ("x,label\n10%,a\n5%,b\n", "t.csv: column 'x' holds numbers written as text \\(line 2 holds '10%'\\); write"),
        ('x,label\n"1,500",a\n2,b\n', "column 'x' holds numbers written as text \\(line 2 holds '1,500'\\)"),
        ("x;label\n2;a\n1,5;b\n", "column 'x' holds numbers written as text \\(line 3 holds '1,5'\\)"),  # decimal comma
        ("x,label\n$5,a\n€7,b\n", "column 'x' holds numbers written as text \\(line 2 holds '\\$5'\\)"),
    ],
)
def test_bad_csv_is_one_sentence(text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message) as caught:
        parse_table(text, Path("t.csv"), "label")
    assert "\n" not in str(caught.value)


def test_a_table_too_large_to_parse_in_memory_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tables, "MAX_TABLE_BYTES", 1024)
    path = tmp_path / "t.csv"
    path.write_text("x,label\n" + "1.5,a\n2.5,b\n" * 100)
    too_large = r"t.csv is larger than [0-9.]+ MiB; a table is parsed whole, in several times its size"
    with pytest.raises(PipelineError, match=too_large):
        tables.read_table(path, "label")
    path.write_text("x,label\n1.5,a\n2.5,b\n")
    assert tables.read_table(path, "label").class_names == ("a", "b")
