"""Quiet TensorFlow: its C++ start-up lines that carry nothing for a user of this pipeline, filtered out of stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

# TensorFlow's C++ start-up lines that carry nothing for a user of this pipeline. TF_CPP_MIN_LOG_LEVEL
# (set to 2 in pipeline/__init__.py) hides some of them, but not the lines that the libraries print
# while they load, before they read it (measured on TF 2.21): absl's "before InitializeLog" warning
# and the oneDNN notice, once per shared library, i.e. twice per process. Nor the tf.data NodeDef
# line, an ERROR that TensorFlow's own pip build prints for its own graphs (version skew between
# its Python and C++ halves, "unknown attributes will be ignored").
TENSORFLOW_NOISE = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^[IWE]\d{4} [\d:. ]+\d+ \S+:\d+\] (?:"
    r"oneDNN custom operations are on"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|Unable to register cu(?:DNN|FFT|BLAS) factory"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition"
    r")",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",  # LiteRT, when predict runs a .tflite
)

# Runs in a child process, so that whatever the stage prints last before it dies (a C++ abort, a
# segfault's message) still reaches the terminal; it ignores Ctrl-C and SIGTERM and ends when the
# stage closes its stderr.
_FILTER_PROGRAM = """
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
noise = re.compile(sys.argv[1])
for line in sys.stdin.buffer:
    if not noise.match(line.decode("utf-8", "replace").rstrip("\\r\\n")):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


def filter_tensorflow_noise() -> Callable[[], None]:
    """Route this process's stderr (file descriptor 2, so C++ output too) through a filter of TENSORFLOW_NOISE.

    Returns the function that undoes it and waits for the filter to pass on the last lines.
    `TF_CPP_MIN_LOG_LEVEL=0` (TensorFlow's own switch for "show me everything") turns the filter off.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return lambda: None
    sys.stderr.flush()
    try:
        original = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        return lambda: None
    pattern = "|".join(f"(?:{noise})" for noise in TENSORFLOW_NOISE)
    program = [sys.executable, "-I", "-S", "-c", _FILTER_PROGRAM, pattern]
    try:
        child = subprocess.Popen(program, stdin=subprocess.PIPE, stdout=original, stderr=original)
    except OSError:  # no filter is better than no stage
        os.close(original)
        return lambda: None
    os.dup2(child.stdin.fileno(), 2)  # children of the stage (the distributed launcher's) inherit it too
    child.stdin.close()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes this process's end of the pipe: the filter sees its end
        os.close(original)
        # Usually the filter ends at once. A process this one started can still hold the pipe: the resource
        # tracker of a multiprocessing pool lives until this process exits (waiting for it cost preprocess's
        # decoding pool a 10 s timeout, when preprocess still ran behind this filter). After a short wait the
        # filter is left to pass on whatever comes last and to end with the pipe's last holder.
        try:
            child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass

    return restore
