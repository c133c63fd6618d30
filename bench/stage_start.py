"""What a TensorFlow stage (train, evaluate, export, predict) pays to load Keras, with and without the optional
integrations that pipeline/__init__.py hides (Keras's scikit-learn wrappers, JAX for TF Lite and Orbax).

    .venv/bin/python -m bench.stage_start --rounds 7

Alternates, `--rounds` times, a process that runs `import keras` (what the stages paid before) and one that runs
`import pipeline, keras` (what they pay now); wall and CPU time of each process, medians, and which of
scikit-learn and JAX ended up loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import common

LOADS = {
    "import keras": "import keras",
    "import pipeline, keras": "import pipeline, keras",
}
REPORT = "; import sys; print('loaded:', *(m for m in ('sklearn', 'jax') if m in sys.modules))"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    info = common.machine_info()
    root = Path(__file__).resolve().parent.parent
    wall: dict[str, list[float]] = {name: [] for name in LOADS}
    cpu: dict[str, list[float]] = {name: [] for name in LOADS}
    loaded: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, code in LOADS.items():
            result = common.run_timed([common.PYTHON, "-c", code + REPORT], root)
            wall[name].append(result.seconds)
            cpu[name].append(result.cpu_seconds)
            loaded[name] = result.stdout.strip().removeprefix("loaded:").strip() or "neither"
    medians = {name: (common.median(wall[name]), common.median(cpu[name])) for name in LOADS}
    print(f"\n{common.describe_machine(info)}\n`{common.command_line()}`\n")
    print("| process | median wall s | median CPU s | also loaded |")
    print("| --- | --- | --- | --- |")
    for name, (seconds, cpu_seconds) in medians.items():
        print(f"| `{name}` | {seconds:.2f} | {cpu_seconds:.2f} | {loaded[name]} |")
    before, after = medians["import keras"], medians["import pipeline, keras"]
    print(f"\nwall {after[0] / before[0]:.2f}x, CPU {after[1] / before[1]:.2f}x of a bare `import keras`")
    common.save_results(
        "stage_start",
        {"machine": info, "command": common.command_line(), "wall": wall, "cpu": cpu, "loaded": loaded},
    )


if __name__ == "__main__":
    main()
