"""Time of one training step by speed setting: why each recipe sets `jit_compile`, `steps_per_execution` and `onednn`.

    .venv/bin/python -m bench.step_time --rounds 3

For each model (the tutorial CNN, the pooled CNN of `train.cnn.pool_after_each_conv`, that with
`train.cnn.batch_norm`, the tutorial dense net, the dense net of the fashion-mlp recipe, the normalised
`fast_cnn` of BENCHMARKS.md 2e; the two normalised nets also with Keras's own BatchNormalization
instead of pipeline/layers.py's fused one, `-keras-bn`) and each
setting (TensorFlow with or without XLA, with or without its oneDNN kernels, with 1 or 64 steps
per call; Keras's JAX backend), one fresh process builds the
model with pipeline/models.py, seeds it as the train stage does (op determinism on unless XLA
is), compiles it as the train stage does (adam, categorical cross-entropy) and fits random 28x28
images: a warm-up call (tracing, compiling), then a fixed number of timed steps (32 to 512,
fewer for the slower models). Step time does not depend on the pixel values, and leaving out
data loading and validation isolates what the settings change. Settings run alternately,
`--rounds` times; the table gives the median time per step and what that makes per epoch of the
train stage on Fashion-MNIST (54,000 training images: 422 steps at batch 128, 1688 at batch 32).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from bench import common
from tests.harness import PROJECT_ROOT

FASHION_TRAIN = 54_000
TUTORIAL_CNN = {
    "filters": [32, 64],
    "kernel_size": 3,
    "pool_size": 2,
    "pool_after_each_conv": False,
    "batch_norm": False,
    "dense_units": 128,
    "conv_dropout": 0.25,
    "dense_dropout": 0.5,
}
FAST_CNN_BN = {
    "filters": [24, 32],
    "kernel_sizes": [3, 3],
    "convs_per_pool": [1, 2],
    "pool_size": 2,
    "batch_norm": True,
    "conv_dropout": 0.2,
    "global_pool": False,
    "dense_units": 256,
    "dropout": 0.3,
}
MODELS = {
    # name: (builder, keyword arguments, batch size of the tutorial or recipe, timed steps)
    "cnn": ("cnn", TUTORIAL_CNN, 128, 16),
    "cnn-pooled": ("cnn", TUTORIAL_CNN | {"pool_after_each_conv": True}, 128, 32),
    "cnn-pooled-bn": ("cnn", TUTORIAL_CNN | {"pool_after_each_conv": True, "batch_norm": True}, 128, 32),
    "fast-cnn-bn": ("fast_cnn", FAST_CNN_BN, 256, 64),
    "mlp": ("mlp", {"hidden_units": [784, 100], "activation": "relu", "dropout": 0.0}, 32, 256),
    "mlp-dropout": ("mlp", {"hidden_units": [512, 256], "activation": "relu", "dropout": 0.2}, 128, 128),
}  # fmt: skip
# The normalised nets again, built with Keras's own BatchNormalization (see time_steps): BENCHMARKS.md 1f.
MODELS |= {f"{name}-keras-bn": MODELS[name] for name in ("cnn-pooled-bn", "fast-cnn-bn")}
SETTINGS = {
    # name: (Keras backend, jit_compile, steps_per_execution, TensorFlow's oneDNN kernels)
    "tf": ("tensorflow", False, 1, False),
    "tf spe64": ("tensorflow", False, 64, False),
    "tf onednn": ("tensorflow", False, 1, True),
    "tf onednn spe64": ("tensorflow", False, 64, True),
    "tf xla": ("tensorflow", True, 1, False),
    "tf xla spe64": ("tensorflow", True, 64, False),
    "jax": ("jax", True, 1, False),
}


def time_steps(model_name: str, setting: str) -> float:
    """In this process: seconds per training step (runs in a child started by main)."""
    import keras
    import numpy as np

    from pipeline import models
    from pipeline.training import seed_everything

    builder, kwargs, batch_size, steps = MODELS[model_name]
    _, jit_compile, steps_per_execution, _ = SETTINGS[setting]
    seed_everything(0, deterministic_ops=not jit_compile)
    if model_name.endswith("-keras-bn"):  # the same net with the layer pipeline/layers.py replaces
        models.FusedBatchNormalization = keras.layers.BatchNormalization
    model = getattr(models, f"build_{builder}")((28, 28, 1), 10, **kwargs)
    model.compile(
        optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"],
        jit_compile=jit_compile, steps_per_execution=steps_per_execution,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    n = batch_size * steps
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, n), 10)
    warm_up = batch_size * min(steps, 64)  # one call even with 64 steps per call
    model.fit(x[:warm_up], y[:warm_up], batch_size=batch_size, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--results", default="step_time", help="name of the bench/results/ file (default: %(default)s)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps({"seconds_per_step": time_steps(*args.one)}))
        return
    models, settings = args.models.split(","), args.settings.split(",")
    info = common.machine_info()
    times: dict[tuple[str, str], list[float]] = {(m, s): [] for m in models for s in settings}
    for round_number in range(args.rounds):
        for model_name in models:
            for setting in settings:
                backend, _, _, onednn = SETTINGS[setting]
                # Read once, when TensorFlow loads; its default is off on CPUs without AVX-512 (this one).
                env = common.ENV | {"KERAS_BACKEND": backend, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0"}
                command = [common.PYTHON, "-m", "bench.step_time", "--one", model_name, setting]
                timed = common.run_timed(command, PROJECT_ROOT, env=env)
                seconds = json.loads(timed.stdout.strip().splitlines()[-1])["seconds_per_step"]
                times[model_name, setting].append(seconds)
                print(f"round {round_number + 1}: {model_name} / {setting}: {seconds * 1000:.1f} ms/step", flush=True)
    print(f"\n{common.describe_machine(info)}\n`{common.command_line()}`\n")
    print("| model (batch) | setting | ms per step (median) | s per Fashion-MNIST epoch | vs `tf` | runs (ms) |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for (model_name, setting), values in times.items():
        batch_size = MODELS[model_name][2]
        step = common.median(values)
        reference = common.median(times[model_name, "tf"]) if (model_name, "tf") in times else math.nan
        epoch = step * math.ceil(FASHION_TRAIN / batch_size)
        rows.append({"model": model_name, "setting": setting, "ms_per_step": step * 1000, "epoch_s": epoch,
                     "speedup_vs_tf": reference / step, "runs_ms": [v * 1000 for v in values]})  # fmt: skip
        print(
            f"| {model_name} ({batch_size}) | {setting} | {step * 1000:.1f} | {epoch:.1f} | "
            f"{'n/a (not run)' if math.isnan(reference) else f'{reference / step:.2f}x'} "
            f"| {', '.join(f'{v * 1000:.0f}' for v in values)} |"
        )
    common.save_results(args.results, {"machine": info, "command": common.command_line(), "rows": rows})


if __name__ == "__main__":
    sys.exit(main())
