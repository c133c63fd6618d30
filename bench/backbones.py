"""Pretrained backbones (docs/backbones.md): does a pretrained start beat training from scratch on a small set, and
what each backbone costs.

    .venv/bin/python -m bench.backbones transfer --seeds 0,1,2
    .venv/bin/python -m bench.backbones costs --sizes 96,128

transfer: no machine here can download ImageNet weights, so the weights are made here, through the pipeline.
  1. Fashion-MNIST split by class into two datasets, written as PNG image folders: A = T-shirt/top, trouser,
     pullover, dress, coat (--pretrain-per-class images each); B = sandal, shirt, sneaker, bag, ankle boot
     (--per-class training images each, and 200 test images each from the official test split).
  2. The train stage trains mobilenet_v3_small from scratch on A (weights none); its backbone's weights are saved
     as data/backbone/fashion_a.weights.h5, as docs/backbones.md shows.
  3. On B, for each seed: the train stage from that file (frozen, then fine-tuned) and from `weights: none`, with
     the same number of epochs; then the evaluate stage. Test accuracy and train-stage wall time of each.
costs: for each backbone (from scratch) and the CNN at each image size, on a folder of drawn RGB shapes: the train
  stage through bench/timed_train.py (the median epoch after the first), evaluate and export, each stage's peak
  RSS, then the formats' sizes and latencies through bench/export_latency.py's `measure`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench import common
from bench.export_latency import cpu_flags, measure, uptime
from pipeline.datasets import parse_idx
from tests.harness import edit_params, make_project_repo, read_json

CLASS_NAMES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
IMAGE_FOLDER = {"data.dataset": "image_folder", "train.steps_per_execution": 1, "train.early_stopping_patience": 0}


def read_fashion(source: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for kind in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"):
        name = f"{prefix}-{kind}"
        arrays.append(parse_idx(gzip.decompress((source / name).read_bytes()), name))
    return arrays[0], arrays[1]


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, classes: range, per_class: int) -> None:
    """The first `per_class` images of each class in `classes`, as PNGs in one subfolder per class name."""
    for label in classes:
        folder = root / CLASS_NAMES[label]
        folder.mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            Image.fromarray(images[index]).save(folder / f"{i:05d}.png")


def run_stages(repo: Path, names: tuple[str, ...], params: dict[str, Any]) -> dict[str, common.Timed]:
    edit_params(repo, **params)
    return {name: common.stage(repo, name) for name in names}


def transfer(args: argparse.Namespace, repo: Path) -> dict[str, Any]:
    train_x, train_y = read_fashion(args.source, "train")
    test_x, test_y = read_fashion(args.source, "t10k")
    write_folder(repo / "data/own/fashion_a", train_x, train_y, range(5), args.pretrain_per_class)
    write_folder(repo / "data/own/fashion_b/train", train_x, train_y, range(5, 10), args.per_class)
    write_folder(repo / "data/own/fashion_b/test", test_x, test_y, range(5, 10), 200)
    common_params = IMAGE_FOLDER | {"preprocess.image_size": [32, 32], "train.model": "mobilenet_v3_small",
                                    "train.batch_size": 32}  # fmt: skip
    pretrain = run_stages(repo, ("download", "preprocess", "train"), common_params | {
        "data.source": "data/own/fashion_a", "train.backbone.weights": "none", "train.backbone.frozen_epochs": 0,
        "train.epochs": args.pretrain_epochs, "train.learning_rate": 0.002, "train.seed": 100,
    })  # fmt: skip
    save = "from pathlib import Path; from pipeline.models import load_model; load_model(Path('models/model.keras'))" \
           ".get_layer('backbone').save_weights('data/backbone/fashion_a.weights.h5')"  # fmt: skip
    common.run_timed([common.PYTHON, "-c", save], repo)
    pretrained_accuracy = read_json(repo / "reports/live.json")["best_val_accuracy"]
    run_stages(repo, ("download", "preprocess"), {"data.source": "data/own/fashion_b"})
    starts = {
        "pretrained": {"train.backbone.weights": "data/backbone/fashion_a.weights.h5",
                       "train.backbone.frozen_epochs": args.frozen_epochs},
        "none": {"train.backbone.weights": "none", "train.backbone.frozen_epochs": 0},
    }  # fmt: skip
    runs = []
    for seed in args.seeds:
        for start, params in starts.items():
            timed = run_stages(repo, ("train", "evaluate"), params | {"train.seed": seed, "train.epochs": args.epochs})
            runs.append({
                "seed": seed, "start": start, "test_accuracy": read_json(repo / "metrics.json")["test"]["accuracy"],
                "train_seconds": timed["train"].seconds, "train_cpu_seconds": timed["train"].cpu_seconds,
                "train_peak_rss_mb": timed["train"].max_rss_mb,
            })  # fmt: skip
            print(runs[-1], flush=True)
    summary = {
        start: {
            "median_test_accuracy": common.median([r["test_accuracy"] for r in runs if r["start"] == start]),
            "median_train_seconds": common.median([r["train_seconds"] for r in runs if r["start"] == start]),
        }
        for start in starts
    }
    return {
        "pretrain": {"seconds": pretrain["train"].seconds, "peak_rss_mb": pretrain["train"].max_rss_mb,
                     "best_val_accuracy": pretrained_accuracy},
        "runs": runs, "summary": summary,
    }  # fmt: skip


def draw_shapes(root: Path, per_class: int) -> None:
    from tests.test_own_data import draw_folder

    draw_folder(root, dict.fromkeys(("circle", "square", "triangle"), per_class))


def costs(args: argparse.Namespace, repo: Path) -> dict[str, Any]:
    from pipeline.prepared import open_split
    from pipeline.preprocessing import read_meta

    draw_shapes(repo / "data/own/shapes", args.cost_images // 3)
    models = {name: {"train.model": name, "train.backbone.weights": "none", "train.backbone.frozen_epochs": 0}
              for name in ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnetv2_b0")}  # fmt: skip
    models["cnn"] = {"train.model": "cnn", "train.cnn.pool_after_each_conv": True}
    results = {}
    for side in args.sizes:
        run_stages(repo, ("download", "preprocess"), IMAGE_FOLDER | {
            "data.source": "data/own/shapes", "preprocess.image_size": [side, side], "preprocess.color_mode": "rgb",
        })  # fmt: skip
        for name, params in models.items():
            edit_params(repo, **params | {"train.epochs": args.cost_epochs, "train.batch_size": 32})
            trained = common.run_timed([common.PYTHON, "-m", "bench.timed_train"], repo)  # the stage, epochs timed
            epochs = json.loads(trained.stdout.strip().splitlines()[-1])["epoch_seconds"]
            stages = {stage_name: common.stage(repo, stage_name) for stage_name in ("evaluate", "export")}
            export_dir = repo / "models/export"
            x_test = open_split("test", read_meta(export_dir / "serving.json"), repo / "data/prepared").x.load()
            latency = measure(export_dir, x_test, rounds=args.rounds, single=10, batches=1)
            results[f"{name}@{side}"] = {
                # The first epoch includes loading the data, building and tracing: the median of the others.
                "epoch_seconds": common.median(epochs[1:]), "epochs_seconds": epochs,
                "train_seconds": trained.seconds, "export_seconds": stages["export"].seconds,
                # Each stage's own peak: bench/launch.py starts it, so this process's TensorFlow does not count.
                "peak_rss_mb": {"train": trained.max_rss_mb} | {n: timed.max_rss_mb for n, timed in stages.items()},
                "params": read_json(repo / "models/summary.json")["params_total"], "formats": latency,
            }  # fmt: skip
            print(name, side, epochs, flush=True)
            common.save_results("backbones_costs", {"command": common.command_line(), "results": results})  # so far
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("transfer", "costs"))
    parser.add_argument("--source", type=Path, default=common.DEFAULT_FASHION, help="Fashion-MNIST's IDX .gz files")
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=[0, 1, 2])
    parser.add_argument("--pretrain-per-class", type=int, default=1000)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=100, help="training images per class of dataset B")
    parser.add_argument("--epochs", type=int, default=8, help="epochs on dataset B, both starts")
    parser.add_argument("--frozen-epochs", type=int, default=2)
    parser.add_argument("--sizes", type=lambda text: [int(s) for s in text.split(",")], default=[96, 128])
    parser.add_argument("--cost-images", type=int, default=150, help="drawn images in all for the costs")
    parser.add_argument("--cost-epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    info = common.machine_info() | {"cpu_flags": cpu_flags(), "uptime_before": uptime()}
    with tempfile.TemporaryDirectory(prefix="backbones-") as scratch:
        repo = make_project_repo(Path(scratch) / "repo", untracked=True)
        results = transfer(args, repo) if args.what == "transfer" else costs(args, repo)
    info["uptime_after"] = uptime()
    payload = {"command": common.command_line(), "machine": info, "args": vars(args) | {"source": str(args.source)},
               "results": results}  # fmt: skip
    path = common.save_results(f"backbones_{args.what}", payload)
    print(f"{common.describe_machine(info)}\nbefore: {info['uptime_before']}\nafter:  {info['uptime_after']}\n{path}")


if __name__ == "__main__":
    main()
