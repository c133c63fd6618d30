"""The pipeline's train stage, exactly as `python -m stages.train` runs it, plus epoch timestamps.

Run from a scratch copy's root (the stage reads data/prepared/ and params.yaml there):

    .venv/bin/python -m bench.timed_train

It wraps `pipeline.training.save_state`, which the train loop calls once at the end of
every epoch (after validation and the best-epoch bookkeeping), to record when each epoch
ended; the time between two calls is one epoch, as a user pays for it. Everything else
is the stage's own `main()`. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from itertools import pairwise

STARTED = time.perf_counter()

from pipeline import models, training  # noqa: E402
from stages import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    ends: list[float] = []
    save_state = training.save_state

    def timed_save_state(*args, **kwargs):
        ends.append(time.perf_counter())
        save_state(*args, **kwargs)

    training.save_state = timed_save_state
    built = []
    build_model = models.build_model

    def keep_model(*args, **kwargs):
        built.append(build_model(*args, **kwargs))
        return built[-1]

    models.build_model = keep_model
    logging.basicConfig(level=logging.WARNING)
    imported = time.perf_counter()
    train.main(argparse.Namespace(quiet=True))
    finished = time.perf_counter()
    model = built[0]
    # The first "epoch" runs from the start of main(): data loading, model building and tracing included.
    marks = [imported, *ends]
    print(
        json.dumps(
            {
                "epoch_seconds": [end - begin for begin, end in pairwise(marks)],
                "import_seconds": imported - STARTED,
                "total_seconds": finished - STARTED,
                "jit_compile_effective": bool(model.jit_compile),
                "steps_per_execution": model.steps_per_execution,
                "optimizer_iterations": int(model.optimizer.iterations.numpy()),
                "weights_sha256": hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest(),
            }
        )
    )


if __name__ == "__main__":
    main()
