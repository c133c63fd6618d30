"""The wrapper every stage runs under: `--help`, logging, and one-sentence errors."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
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
) -> None:
    """Parse arguments, set up logging, run `main`, and turn failures into exit codes.

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
    try:
        main(args)
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
