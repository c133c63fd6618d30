"""Training-step time, float32 against mixed_bfloat16 (`train.precision`), side by side on this CPU.

    .venv/bin/python -m bench.bf16 --repeats 7

For each model (the tutorial CNN at batch 128, the tutorial dense net 784-784-100-10 at batch 32)
one process builds it twice with pipeline/models.py, once per precision, seeded and compiled as
the train stage does (op determinism, adam, categorical cross-entropy, steps_per_execution 1
for the CNN and 64 for the dense net, as the recipes set it), warms both up, then times them
alternately, `--repeats` times each, on the same random 28x28x1 images: a loaded machine slows
both alike, so their ratio holds better than either time. Step time does not depend on the
pixel values. Once with TensorFlow's oneDNN kernels (`train.onednn: true`, the default) and
once without them, each in its own process (TensorFlow reads the switch when it loads).
The table names the CPU, its bfloat16 flags and the load average, which the ratios depend on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench import common
from pipeline import cpu
from tests.harness import PROJECT_ROOT

TUTORIAL_CNN = {
    "filters": [32, 64], "kernel_size": 3, "pool_size": 2, "pool_after_each_conv": False, "batch_norm": False,
    "dense_units": 128, "conv_dropout": 0.25, "dense_dropout": 0.5,
}  # fmt: skip
MODELS = {
    # name: (builder, keyword arguments, batch size, steps_per_execution, timed steps per repeat)
    "cnn": ("cnn", TUTORIAL_CNN, 128, 1, 8),
    "mlp": ("mlp", {"hidden_units": [784, 100], "activation": "relu", "dropout": 0.0}, 32, 64, 256),
}
PRECISIONS = ("float32", "mixed_bfloat16")
FASHION_TRAIN = 54_000  # training images per epoch in the train stage (MNIST: the same)


def time_model(model_name: str, repeats: int) -> dict[str, list[float]]:
    """In this process: seconds per step of each precision, `repeats` alternating measurements each."""
    import keras
    import numpy as np

    from pipeline.models import build_cnn, build_mlp, build_with_policy
    from pipeline.training import seed_everything

    builder, kwargs, batch_size, steps_per_execution, steps = MODELS[model_name]
    build = build_cnn if builder == "cnn" else build_mlp
    seed_everything(0)
    models = {}
    for precision in PRECISIONS:
        model = build_with_policy(precision, lambda: build((28, 28, 1), 10, **kwargs))
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"],
                      steps_per_execution=steps_per_execution)  # fmt: skip
        models[precision] = model
    rng = np.random.default_rng(0)
    n = batch_size * steps
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, n), 10)
    for model in models.values():  # warm-up: tracing, the first call's allocations
        model.fit(x, y, batch_size=batch_size, verbose=0)
    times: dict[str, list[float]] = {precision: [] for precision in PRECISIONS}
    for _ in range(repeats):
        for precision, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
            times[precision].append((time.perf_counter() - start) / steps)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--onednn", default="1,0", help="oneDNN settings to run, in order (1 = on, 0 = off)")
    parser.add_argument("--results", default="bf16", help="name of the bench/results/ file (default: %(default)s)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(time_model(args.one[0], int(args.one[1]))))
        return
    isa = sorted(f for f in cpu.cpu_flags() if f.startswith(("avx", "amx", "fma")))
    info = common.machine_info() | {
        "bf16_flags": list(cpu.bf16_flags()),
        "isa_flags": isa,
        "uptime_at_start": _uptime(),
    }
    rows = []
    for onednn in args.onednn.split(","):
        for model_name in args.models.split(","):
            env = common.ENV | {"TF_ENABLE_ONEDNN_OPTS": onednn}
            command = [common.PYTHON, "-m", "bench.bf16", "--one", model_name, str(args.repeats)]
            times = json.loads(common.run_timed(command, PROJECT_ROOT, env=env).stdout.strip().splitlines()[-1])
            batch_size = MODELS[model_name][2]
            f32, bf16 = (common.median(times[p]) for p in PRECISIONS)
            rows.append({"model": model_name, "batch_size": batch_size, "onednn": onednn == "1",
                         "ms_per_step": {p: common.median(times[p]) * 1000 for p in PRECISIONS},
                         "bf16_speedup": f32 / bf16, "runs_ms": {p: [t * 1000 for t in times[p]] for p in PRECISIONS},
                         "uptime": _uptime()})  # fmt: skip
            print(f"{model_name} onednn={onednn}: float32 {f32 * 1000:.1f} ms, bf16 {bf16 * 1000:.1f} ms", flush=True)
    info["uptime_at_end"] = _uptime()
    flags = ", ".join(info["bf16_flags"]) or "none"
    print(f"\n{common.describe_machine(info)}; bfloat16 flags: {flags}; vector flags: {' '.join(isa)}")
    print(f"load: {info['uptime_at_start']} (start), {info['uptime_at_end']} (end)\n`{common.command_line()}`\n")
    print("| model (batch) | oneDNN | float32 ms/step | mixed_bfloat16 ms/step | bf16 speed-up | s/epoch f32 → bf16 "
          "| runs f32 / bf16 (ms) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        f32, bf16 = row["ms_per_step"]["float32"], row["ms_per_step"]["mixed_bfloat16"]
        steps = -(-FASHION_TRAIN // row["batch_size"])
        runs = " / ".join(", ".join(f"{v:.0f}" for v in row["runs_ms"][p]) for p in PRECISIONS)
        print(
            f"| {row['model']} ({row['batch_size']}) | {'on' if row['onednn'] else 'off'} | {f32:.1f} | {bf16:.1f} "
            f"| {row['bf16_speedup']:.2f}x | {f32 * steps / 1000:.0f} → {bf16 * steps / 1000:.0f} | {runs} |"
        )
    common.save_results(args.results, {"machine": info, "command": common.command_line(), "rows": rows})


def _uptime() -> str:
    return "load average " + ", ".join(f"{load:.2f}" for load in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
