"""One image file's conversion on one core: ours (pipeline/images.py) against TensorFlow's eager decode + resize.

    .venv/bin/python -m bench.image_decode        # every 10th image of bench.image_loading's folder

Reads the files into memory first (no disk in the timing), then converts each JPEG and each PNG to
64x64 RGB three ways, one thread each, in the same process, medians of `--rounds`:
- ours: `convert_image` on the file's bytes, as preprocess calls it (plain PNGs decoded by libspng);
- Pillow alone: the same function on an open file, which always decodes with Pillow (the same pixels);
- TensorFlow: `decode_image` + `resize`, bilinear (`image_dataset_from_directory`'s default) and area
  (its `interpolation="area"`, the area averaging ours does); with the mean absolute difference of
  their pixels from ours, in grey levels.
It separates the per-file work from the process and Python overhead that bench.image_loading's
whole-folder times include.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import command_line, describe_machine, machine_info, median, save_results
from bench.image_loading import SIZE


def time_each(convert, blobs: list[bytes]) -> float:
    start = time.perf_counter()
    for blob in blobs:
        convert(blob)
    return (time.perf_counter() - start) / len(blobs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_image_loading/images"))
    parser.add_argument("--every", type=int, default=10, help="take every Nth file, sorted by path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default="image_decode", help="bench/results/ file name (default: %(default)s)")
    args = parser.parse_args()
    files = sorted(args.folder.rglob("*.*"))[:: args.every]
    if not files:
        parser.error(f"{args.folder} holds no images; run bench.image_loading first, which generates them")
    import tensorflow as tf

    from pipeline.images import Conversion, convert_image

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    conversion = Conversion("rgb", SIZE)

    def tensorflow(method: str) -> Callable[[bytes], np.ndarray]:
        def convert(blob: bytes) -> np.ndarray:
            decoded = tf.io.decode_image(blob, channels=3, expand_animations=False)
            return tf.image.resize(decoded, SIZE, method=method).numpy()

        return convert

    converters = {
        "ours": lambda blob: convert_image(blob, conversion, "bench"),
        "pillow": lambda blob: convert_image(io.BytesIO(blob), conversion, "bench"),
        "tensorflow": tensorflow("bilinear"),
        "tensorflow_area": tensorflow("area"),
    }
    rows = []
    for suffix in (".jpg", ".png"):
        blobs = [path.read_bytes() for path in files if path.suffix == suffix]
        for convert in converters.values():  # warm-up: TensorFlow's first calls trace and allocate
            time_each(convert, blobs[:20])
        runs = {name: [time_each(convert, blobs) for _ in range(args.rounds)] for name, convert in converters.items()}
        ours = np.stack([converters["ours"](blob) for blob in blobs]).astype(np.float64)
        differences = {
            name: float(np.abs(np.stack([converters[name](blob) for blob in blobs]).round().clip(0, 255) - ours).mean())
            for name in ("tensorflow", "tensorflow_area")
        }
        rows.append({"format": suffix, "files": len(blobs), "ms_per_file": {k: median(v) for k, v in runs.items()},
                     "runs_ms": runs, "mean_abs_difference_from_ours": differences})  # fmt: skip
    info = machine_info()
    print(f"{describe_machine(info)}\n`{command_line()}`\n")
    print("| format | files | ms per file: ours | Pillow alone | TF bilinear | TF area | TF's difference from ours |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        times = " | ".join(f"{row['ms_per_file'][name]:.2f}" for name in converters)
        bilinear, area = row["mean_abs_difference_from_ours"].values()
        print(f"| {row['format']} | {row['files']} | {times} | bilinear {bilinear:.2f}, area {area:.2f} |")
    save_results(args.results, {"machine": info, "command": command_line(), "rows": rows})


if __name__ == "__main__":
    main()
