"""The pipeline's train stage, exactly as `python -m stages.train` runs it, plus epoch timestamps.

Run from a scratch copy's root (the stage reads data/prepared/ and params.yaml there):

    .venv/bin/python -m bench.timed_train

It wraps `pipeline.training.save_state`, which the train loop calls once at the end of
every epoch (after validation and the best-epoch bookkeeping), to record when each epoch
ended; the time between two calls is one epoch, as a user pays for it. Everything else
is the stage's own `main()`, which sets TensorFlow's environment before TensorFlow loads.
Prints one JSON line, with whether oneDNN was in effect.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from itertools import pairwise

STARTED = time.perf_counter()

# Not pipeline.models or pipeline.training here: they load TensorFlow, and the stage must set its
# environment first (train.onednn is read once, when TensorFlow loads). They are patched once main() has.
from stages import train  # noqa: E402


def onednn_effective() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels, as it decided when it loaded (a private API: None if gone)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    marks: list[float] = []  # when TensorFlow had loaded, then the end of each epoch
    built = []
    train_model = train.train_model

    def timed_train_model(*args, **kwargs):
        from pipeline import models, training

        marks.append(time.perf_counter())
        save_state, build_model = training.save_state, models.build_model

        def timed_save_state(*args, **kwargs):
            marks.append(time.perf_counter())
            save_state(*args, **kwargs)

        def keep_model(*args, **kwargs):
            built.append(build_model(*args, **kwargs))
            return built[-1]

        training.save_state, models.build_model = timed_save_state, keep_model
        return train_model(*args, **kwargs)

    train.train_model = timed_train_model
    logging.basicConfig(level=logging.WARNING)
    train.main(argparse.Namespace(quiet=True))
    finished = time.perf_counter()
    model = built[0]
    # The first "epoch" runs from TensorFlow's import: data loading, model building and tracing included.
    print(
        json.dumps(
            {
                "epoch_seconds": [end - begin for begin, end in pairwise(marks)],
                "import_seconds": marks[0] - STARTED,
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
