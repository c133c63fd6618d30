"""Goal 4 (prepared files) and the preprocess stage's time, piece by piece: which `.npz` format to write.

    .venv/bin/python -m bench.npz_format --source /usr/share/datasets/fashion-mnist --rounds 3

Prepares full Fashion-MNIST with the pipeline's own functions (read the IDX files, split,
one-hot), then writes the three splits in each candidate format into a scratch folder
under $TMPDIR (here on the same disk as the checkout), alternately, `--rounds` times, and reports the median write
time (fsync included, as `write_npz_atomic` does), total size, and the median time to load all
three splits back as the train/evaluate stages need them (float32 pixels in [0, 1]):

- `float32 savez`: pixels divided by `pixel_max` before writing (the format until this benchmark);
- `float32 savez_compressed`;
- `uint8 savez`: the raw pixels, divided on load by `preprocessing.scale_pixels` (what preprocess
  writes now; bit-identical to the float32 file: checked);
- `uint8 savez_compressed`.

Loads read from the page cache (the files were just written), as a stage that follows
preprocess on the same machine does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import common
from pipeline.datasets import get_spec
from pipeline.io.reading import load_npz
from pipeline.preprocessing import prepare_splits, scale_pixels

FORMATS = ("float32 savez", "float32 savez_compressed", "uint8 savez", "uint8 savez_compressed")


def write(folder: Path, name: str, fmt: str, x: np.ndarray, y: np.ndarray) -> None:
    save = np.savez_compressed if fmt.endswith("compressed") else np.savez
    with open(folder / f"{name}.npz", "wb") as handle:
        save(handle, x=x, y=y)
        handle.flush()
        os.fsync(handle.fileno())


def load(folder: Path, name: str, fmt: str, pixel_max: float) -> np.ndarray:
    x = load_npz(folder / f"{name}.npz")["x"]
    return scale_pixels(x, pixel_max) if fmt.startswith("uint8") else x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=common.DEFAULT_FASHION)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    info = common.machine_info()
    steps: dict[str, list[float]] = {"read IDX .gz": [], "split + one-hot": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        raw = get_spec("fashion_mnist").read(args.source)
        steps["read IDX .gz"].append(time.perf_counter() - start)
        start = time.perf_counter()
        splits, meta = prepare_splits(raw, 0.1, 0.2, 42)
        steps["split + one-hot"].append(time.perf_counter() - start)
    pixels = {name: split.x for name, split in splits.items()}  # uint8, as preprocess stores them
    scaled = {name: scale_pixels(x, 255.0) for name, x in pixels.items()}  # float32, as the model takes them
    rows: dict[str, dict[str, list[float]]] = {fmt: {"write": [], "load": [], "bytes": []} for fmt in FORMATS}
    with tempfile.TemporaryDirectory(prefix="bench-npz-") as scratch:
        for _ in range(args.rounds):
            for fmt in FORMATS:
                folder = Path(scratch) / fmt.replace(" ", "_")
                folder.mkdir(exist_ok=True)
                start = time.perf_counter()
                for name, split in splits.items():
                    x = pixels[name] if fmt.startswith("uint8") else scaled[name]
                    write(folder, name, fmt, x, split.y)
                rows[fmt]["write"].append(time.perf_counter() - start)
                rows[fmt]["bytes"].append(sum(f.stat().st_size for f in folder.iterdir()))
                start = time.perf_counter()
                loaded = {name: load(folder, name, fmt, 255.0) for name in splits}
                rows[fmt]["load"].append(time.perf_counter() - start)
                for name in splits:
                    assert np.array_equal(loaded[name], scaled[name]), (fmt, name)
    print(f"\n{common.describe_machine(info)}\n`{common.command_line()}`\n")
    print("| step of preprocess | median s |")
    print("| --- | --- |")
    for name, values in steps.items():
        print(f"| {name} | {common.median(values):.2f} |")
    print("\n| format | size of train+val+test MB | write s (fsync) | load s (to float32) |")
    print("| --- | --- | --- | --- |")
    for fmt, row in rows.items():
        print(
            f"| {fmt} | {row['bytes'][0] / 1e6:.1f} | {common.median(row['write']):.2f} "
            f"| {common.median(row['load']):.2f} |"
        )
    common.save_results("npz_format", {"machine": info, "command": common.command_line(), "steps": steps} | rows)


if __name__ == "__main__":
    main()
