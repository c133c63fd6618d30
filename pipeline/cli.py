"""The wrapper every stage runs under: `--help`, logging, one-sentence errors, quiet TensorFlow, a summary line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from pipeline.errors import PipelineError, describe_environment_error
from pipeline.tf_noise import filter_tensorflow_noise

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


# ----------------------------------------------------------------------------- the summary line


def _stage_name(main_spec: object) -> str:
    name = getattr(main_spec, "name", None) or Path(sys.argv[0]).stem
    return name.rsplit(".", 1)[-1]


def record_written_files() -> list[Path]:
    """A list that fills with every file or folder this process writes atomically (pipeline/io/atomic.py), in order.

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
