"""Issue #29's goals: a prepared set larger than the memory allowed runs through the pipeline, and small data
trains no slower than before the prepared splits went to disk.

    .venv/bin/python -m bench.streaming large --size 200 --limit-gb 3      # root: it makes a cgroup v1
    .venv/bin/python -m bench.streaming small --model mlp --rounds 3
    .venv/bin/python -m bench.streaming small --model cnn --rounds 3 --epochs 2 \
        --variants before,feed=auto,checkpoint=3s

`large`: Fashion-MNIST's 70,000 images as 28x28 PNG files (train/ and test/ class folders), indexed by the
download stage, then preprocess (to --size x --size RGB: 8.4 GB of uint8 shards at 200), one epoch of train
(a small MLP), evaluate and export, each stage alone in a memory cgroup limited to --limit-gb. For each stage:
wall time, the peak of RssAnon summed over the stage's processes (sampled every 50 ms: anonymous memory, which
the kernel cannot reclaim, unlike a memory-mapped shard's pages), and the cgroup's own peak (page cache
included). Then the code before #29 (--before) runs its preprocess on the same index in the same cgroup.

`small`: full Fashion-MNIST 28x28 preprocessed in two scratch copies, this checkout and --before; then,
alternately, --rounds times, the train stage (bench/timed_train.py) in the old copy, in the new one with
train.feed=auto (held in memory, as before) and with train.feed=stream; checkpoint=3s is feed=auto saving the resume
state within the epoch every 3 s (train.checkpoint_minutes 0.05), which also times one save of that state directly
(`SAVE_PROBE`). Seconds per epoch are the median of the epochs after the first (which includes tracing).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from bench import common
from pipeline.datasets import parse_idx
from tests.harness import ENV, PROJECT_ROOT, edit_params, git_commit, make_project_repo, read_json, run

BEFORE = "d57fc2e"  # main when #29 began: prepared splits as whole .npz files, loaded into memory
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def old_copy(dest: Path, commit: str) -> Path:
    """The project as it was at `commit`, as a git repository (what make_project_repo makes of this checkout)."""
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=PROJECT_ROOT, capture_output=True,
                             check=True).stdout  # fmt: skip
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    run(["git", "init", "-q", "-b", "main"], dest)
    git_commit(dest, f"the project at {commit}")
    return dest


# ----------------------------------------------------------------------------- large: in a memory cgroup


class Cgroup:
    """A cgroup v1 memory group limited to `limit` bytes (swap too, where the kernel accounts it)."""

    def __init__(self, name: str, limit: int):
        self.path = CGROUP_ROOT / name
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(limit))
        swap = self.path / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(limit))

    def run(self, args: list[str], cwd: Path) -> dict:
        """Run `args` inside the group; its wall time, exit code, peak RssAnon over its processes, the group's peak."""
        (self.path / "memory.max_usage_in_bytes").write_text("0")
        entry = f'echo $$ > {self.path / "cgroup.procs"} && exec "$@"'
        start = time.perf_counter()
        with tempfile.TemporaryFile() as out:
            process = subprocess.Popen(["sh", "-c", entry, "sh", *args], cwd=cwd, env=ENV, stdout=out, stderr=out)
            peak_anon, peak_main = 0, 0
            while process.poll() is None:
                anon = {pid: rss_anon(pid) for pid in self.pids()}
                peak_anon = max(peak_anon, sum(anon.values()))
                peak_main = max(peak_main, anon.get(process.pid, 0))
                time.sleep(0.05)
            out.seek(0)
            log = out.read().decode(errors="replace")
        return {
            "seconds": time.perf_counter() - start,
            "returncode": process.returncode,
            "peak_rss_anon_mb": peak_anon / 1e6,
            "peak_rss_anon_main_mb": peak_main / 1e6,
            "cgroup_peak_mb": int((self.path / "memory.max_usage_in_bytes").read_text()) / 1e6,
            "failcnt": int((self.path / "memory.failcnt").read_text()),
            "log_tail": log[-1500:],
        }

    def pids(self) -> list[int]:
        return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]

    def remove(self) -> None:
        self.path.rmdir()


def rss_anon(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def write_image_folder(source: Path, dest: Path, most: int | None = None) -> int:
    """Fashion-MNIST (its first `most` images per split) as PNG files: dest/{train,test}/<class>/<n>.png; returns
    the number of images."""
    from PIL import Image

    count = 0
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = parse_idx(gzip.decompress((source / f"{prefix}-images-idx3-ubyte.gz").read_bytes()), prefix)
        labels = parse_idx(gzip.decompress((source / f"{prefix}-labels-idx1-ubyte.gz").read_bytes()), prefix)
        for number, (image, label) in enumerate(zip(images[:most], labels[:most], strict=True)):
            folder = dest / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{number:05d}.png", compress_level=1)
            count += 1
    return count


def large(args: argparse.Namespace) -> dict:
    limit = int(args.limit_gb * 1e9)
    results: dict = {"size": args.size, "limit_gb": args.limit_gb, "stages": {}}
    with tempfile.TemporaryDirectory(prefix="bench-stream-", dir=args.scratch) as scratch:
        repo = make_project_repo(Path(scratch) / "repo", untracked=True)
        started = time.perf_counter()
        results["images"] = write_image_folder(args.source, repo / "data/own/fashion", args.images)
        results["png_seconds"] = time.perf_counter() - started
        edit_params(repo, **{
            "data.dataset": "image_folder", "data.source": "data/own/fashion",
            "preprocess.image_size": [args.size, args.size], "preprocess.color_mode": "rgb",
            "train.model": "mlp", "train.mlp.hidden_units": [32], "train.epochs": 1, "train.batch_size": 256,
            "export.formats": ["saved_model", "tflite", "onnx"],
        })  # fmt: skip
        common.stage(repo, "download")
        group = Cgroup(f"bench-stream-{os.getpid()}", limit)
        try:
            for name in ("preprocess", "train", "evaluate", "export")[: 4 if args.export else 3]:
                result = group.run([common.PYTHON, "-m", f"stages.{name}", "-q"], repo)
                results["stages"][name] = result
                print(name, json.dumps({k: v for k, v in result.items() if k != "log_tail"}), flush=True)
                if result["returncode"] != 0:
                    print(result["log_tail"])
                    break
                if name == "preprocess":
                    shards = list((repo / "data/prepared").rglob("x-*.npy"))
                    results["prepared_bytes"] = sum(path.stat().st_size for path in shards)
                    results["shards"] = len(shards)
                    results["sizes"] = read_json(repo / "data/prepared/meta.json")["sizes"]
            if (repo / "metrics.json").exists():
                results["test_accuracy"] = read_json(repo / "metrics.json")["test"]["accuracy"]
            old = old_copy(Path(scratch) / "before", args.before)
            edit_params(old, **{
                "data.dataset": "image_folder", "data.source": "data/own/fashion",
                "preprocess.image_size": [args.size, args.size], "preprocess.color_mode": "rgb",
            })  # fmt: skip
            (old / "data/own").mkdir(parents=True, exist_ok=True)
            for link in ("data/raw", "data/own/fashion"):  # the same index, naming the same files
                os.symlink(repo / link, old / link)
            refused = group.run([common.PYTHON, "-m", "stages.preprocess", "-q"], old)
            results["before"] = {"returncode": refused["returncode"], "log_tail": refused["log_tail"][-600:]}
            print("before:", refused["returncode"], refused["log_tail"][-600:], flush=True)
        finally:
            group.remove()
    return results


# ----------------------------------------------------------------------------- small: side by side

# Run in the new copy: the train stage's model for its params, one step trained (the optimizer's slots exist), then
# its resume state saved as within an epoch, 7 times: the median seconds of one save and the file's size.
SAVE_PROBE = """
import json, pathlib, statistics, time
import numpy as np
from pipeline import models, resume, training
from pipeline.params import TrainParams, load_params
from pipeline.preprocessing import read_meta
params, meta = load_params(TrainParams), read_meta(pathlib.Path("data/prepared/meta.json"))
training.seed_everything(params.seed)
model = models.build_model(params, meta.input_shape, len(meta.class_names), steps_per_epoch=1)
x = np.zeros((params.batch_size, *meta.input_shape), np.float32)
model.fit(x, np.eye(len(meta.class_names), dtype=np.float32)[np.zeros(len(x), int)], verbose=0)
best, path, seconds = [w.numpy() for w in model.weights], pathlib.Path(".resume/probe/state.npz"), []
path.parent.mkdir(parents=True, exist_ok=True)
for _ in range(7):
    start = time.perf_counter()
    resume.save_state(path, model, best, resume.RunRecord("probe", steps_done=1))
    seconds.append(time.perf_counter() - start)
print(json.dumps({"save_s": statistics.median(seconds), "each_s": seconds, "state_mb": path.stat().st_size / 1e6}))
"""


def small(args: argparse.Namespace) -> dict:
    params = {
        "train.model": args.model, "train.batch_size": 32 if args.model == "mlp" else 128, "train.epochs": args.epochs,
        "train.early_stopping_patience": 0,
    }  # fmt: skip
    if args.model == "mlp":
        params |= {"train.mlp.hidden_units": [784, 100], "train.mlp.dropout": 0.0}
    known = {
        "before": {}, "feed=auto": {"train.feed": "auto", "train.checkpoint_minutes": 10},
        "feed=stream": {"train.feed": "stream", "train.checkpoint_minutes": 10},
        "checkpoint=3s": {"train.feed": "auto", "train.checkpoint_minutes": 0.05},
    }  # fmt: skip
    if unknown := set(args.variants) - set(known):
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(known)} (before first).")
    variants = {name: known[name] for name in args.variants}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="bench-stream-small-", dir=args.scratch) as scratch:
        new = make_project_repo(Path(scratch) / "new", untracked=True)
        old = old_copy(Path(scratch) / "old", args.before)
        for repo in (old, new):
            common.prepare_fashion(repo, args.source)
            edit_params(repo, **params)
        for _ in range(args.rounds):
            for name, extra in variants.items():
                repo = old if name == "before" else new
                edit_params(repo, **extra)
                timed = common.run_timed([common.PYTHON, "-m", "bench.timed_train"], repo)
                result = json.loads(timed.stdout.strip().splitlines()[-1])
                result["epoch_s"] = common.median(result["epoch_seconds"][1:])
                result["max_rss_mb"] = timed.max_rss_mb
                runs[name].append(result)
                print(name, f"{result['epoch_s']:.2f} s/epoch", result["weights_sha256"][:12], flush=True)
        if "checkpoint=3s" in variants:
            probe = run([common.PYTHON, "-c", SAVE_PROBE], new).stdout.strip().splitlines()[-1]
            save = json.loads(probe) | {"uptime": os.getloadavg()}
            print("one save of the resume state:", save, flush=True)
    summary: dict = {name: {"epoch_s": common.median([r["epoch_s"] for r in results]), "runs": results}
                     for name, results in runs.items()}  # fmt: skip
    base = summary["before"]["epoch_s"]
    print(f"| variant | s/epoch (median of {args.rounds}) | ratio to before | runs | weights |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in summary.items():
        each = ", ".join(f"{r['epoch_s']:.2f}" for r in row["runs"])
        hashes = {r["weights_sha256"][:12] for r in row["runs"]}
        print(f"| {name} | {row['epoch_s']:.2f} | {row['epoch_s'] / base:.3f} | {each} | {', '.join(hashes)} |")
    if "checkpoint=3s" in variants:
        summary["save"] = save
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("large", "small"))
    parser.add_argument("--source", type=Path, default=common.DEFAULT_FASHION)
    parser.add_argument("--before", default=BEFORE, help="the commit to compare with (small) or refuse (large)")
    parser.add_argument("--scratch", default=None, help="folder for the scratch copies (default: $TMPDIR)")
    parser.add_argument("--size", type=int, default=200, help="large: images resized to SIZE x SIZE RGB")
    parser.add_argument("--limit-gb", type=float, default=3.0, help="large: the cgroup's memory limit")
    parser.add_argument("--images", type=int, help="large: only the first IMAGES of each split (a trial run)")
    parser.add_argument("--no-export", dest="export", action="store_false", help="large: stop after evaluate")
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="small: the tutorial's dense net or CNN")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", type=lambda text: text.split(","), default=["before", "feed=auto", "feed=stream"],
                        help="small: comma-separated, of before, feed=auto, feed=stream, checkpoint=3s")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=3, help="small: per run; the first is not timed")
    args = parser.parse_args()
    info = common.machine_info()
    results = large(args) if args.part == "large" else small(args)
    name = f"streaming_{args.part}" + (f"_{args.model}" if args.part == "small" else "")
    payload = {"command": common.command_line(), "machine": info, "results": results}
    print(common.describe_machine(info), "->", common.save_results(name, payload))


if __name__ == "__main__":
    main()
