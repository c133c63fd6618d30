"""The `local` launcher of `train.distributed`: the train stage starting its own training processes.

With `launcher: local` and more than one process, the process the user started (by `dvc repro`
or `python -m stages.train`) trains nothing itself: it starts `processes` copies of the stage on
this machine, each told its id and process 0's address through the environment variables that
`pipeline.distributed` reads when it joins them, and watches them. With `launcher: external` a
cluster (srun, mpirun, a Kubernetes indexed job) starts them instead, and this module is not used.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from pipeline.children import die_with_parent
from pipeline.distributed import COORDINATOR_ENV, PROCESS_ID_ENV
from pipeline.errors import PipelineError
from pipeline.params import DistributedParams

log = logging.getLogger(__name__)

# How long a stopped process gets to clean up (its atomic writes remove their scratch files) before SIGKILL.
STOP_GRACE_SECONDS = 3.0


def launches_here(dist: DistributedParams) -> bool:
    """True in the process the user started when it must start the training processes itself."""
    return (
        dist.engine != "none" and dist.launcher == "local" and dist.processes > 1 and PROCESS_ID_ENV not in os.environ
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Child:
    """One training process: its stderr goes to ours, prefixed, and its error line is kept."""

    def __init__(self, index: int, process: subprocess.Popen) -> None:
        self.index, self.process = index, process
        self.last_line = ""
        self.error_line = ""
        self.reader = threading.Thread(target=self._forward_stderr, daemon=True)
        self.reader.start()

    def _forward_stderr(self) -> None:
        in_traceback = False
        for line in self.process.stderr:
            sys.stderr.write(f"[process {self.index}] {line}")
            text = line.strip()
            if not text:
                continue
            self.last_line = text
            if match := _STAGE_ERROR.match(text):  # the stage's own one-sentence error
                self.error_line = match.group(1)
            elif text.startswith("Traceback (most recent call last)"):
                in_traceback = True
            elif in_traceback and not line[:1].isspace():  # the exception line that ends a traceback
                self.error_line, in_traceback = text, False
            elif (match := _FATAL_LOG.match(text)) and not self.error_line:  # an abort inside JAX / XLA
                self.error_line = match.group(1)

    def failure(self) -> str:
        """One sentence on how this process ended."""
        self.reader.join(timeout=2)
        code = self.process.returncode
        detail = self.error_line or self.last_line
        if code < 0:
            return f"training process {self.index} was killed by {signal.Signals(-code).name}"
        return f"training process {self.index} failed with exit code {code}: {detail.rstrip('.;')}"


_STAGE_ERROR = re.compile(r"\d\d:\d\d:\d\d ERROR (.+)")  # pipeline.cli's log format
_FATAL_LOG = re.compile(r"F\d{4} [^\]]*\] (.+)")  # absl's FATAL lines


def _stop(children: list[_Child]) -> None:
    running = [child.process for child in children if child.process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch_local(dist: DistributedParams, argv: list[str]) -> None:
    """Run the train stage as `dist.processes` processes on this machine; fail as soon as one fails.

    Process 0's standard output (Keras's per-epoch lines) is ours; every process's log lines come
    through prefixed with `[process N]`.
    """
    coordinator = dist.coordinator or f"127.0.0.1:{_free_port()}"
    log.info("starting %d training processes; coordinator %s", dist.processes, coordinator)
    processes = []
    children: list[_Child] = []
    try:
        for index in range(dist.processes):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "stages.train", *argv],
                    env=os.environ | {PROCESS_ID_ENV: str(index), COORDINATOR_ENV: coordinator},
                    stdout=None if index == 0 else subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    errors="replace",
                    preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()),  # noqa: PLW1509 (no threads exist yet: they start below)
                )
            )
        children = [_Child(index, process) for index, process in enumerate(processes)]
        while True:
            failed = next((c for c in children if c.process.poll() not in (None, 0)), None)
            if failed is not None:
                _stop(children)
                raise PipelineError(f"{failed.failure()}; stopped the other processes.")
            if all(child.process.poll() == 0 for child in children):
                break
            time.sleep(0.05)
    finally:
        _stop(children)
        for process in processes[len(children) :]:  # started, but a later start failed before watching began
            process.kill()
            process.wait()
    for child in children:
        child.reader.join(timeout=2)
