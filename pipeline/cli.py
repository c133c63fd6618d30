"""The wrapper every stage runs under: `--help`, logging, one-sentence errors, quiet TensorFlow, a summary line.

And `Progress`, the log lines of long work inside a stage.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from pipeline.errors import PipelineError
from pipeline.files import describe_environment_error

log = logging.getLogger("pipeline")


class Terminated(BaseException):
    """SIGTERM turned into an exception so that `finally` blocks and atomic writes clean up.

    A BaseException (like KeyboardInterrupt) so that no `except Exception` swallows it.
    """


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def run_stage(
    main: Callable[[argparse.Namespace], None],
    description: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    *,
    loads_tensorflow: bool = True,
) -> None:
    """Parse arguments, set up logging, run `main`, and turn failures into exit codes.

    `loads_tensorflow=False` (download, preprocess) skips the filter of TensorFlow's start-up lines: there
    is nothing to filter, and it costs a process and, after a multiprocessing pool, half a second.

    Exit codes: 0 success, 1 a PipelineError (its message is the one line the
    user sees), 130 Ctrl-C, 143 SIGTERM. Anything else is a bug and keeps its
    traceback.
    """
    main_spec = getattr(sys.modules["__main__"], "__spec__", None)
    parser = argparse.ArgumentParser(
        prog=f"python -m {main_spec.name}" if main_spec else None,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGTERM, _raise_terminated)
    restore_stderr = filter_tensorflow_noise() if loads_tensorflow else lambda: None
    written, started = record_written_files(), time.monotonic()
    try:
        main(args)
        log.info("%s", summary_line(_stage_name(main_spec), written, time.monotonic() - started))
    except PipelineError as err:
        log.error("%s", err)
        sys.exit(1)
    except OSError as err:  # a full disk or an unwritable output is the machine's state, not a bug: one sentence
        message = describe_environment_error(err)
        if message is None:
            raise
        log.error("%s", message)
        sys.exit(1)
    except KeyboardInterrupt:
        log.error("interrupted (Ctrl-C); outputs written so far are complete, nothing is half-written")
        sys.exit(130)
    except Terminated:
        log.error("terminated (SIGTERM); outputs written so far are complete, nothing is half-written")
        sys.exit(143)
    finally:
        restore_stderr()


# ----------------------------------------------------------------------------- progress of long work


class Progress:
    """A log line every `every` seconds while long work goes on, e.g. `decoding: 12,000 of 20,000 images (60%)`.

    Work that ends sooner logs nothing. `advance` can be called per table row: it reads the clock about
    ten times a second, whatever the rate of calls.
    """

    def __init__(
        self, what: str, total: int | None = None, unit: str = "", *, scale: float = 1, every: float = 5.0
    ) -> None:
        """`scale` divides the counts shown: bytes counted, megabytes shown with `scale=1e6, unit="MB"`."""
        self.what, self.total, self.unit, self.scale, self.every = what, total, unit, scale, every
        self.done, self.logged = 0, False
        self._last_log = self._last_check = time.monotonic()
        self._next_check, self._stride = 1, 1

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.done >= self._next_check:
            self._check_clock()

    def finish(self) -> None:
        """The last line, once there was a line before it: long work says it ended."""
        if self.logged:
            log.info("%s", self.line())

    def line(self) -> str:
        show = (lambda n: f"{n:,}") if self.scale == 1 else (lambda n: f"{n / self.scale:.1f}")
        unit = f" {self.unit}" if self.unit else ""
        if not self.total:
            return f"{self.what}: {show(self.done)}{unit}"
        return f"{self.what}: {show(self.done)} of {show(self.total)}{unit} ({100 * self.done // self.total}%)"

    def _check_clock(self) -> None:
        now = time.monotonic()
        if now - self._last_check < 0.1:
            self._stride *= 2  # called often: read the clock less often
        self._last_check, self._next_check = now, self.done + self._stride
        if now - self._last_log >= self.every:
            self._last_log, self.logged = now, True
            log.info("%s", self.line())


# ----------------------------------------------------------------------------- the summary line


def _stage_name(main_spec: object) -> str:
    name = getattr(main_spec, "name", None) or Path(sys.argv[0]).stem
    return name.rsplit(".", 1)[-1]


def record_written_files() -> list[Path]:
    """A list that fills with every file or folder this process writes atomically (pipeline/files.py), in order.

    Every atomic write ends in one `os.replace` of a hidden temporary (`.NAME.XXXX.tmp...`) onto its
    destination; an audit hook sees those renames, so the summary names what the stage really wrote
    without each stage listing its outputs a second time. Destinations inside hidden folders (the
    resume state, the files of a folder still being assembled) are left out.
    """
    written: list[Path] = []

    def hook(event: str, args: tuple) -> None:
        if event == "os.rename" and isinstance(args[0], (str, Path)) and isinstance(args[1], (str, Path)):
            source, dest = Path(args[0]), Path(os.path.relpath(args[1]))
            if source.name.startswith(".") and ".tmp" in source.name and not dest.name.startswith("."):
                if not any(part.startswith(".") for part in dest.parts[:-1]) and dest not in written:
                    written.append(dest)

    sys.addaudithook(hook)  # an audit hook cannot be removed: it lives as long as the process, as the list does
    return written


def summary_line(stage: str, written: list[Path], seconds: float) -> str:
    """The last line of a successful stage, e.g. `train: done in 12.3 s, wrote models/model.keras, ...`.

    The same shape for every stage, so `grep -o '[a-z_]*: done in [0-9.]* s'` over a `dvc repro` log
    is a per-stage time table (docs/sweeps.md).
    """
    files = ", ".join(path.as_posix() for path in written) if written else "no files"
    return f"{stage}: done in {seconds:.1f} s, wrote {files}"


# ----------------------------------------------------------------------------- quiet TensorFlow

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
