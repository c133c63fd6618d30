"""What deterministic training costs: epoch time with and without TensorFlow op determinism.

The train stage calls `tf.config.experimental.enable_op_determinism()` unless `train.jit_compile` (README,
"Determinism"). This measures its price on the tutorial dense net (784-784-100-10, adam,
batch 32) fed by the pipeline's own input (`epoch_dataset`, one `fit` per epoch), on real Fashion-MNIST:

    .venv/bin/python -m bench.determinism --source /usr/share/datasets/fashion-mnist

Each run is a fresh process (the flag is process-wide); deterministic and default runs
alternate, `--repeats` of each, and the report gives medians, their ratio, and whether two
runs of each kind produced identical weights. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def one_run(source: Path, train_size: int, deterministic: bool) -> dict[str, object]:
    import keras
    import tensorflow as tf

    from pipeline.datasets import REGISTRY
    from pipeline.preprocessing import one_hot, scale_pixels
    from pipeline.training import epoch_dataset

    raw = REGISTRY["fashion_mnist"].read(source)
    x, y = scale_pixels(raw.x_train[:train_size], 255.0), one_hot(raw.y_train[:train_size], 10)
    keras.utils.set_random_seed(42)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(784, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    epoch_ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch_ends.append(time.perf_counter()))
    started = time.perf_counter()
    for epoch in range(2):
        model.fit(
            epoch_dataset(x, y, batch_size=32, seed=42, epoch=epoch),
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            verbose=0,
            callbacks=[timer],
        )
    digest = hashlib.sha256(b"".join(w.numpy().tobytes() for w in model.weights)).hexdigest()[:16]
    # Epoch 2 only: epoch 1 also pays for tracing the graph.
    return {"first_epoch_s": epoch_ends[0] - started, "epoch_s": epoch_ends[1] - epoch_ends[0], "weights": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--train-size", type=int, default=20_000, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=["deterministic", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.source, args.train_size, args.one == "deterministic")))
        return
    runs: dict[str, list[dict]] = {"deterministic": [], "default": []}
    for _ in range(args.repeats):
        for kind, rows in runs.items():  # alternate, so drifting machine load hits both kinds alike
            command = [sys.executable, "-m", "bench.determinism", "--one", kind, "--source", str(args.source)]
            command += ["--train-size", str(args.train_size)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
    medians = {kind: statistics.median(r["epoch_s"] for r in rows) for kind, rows in runs.items()}
    print(f"Dense 784-784-100-10, batch 32, {args.train_size} Fashion-MNIST images/epoch, {args.repeats} runs each\n")
    print("| mode | epoch time, median (s) | all runs (s) | identical weights across runs |")
    print("| --- | --- | --- | --- |")
    for kind, rows in runs.items():
        times = ", ".join(f"{r['epoch_s']:.2f}" for r in rows)
        same = len({r["weights"] for r in rows}) == 1
        print(f"| {kind} | {medians[kind]:.2f} | {times} | {'yes' if same else 'no'} |")
    print(f"\nratio deterministic / default: {medians['deterministic'] / medians['default']:.2f}")


if __name__ == "__main__":
    main()
