"""Goal 1 (training speed) and goal 4 (peak RSS of train): the tutorial script against the train stage.

    .venv/bin/python -m bench.train_speed --model mlp --source /usr/share/datasets/fashion-mnist
    .venv/bin/python -m bench.train_speed --model cnn --rounds 1

In a scratch copy of this checkout, downloads and preprocesses full Fashion-MNIST once, then
runs, alternately and `--rounds` times each:

- `baseline`: bench/tutorial.py (plain Keras, 60,000 training images, the test split as
  validation data, the tutorial's batch size);
- `pipeline`: the train stage (bench/timed_train.py), same architecture and batch size, with
  the committed defaults (`train.steps_per_execution=64`, `train.jit_compile=false`,
  `train.onednn=true`);
- `pipeline+xla`: the same with `train.jit_compile=true`; `pipeline+no-onednn`: with `train.onednn=false`;
  `pipeline+bf16`: with `train.precision=mixed_bfloat16`;
- `pipeline+spe1` (any `+speN`, also after `+xla`): with `train.steps_per_execution=N`.

followed by the evaluate stage for test accuracy. An epoch's time is taken from the second
epoch on (the first includes tracing and compilation). The pipeline trains on 54,000 images
(10% held out for validation), the tutorial on 60,000: the ratio is reported both per epoch
and per training example. Peak RSS is the train process's own (wait4), data loading included.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from bench import common
from tests.harness import edit_params, make_project_repo, read_json, read_metrics

TUTORIAL = {"mlp": {"batch_size": 32}, "cnn": {"batch_size": 128}}


def pipeline_params(model: str, epochs: int, steps_per_execution: int) -> dict:
    params = {
        "train.model": model,
        "train.batch_size": TUTORIAL[model]["batch_size"],
        "train.epochs": epochs,
        "train.early_stopping_patience": 0,
        "train.steps_per_execution": steps_per_execution,
    }
    if model == "mlp":
        params |= {"train.mlp.hidden_units": [784, 100], "train.mlp.dropout": 0.0, "train.mlp.activation": "relu"}
    return params


def variant_params(name: str, steps_per_execution: int) -> dict:
    """The train params of a `pipeline[+xla][+no-onednn][+bf16][+speN]` variant."""
    params = {"train.jit_compile": False, "train.steps_per_execution": steps_per_execution, "train.onednn": True}
    for option in name.split("+")[1:]:
        if option == "xla":
            params["train.jit_compile"] = True
        elif option == "no-onednn":
            params["train.onednn"] = False
        elif option == "bf16":
            params["train.precision"] = "mixed_bfloat16"
        elif option.startswith("spe") and option[3:].isdigit() and int(option[3:]) >= 1:
            params["train.steps_per_execution"] = int(option[3:])
        else:
            raise SystemExit(
                f"--variants: unknown option {option!r} in {name!r}; use +xla, +no-onednn, +bf16 and/or +speN (N >= 1)."
            )
    return params


def run_variant(name: str, repo: Path, args: argparse.Namespace) -> dict:
    if name == "baseline":
        command = [common.PYTHON, "bench/tutorial.py", "--model", args.model, "--source", str(args.source)]
        timed = common.run_timed([*command, "--epochs", str(args.epochs), "--seed", "42"], repo)
        result = json.loads(timed.stdout.strip().splitlines()[-1])
    else:
        edit_params(repo, **variant_params(name, args.steps_per_execution))
        timed = common.run_timed([common.PYTHON, "-m", "bench.timed_train"], repo)
        result = json.loads(timed.stdout.strip().splitlines()[-1])
        result["train_examples"] = read_json(repo / "data/prepared/meta.json")["sizes"]["train"]
        common.stage(repo, "evaluate")
        result["test_accuracy"] = read_metrics(repo)["test"]["accuracy"]
    result["max_rss_mb"] = timed.max_rss_mb
    result["epoch_s"] = common.median(result["epoch_seconds"][1:])
    print(name, json.dumps({k: v for k, v in result.items() if k != "epoch_seconds"}), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--source", type=Path, default=common.DEFAULT_FASHION)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="per run; the first epoch is not timed")
    parser.add_argument("--steps-per-execution", type=int, default=64, help="train.steps_per_execution")
    parser.add_argument("--variants", default="baseline,pipeline,pipeline+xla")
    parser.add_argument("--results", help="name of the bench/results/ file (default: train_speed_MODEL)")
    args = parser.parse_args()
    info = common.machine_info()
    variants = args.variants.split(",")
    for name in variants:
        if name != "baseline" and name.split("+")[0] != "pipeline":
            raise SystemExit(
                f"--variants: unknown variant {name!r}; use baseline or pipeline[+xla][+no-onednn][+bf16][+speN]."
            )
        variant_params(name, args.steps_per_execution)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as scratch:
        repo = make_project_repo(Path(scratch) / "repo", untracked=True)
        common.prepare_fashion(repo, args.source)
        edit_params(repo, **pipeline_params(args.model, args.epochs, args.steps_per_execution))
        for _ in range(args.rounds):
            for name in variants:
                runs[name].append(run_variant(name, repo, args))
    summary = {}
    for name, results in runs.items():
        epoch_s = common.median([r["epoch_s"] for r in results])
        summary[name] = {
            "epoch_s": epoch_s,
            "us_per_example": epoch_s / results[0]["train_examples"] * 1e6,
            "test_accuracy": common.median([r["test_accuracy"] for r in results]),
            "max_rss_mb": max(r["max_rss_mb"] for r in results),
            "runs": results,
        }
    base = summary.get("baseline")
    print(f"\n{common.describe_machine(info)}\n`{common.command_line()}`\n")
    print("| variant | s/epoch (median) | µs per training example | ratio per epoch | ratio per example "
          "| test acc. | peak RSS MB | runs |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in summary.items():
        ratio = f"{base['epoch_s'] / row['epoch_s']:.2f}x" if base else "-"
        ratio_ex = f"{base['us_per_example'] / row['us_per_example']:.2f}x" if base else "-"
        epochs = ", ".join(f"{r['epoch_s']:.1f}" for r in row["runs"])
        print(
            f"| {name} | {row['epoch_s']:.1f} | {row['us_per_example']:.0f} | {ratio} | {ratio_ex} "
            f"| {row['test_accuracy']:.4f} | {row['max_rss_mb']:.0f} | {epochs} |"
        )
    for name in variants[1:]:
        steps = math.ceil(summary[name]["runs"][0]["train_examples"] / TUTORIAL[args.model]["batch_size"])
        iterations = {r["optimizer_iterations"] for r in summary[name]["runs"]}
        hashes = {r["weights_sha256"] for r in summary[name]["runs"]}
        print(
            f"{name}: optimizer steps {sorted(iterations)} (expected {steps * args.epochs}), "
            f"XLA effective {sorted({r['jit_compile_effective'] for r in summary[name]['runs']})}, "
            f"oneDNN effective {sorted({str(r['onednn_effective']) for r in summary[name]['runs']})}, "
            f"{len(hashes)} distinct final weights over {len(summary[name]['runs'])} runs"
        )
    payload = {"machine": info, "command": common.command_line()} | summary
    common.save_results(args.results or f"train_speed_{args.model}", payload)


if __name__ == "__main__":
    main()
