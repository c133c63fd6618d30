"""Issue #8 (distributed training): the train stage on Fashion-MNIST with one process and with two.

    .venv/bin/python -m bench.distributed --source /usr/share/datasets/fashion-mnist --epochs 2

Three runs of `python -m stages.train` on the full Fashion-MNIST (54,000 training examples after
the validation split), default MLP (128 hidden units), batch 32, fixed epochs, no early stopping:

- `none`: the default engine (TensorFlow backend, one process);
- `jax x1`: `train.distributed.engine: jax` with one process;
- `jax x2`: the same with two processes started by the stage's `local` launcher on 127.0.0.1.

Per run: the stage's wall time (imports, start-up and joining included), the steady epoch time
(Keras's own `N/N - ..ms/step` line of the last epoch, times its steps), the test accuracy from the
evaluate stage, and the largest weight difference between `jax x1` and `jax x2`. On one machine the
two processes share its cores, so this measures what the collectives cost, not what a second
machine would add.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench import common
from tests.harness import edit_params, make_project_repo, read_json, read_metrics

RUNS = {
    "none": {"train.distributed.engine": "none", "train.distributed.processes": 1},
    "jax x1": {"train.distributed.engine": "jax", "train.distributed.processes": 1},
    "jax x2": {"train.distributed.engine": "jax", "train.distributed.processes": 2},
}
EPOCH_LINE = re.compile(r"^(\d+)/\1 - .*?(\d+)ms/step", re.MULTILINE)


def weights(repo: Path) -> list[np.ndarray]:
    from pipeline.models import load_model

    return [np.asarray(w) for w in load_model(repo / "models" / "model.keras").get_weights()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=common.DEFAULT_FASHION)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    info = common.machine_info()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as scratch:
        base = make_project_repo(Path(scratch) / "base", untracked=True)
        edit_params(base, **{"train.epochs": args.epochs, "train.early_stopping_patience": 0})
        common.prepare_fashion(base, args.source)
        repos = {}
        for name, params in RUNS.items():
            repo = repos[name] = Path(scratch) / name.replace(" ", "")
            shutil.copytree(base, repo, symlinks=True)
            edit_params(repo, **params)
            train = common.stage(repo, "train")
            common.stage(repo, "evaluate")
            steps, ms_per_step = map(int, EPOCH_LINE.findall(train.stdout)[-1])
            results[name] = {
                "train_seconds": train.seconds,
                "epoch_seconds": steps * ms_per_step / 1000,
                "test_accuracy": read_metrics(repo)["test"]["accuracy"],
                "best_epoch": read_json(repo / "models" / "summary.json")["best_epoch"],
                "history": (repo / "reports" / "train_history.csv").read_text(),
            }
            print(name, {k: v for k, v in results[name].items() if k != "history"}, flush=True)
        one, two = weights(repos["jax x1"]), weights(repos["jax x2"])
        difference = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two, strict=True))
    print(f"\n{common.describe_machine(info)}; load average at start {info['loadavg_at_start']:.1f}")
    print(f"Fashion-MNIST, MLP 784-128-10, batch 32, {args.epochs} epochs\n")
    print("| run | train stage (s) | steady epoch (s) | best epoch | test accuracy |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in results.items():
        seconds = f"{row['train_seconds']:.1f} | {row['epoch_seconds']:.1f}"
        print(f"| {name} | {seconds} | {row['best_epoch']} | {row['test_accuracy']:.4f} |")
    for name, row in results.items():
        print(f"\n{name} history:\n{row['history']}", end="")
    print(f"\nlargest weight difference, jax x1 vs jax x2: {difference:.2g}")
    common.save_results(
        "distributed",
        {"machine": info, "epochs": args.epochs, "runs": results, "max_weight_difference_x1_x2": difference},
    )


if __name__ == "__main__":
    main()
