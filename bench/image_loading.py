"""Loading your own image folder: our download + preprocess stages against Keras's image_dataset_from_directory.

Generates a folder of JPEG and PNG images (mixed sizes up to 512x512, 10 classes) once, then, in
alternating runs, reads it into 64x64 RGB uint8 arrays (a) with this pipeline's stages in a scratch
copy of the project (download = the index: every file's sha256; preprocess = decode + resize, one
process per core) and (b) with `keras.utils.image_dataset_from_directory` (TensorFlow's decoders,
its parallel tf.data map), collected into one uint8 array, once with its default resize
(`interpolation="bilinear"`: 4 source pixels per output pixel, whatever the scale) and once with
`interpolation="area"`, the area averaging ours does (every source pixel counts). Reports images
per second and peak memory: the largest process (wait4's ru_maxrss) and the whole process tree
(every process's RSS summed, sampled every 20 ms).

    .venv/bin/python -m bench.image_loading            # 20,000 images, 3 runs each
    .venv/bin/python -m bench.image_loading --images 2000 --runs 1
    .venv/bin/python -m bench.image_loading --baseline c919c35   # also that commit's stages, alternating

`--baseline REV` runs the download + preprocess stages of a git revision too, in its own scratch copy,
alternating with this checkout's: a change's effect on speed, measured side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import (
    ENV,
    PYTHON,
    command_line,
    machine_info,
    median,
    save_results,
)
from tests.harness import PROJECT_ROOT, edit_params, make_project_repo

CLASSES = 10
SIZE = (64, 64)
KERAS_LOADER = """
import sys, time
import numpy as np
import keras
start, cpu_start = time.perf_counter(), time.process_time()
dataset = keras.utils.image_dataset_from_directory(
    sys.argv[1], image_size=(64, 64), color_mode="rgb", batch_size=256, shuffle=False, labels="inferred",
    interpolation=sys.argv[3],
)
count = int(sys.argv[2])
pixels = np.empty((count, 64, 64, 3), dtype=np.uint8)
labels = np.empty(count, dtype=np.int64)
filled = 0
for images, batch_labels in dataset:
    n = len(images)
    pixels[filled : filled + n] = np.clip(np.round(images.numpy()), 0, 255).astype(np.uint8)
    labels[filled : filled + n] = batch_labels.numpy()
    filled += n
assert filled == count, filled
print(f"loaded {time.perf_counter() - start:.3f} {time.process_time() - cpu_start:.3f}")
"""


def _draw_one(job: tuple[Path, int, int]) -> None:
    from PIL import Image, ImageDraw

    path, label, seed = job
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(48, 513, size=2))
    # A gradient with a few shapes and a little sensor-like noise: compresses about as photos do.
    ramp = np.linspace(0, 255, width, dtype=np.float32)[np.newaxis, :, np.newaxis]
    base = (ramp * rng.uniform(0.2, 1.0, size=3) + rng.uniform(0, 60, size=3)).clip(0, 255)
    noise = rng.normal(0, 3, size=(height // 2 + 1, width // 2 + 1, 1)).astype(np.float32)
    noise = noise.repeat(2, axis=0).repeat(2, axis=1)[:height, :width]
    image = Image.fromarray((base + noise).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3 + label % 4):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(8, width // 2 + 9), y0 + rng.integers(8, height // 2 + 9)
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, size=3)))
    if seed % 2:
        image.save(path.with_suffix(".jpg"), quality=90)
    else:
        image.save(path.with_suffix(".png"), compress_level=1)  # fast to write; decoding speed is alike


def generate(folder: Path, count: int) -> None:
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.*")) == count:
        return
    for label in range(CLASSES):
        (folder / f"class_{label}").mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"class_{i % CLASSES}" / f"img_{i:05d}", i % CLASSES, i) for i in range(count)]
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(_draw_one, jobs, chunksize=64))


def _tree_rss(root: int) -> int:
    """Summed RSS (bytes) of `root` and all its descendants, from /proc."""
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                    pending.extend(int(child) for child in handle.read().split())
        except (OSError, ValueError):
            continue
    return total


def timed(args: list[str], cwd: Path) -> dict[str, float | str]:
    """Wall time, the largest process's peak RSS and the process tree's peak summed RSS of one command."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        child = subprocess.Popen(args, cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        peak, done = [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _tree_rss(child.pid))
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{text[-3000:]}")
    return {
        "seconds": seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime,  # the process and every process it waited for
        "max_rss_mb": usage.ru_maxrss / 1024,
        "tree_rss_mb": peak[0] / 2**20,
        "output": text,
    }


def ours(repo: Path) -> dict[str, float]:
    download = timed([PYTHON, "-m", "stages.download", "-q"], repo)
    preprocess = timed([PYTHON, "-m", "stages.preprocess", "-q"], repo)
    return {
        "index_s": download["seconds"],
        "decode_s": preprocess["seconds"],
        "seconds": download["seconds"] + preprocess["seconds"],
        "cpu_s": download["cpu_s"] + preprocess["cpu_s"],
        "max_rss_mb": max(download["max_rss_mb"], preprocess["max_rss_mb"]),
        "tree_rss_mb": max(download["tree_rss_mb"], preprocess["tree_rss_mb"]),
    }


def baseline_copy(rev: str, repo: Path, dest: Path) -> Path:
    """`repo` (this checkout's scratch copy, its data and params) with the code of git revision `rev`."""
    shutil.copytree(repo, dest, symlinks=True, ignore=shutil.ignore_patterns(".git", "data"))
    (dest / "data/own").mkdir(parents=True)
    (dest / "data/own/bench").symlink_to((repo / "data/own/bench").readlink())
    archive = subprocess.run(
        ["git", "archive", rev, "pipeline", "stages"], cwd=PROJECT_ROOT, capture_output=True, check=True
    )
    for folder in ("pipeline", "stages"):
        shutil.rmtree(dest / folder)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def keras_loader(folder: Path, count: int, cwd: Path, interpolation: str) -> dict[str, float]:
    result = timed([PYTHON, "-c", KERAS_LOADER, str(folder), str(count), interpolation], cwd)
    loaded, loaded_cpu = (float(v) for v in result["output"].rsplit("loaded ", 1)[1].split()[:2])
    return {"seconds": result["seconds"], "cpu_s": result["cpu_s"], "load_s": loaded, "load_cpu_s": loaded_cpu,
            "max_rss_mb": result["max_rss_mb"], "tree_rss_mb": result["tree_rss_mb"]}  # fmt: skip


def _ours_row(label: str, medians: dict[str, float], images: int) -> str:
    return (
        f"| {label}: download (index, {medians['index_s']:.1f} s) + preprocess ({medians['decode_s']:.1f} s) | "
        f"{medians['seconds']:.1f} | {medians['cpu_s']:.1f} | {images / medians['seconds']:.0f} | "
        f"{medians['max_rss_mb']:.0f} MiB | {medians['tree_rss_mb']:.0f} MiB |"
    )


def print_table(payload: dict, baseline_rev: str | None) -> None:
    summary, images, info = payload["medians"], payload["images"], payload["machine"]
    prepared_mb, folder_mb, flags = payload["prepared_arrays_mb"], payload["folder_mb"], payload["cpu_flags"]
    uptime_start, uptime_end, index_mb = payload["uptime_start"], payload["uptime_end"], payload["index_json_mb"]
    ours_ = summary["ours"]
    print(f"{images} images ({folder_mb:.0f} MB), prepared arrays {prepared_mb:.0f} MiB; {info['cpu']} {flags}")
    print(f"load: {uptime_start} -> {uptime_end}")
    print("| loader | wall s | CPU s | images per s | peak RSS, largest process | peak RSS, all processes |")
    print("|---|---|---|---|---|---|")
    print(_ours_row("ours", ours_, images))
    if baseline_rev:
        print(_ours_row(f"ours at {baseline_rev}", summary["baseline"], images))
    for name, resize in (("keras", "bilinear"), ("keras_area", "area")):
        keras_ = summary[name]
        print(
            f"| Keras ({resize}), whole process | {keras_['seconds']:.1f} | {keras_['cpu_s']:.1f} | "
            f"{images / keras_['seconds']:.0f} | {keras_['max_rss_mb']:.0f} MiB | "
            f"{keras_['tree_rss_mb']:.0f} MiB |"
        )
        print(
            f"| Keras ({resize}), the loader call alone | {keras_['load_s']:.1f} | {keras_['load_cpu_s']:.1f} | "
            f"{images / keras_['load_s']:.0f} | | |"
        )
    for name in ("keras", "keras_area"):
        keras_ = summary[name]
        print(
            f"ratio {name}/ours, wall: whole process {keras_['seconds'] / ours_['seconds']:.2f}, "
            f"loader call alone {keras_['load_s'] / ours_['seconds']:.2f}"
        )
    if baseline_rev:
        print(f"ratio {baseline_rev}/ours, wall: {summary['baseline']['seconds'] / ours_['seconds']:.2f}")
    print(f"index file {index_mb:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_image_loading/images"))
    parser.add_argument("--results", default="image_loading", help="bench/results/ file name (default: %(default)s)")
    parser.add_argument("--baseline", metavar="REV", help="also time the stages of this git revision, alternating")
    args = parser.parse_args()
    info = machine_info()
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        words = set(handle.read().split())
    flags = sorted(f for f in ("amx_bf16", "avx512_bf16") if f in words)
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    start = time.perf_counter()
    generate(args.folder, args.images)
    generate_s = time.perf_counter() - start
    folder_mb = sum(p.stat().st_size for p in args.folder.rglob("*") if p.is_file()) / 1e6
    work = Path(tempfile.mkdtemp(prefix="bench_image_loading_"))
    repo = make_project_repo(work / "repo", untracked=True)
    (repo / "data/own").mkdir(parents=True, exist_ok=True)
    (repo / "data/own/bench").symlink_to(args.folder)
    edit_params(repo, **{"data.dataset": "image_folder", "data.source": "data/own/bench",
                      "preprocess.image_size": list(SIZE), "preprocess.color_mode": "rgb"})  # fmt: skip
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "keras": [], "keras_area": []}
    if args.baseline:
        baseline = baseline_copy(args.baseline, repo, work / "baseline")
        runs["baseline"] = []
    for _ in range(args.runs):  # alternating, so a change in the machine's load hits all alike
        if args.baseline:
            runs["baseline"].append(ours(baseline))
        runs["ours"].append(ours(repo))
        runs["keras"].append(keras_loader(args.folder, args.images, repo, "bilinear"))
        runs["keras_area"].append(keras_loader(args.folder, args.images, repo, "area"))
    prepared_mb = args.images * SIZE[0] * SIZE[1] * 3 / 2**20
    index_mb = (repo / "data/raw/images.json").stat().st_size / 1e6
    summary = {
        name: {key: median([run[key] for run in results]) for key in results[0]} for name, results in runs.items()
    }
    for medians in summary.values():
        medians["images_per_s"] = args.images / medians["seconds"]
    uptime_end = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    payload = {
        "command": command_line(), "machine": info, "cpu_flags": flags, "uptime_start": uptime_start,
        "uptime_end": uptime_end, "images": args.images, "folder_mb": folder_mb, "generate_s": generate_s,
        "prepared_arrays_mb": prepared_mb, "index_json_mb": index_mb, "runs": runs, "medians": summary,
        "baseline": args.baseline,
    }  # fmt: skip
    path = save_results(args.results, payload)
    print_table(payload, args.baseline)
    print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
