"""Goal 5 (scaling): each stage's time against dataset size, as `python -m stages.<name>` processes.

    .venv/bin/python -m bench.scaling --source /usr/share/datasets/fashion-mnist --epochs 1

Datasets: iris (150), digits (1,797), and Fashion-MNIST cut to 10k, 30k and the full 70k
examples (6/7 training, 1/7 test, as in the published split). The cut files are written as
IDX .gz into a scratch folder and passed to the download stage with `data.source` and their
checksums in `data.checksums`, so every size goes through the real stages. The train stage
uses the default MLP (128 hidden units, batch 32) with a fixed `--epochs` and no early stopping.

For the three Fashion-MNIST sizes it fits time = fixed + per_example * n per stage and
reports how far each measurement is from that line; iris and digits show the fixed cost
(start-up, imports) that dominates small data.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench import common
from tests.harness import edit_params, make_project_repo

STAGES = ("download", "preprocess", "train", "evaluate")
FASHION_SIZES = (10_000, 30_000, 70_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=common.DEFAULT_FASHION)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    info = common.machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as scratch:
        repo = make_project_repo(Path(scratch) / "repo", untracked=True)
        edit_params(repo, **{"train.epochs": args.epochs, "train.early_stopping_patience": 0})
        datasets: dict[str, tuple[int, dict]] = {
            "iris": (150, {"data.dataset": "iris", "data.source": "", "data.checksums": {}}),
            "digits": (1797, {"data.dataset": "digits", "data.source": "", "data.checksums": {}}),
        }
        for size in FASHION_SIZES:
            params = {"data.dataset": "fashion_mnist", "data.source": str(args.source), "data.checksums": {}}
            if size < 70_000:
                folder = Path(scratch) / f"fashion-{size}"
                checksums = common.fashion_subset(args.source, folder, size)
                params |= {"data.source": str(folder), "data.checksums": checksums}
            datasets[f"fashion_mnist {size // 1000}k"] = (size, params)
        times: dict[str, dict[str, list[float]]] = {name: {s: [] for s in STAGES} for name in datasets}
        for _ in range(args.rounds):
            for name, (_, params) in datasets.items():
                edit_params(repo, **params)
                for stage_name in STAGES:
                    times[name][stage_name].append(common.stage(repo, stage_name).seconds)
                print(name, {s: round(v[-1], 2) for s, v in times[name].items()}, flush=True)
    medians = {name: {s: common.median(v) for s, v in row.items()} for name, row in times.items()}
    sizes = np.array(FASHION_SIZES, dtype=float)
    fits = {}
    for stage_name in STAGES:
        ys = np.array([medians[f"fashion_mnist {n // 1000}k"][stage_name] for n in FASHION_SIZES])
        slope, intercept = np.polyfit(sizes, ys, 1)
        fits[stage_name] = {
            "fixed_s": intercept,
            "us_per_example": slope * 1e6,
            "residuals_s": (ys - (intercept + slope * sizes)).tolist(),
        }
    print(f"\n{common.describe_machine(info)}\n`{common.command_line()}`\n")
    print("| dataset | examples | " + " | ".join(f"{s} s" for s in STAGES) + " |")
    print("| --- | --- |" + " --- |" * len(STAGES))
    for name, (size, _) in datasets.items():
        print(f"| {name} | {size} | " + " | ".join(f"{medians[name][s]:.2f}" for s in STAGES) + " |")
    print("\n| stage | fitted fixed s | fitted µs per example | residuals at 10k / 30k / 70k (s) |")
    print("| --- | --- | --- | --- |")
    for stage_name, fit in fits.items():
        residuals = " / ".join(f"{r:+.2f}" for r in fit["residuals_s"])
        print(f"| {stage_name} | {fit['fixed_s']:.2f} | {fit['us_per_example']:.1f} | {residuals} |")
    common.save_results("scaling", {"machine": info, "command": common.command_line(), "times": times, "fits": fits})


if __name__ == "__main__":
    main()
