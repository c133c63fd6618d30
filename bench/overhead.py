"""Goal 3 (pipeline overhead): no-op `dvc repro`, download and preprocess times, stage start-up.

    .venv/bin/python -m bench.overhead --source /usr/share/datasets/fashion-mnist --rounds 5

1. In a scratch copy of this checkout, runs the whole pipeline once on full Fashion-MNIST (a
   one-epoch, 32-unit MLP: the size of the model does not matter for what is measured here),
   and a two-stage toy pipeline in a second scratch repository (stage 1 writes a file from a
   param, stage 2 copies it; plain `python -c`). Then times a no-op `dvc repro` in each,
   alternately, `--rounds` times.
2. Times the download (from the local `--source` folder) and preprocess stages as
   `python -m stages.<name>` processes, alternately, `--rounds` times each.
3. For each stage: the time to start a process and import the stage module (what a stage
   pays before doing any work), against a bare `python -c pass`, and whether that pulls in
   TensorFlow; for download and preprocess, also whether a complete run ever imports it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import common
from tests.harness import DVC, edit_params, make_project_repo

TOY_DVC_YAML = """\
stages:
  make:
    cmd: python -c "import yaml; open('a.txt', 'w').write(str(yaml.safe_load(open('params.yaml'))['toy']['n']))"
    params: [toy.n]
    outs: [a.txt]
  copy:
    cmd: python -c "open('b.txt', 'w').write(open('a.txt').read())"
    deps: [a.txt]
    outs: [b.txt]
"""

# Runs a stage in-process and reports, at exit, whether TensorFlow was ever imported.
STAGE_THEN_CHECK = (
    "import atexit, runpy, sys; "
    "atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules)); "
    "sys.argv = ['{name}', '-q']; runpy.run_module('stages.{name}', run_name='__main__')"
)


def make_toy(dest: Path) -> Path:
    dest.mkdir(parents=True)
    (dest / "dvc.yaml").write_text(TOY_DVC_YAML)
    (dest / "params.yaml").write_text("toy:\n  n: 1\n")
    for args in (["git", "init", "-q", "-b", "main"], [str(DVC), "init", "-q"]):
        common.run_timed(args, dest)
    common.dvc(dest, "config", "core.analytics", "false")
    common.dvc(dest, "repro")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=common.DEFAULT_FASHION)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    info = common.machine_info()
    times: dict[str, list[float]] = {}
    imports: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as scratch:
        repo = make_project_repo(Path(scratch) / "repo", untracked=True)
        toy = make_toy(Path(scratch) / "toy")
        edit_params(
            repo,
            **{
                "data.dataset": "fashion_mnist",
                "data.source": str(args.source),
                "train.mlp.hidden_units": [32],
                "train.epochs": 1,
            },
        )
        full = common.dvc(repo, "repro")
        print(f"full pipeline run: {full.seconds:.1f} s", flush=True)
        for _ in range(args.rounds):
            for name, where in (("no-op dvc repro: pipeline", repo), ("no-op dvc repro: toy", toy)):
                result = common.dvc(where, "repro")
                if "Running stage" in result.stdout:
                    raise RuntimeError(f"{where}: dvc repro was not a no-op:\n{result.stdout}")
                times.setdefault(name, []).append(result.seconds)
            for name in ("download", "preprocess"):
                times.setdefault(f"stage {name}", []).append(common.stage(repo, name).seconds)
        for _ in range(args.rounds):
            times.setdefault("start: python -c pass", []).append(
                common.run_timed([common.PYTHON, "-c", "pass"], repo).seconds
            )
            for name in ("download", "preprocess", "train", "evaluate"):
                check = f"import sys, stages.{name}; print('tensorflow imported:', 'tensorflow' in sys.modules)"
                result = common.run_timed([common.PYTHON, "-c", check], repo)
                times.setdefault(f"start: import stages.{name}", []).append(result.seconds)
                imports[f"import stages.{name}"] = "True" in result.stdout
        for name in ("download", "preprocess"):
            result = common.run_timed([common.PYTHON, "-c", STAGE_THEN_CHECK.format(name=name)], repo)
            imports[f"full run of stages.{name}"] = "True" in result.stdout
    medians = {name: common.median(values) for name, values in times.items()}
    print(f"\n{common.describe_machine(info)}\n`{common.command_line()}`\n")
    print("| measurement | median s | runs (s) |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {medians[name]:.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    ratio = medians["no-op dvc repro: pipeline"] / medians["no-op dvc repro: toy"]
    print(f"\nno-op repro ratio pipeline/toy: {ratio:.2f}x (goal <= 1.3x)")
    print("TensorFlow imported:", ", ".join(f"{name}: {'yes' if hit else 'no'}" for name, hit in imports.items()))
    common.save_results(
        "overhead",
        {"machine": info, "command": common.command_line(), "times": times, "medians": medians, "ratio": ratio}
        | {"tensorflow_imported": imports},
    )


if __name__ == "__main__":
    main()
