"""The pipeline's train stage, exactly as `python -m stages.train` runs it, plus epoch timestamps.

Run from a scratch copy's root (the stage reads data/prepared/ and params.yaml there):

    .venv/bin/python -m bench.timed_train

It passes the stage's `main()` a Keras callback through the stage's own extension point
(`stages.train.main(..., callbacks=...)`), which records when each epoch ended: after
validation, the best-epoch bookkeeping and the saved resume state, so the time between two
marks is one epoch as a user pays for it. Everything else is the stage's own `main()`, which
sets TensorFlow's environment before TensorFlow loads. Prints one JSON line, with whether
oneDNN was in effect.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

STARTED = time.perf_counter()

# Not keras, pipeline.models or pipeline.training here: they load TensorFlow, and the stage must set its
# environment first (train.onednn is read once, when TensorFlow loads). The callback is built once it has.
from stages import train  # noqa: E402


def onednn_effective() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels, as it decided when it loaded (a private API: None if gone)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


class EpochClock:
    """When TensorFlow had loaded, then the end of each epoch (wall and this process's CPU time, all threads); and the
    model the stage trained. CPU time per epoch is the steadier figure on a machine other jobs load."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.cpu_marks: list[float] = []
        self.model: Any = None

    def stamp(self) -> None:
        self.marks.append(time.perf_counter())
        self.cpu_marks.append(time.process_time())

    def callbacks(self) -> Sequence[Any]:
        """The stage calls this once TensorFlow has loaded; returns the callback that stamps each epoch's end."""
        import keras

        self.stamp()
        clock = self

        class _Stamp(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                clock.stamp()
                clock.model = self.model

        return [_Stamp()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    clock = EpochClock()
    logging.basicConfig(level=logging.WARNING)
    train.main(argparse.Namespace(quiet=True), callbacks=clock.callbacks)
    finished = time.perf_counter()
    model = clock.model  # holding its best epoch's weights: the stage set them after the last epoch
    # The first "epoch" runs from TensorFlow's import: data loading, model building and tracing included.
    print(
        json.dumps(
            {
                "epoch_seconds": [end - begin for begin, end in pairwise(clock.marks)],
                "epoch_cpu_seconds": [end - begin for begin, end in pairwise(clock.cpu_marks)],
                "import_seconds": clock.marks[0] - STARTED,
                "total_seconds": finished - STARTED,
                "onednn_effective": onednn_effective(),
                "jit_compile_effective": bool(model.jit_compile),
                "steps_per_execution": model.steps_per_execution,
                "optimizer_iterations": int(model.optimizer.iterations.numpy()),
                "weights_sha256": hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest(),
            }
        )
    )


if __name__ == "__main__":
    main()
