"""Data-parallel training on several processes: checking `train.distributed`, the `local` launcher, joining.

Engine `jax` is Keras's own `keras.distribution.DataParallel` on the JAX backend, joined through
`jax.distributed` (gloo collectives on CPU, NCCL on GPU). Not `tf.distribute.MultiWorkerMirroredStrategy`:
with Keras 3 it fails as soon as there are two workers (tensorflow#72388, keras-team/keras#20585).

Every process holds the whole model and takes an equal slice of every global batch (`shard_batches`);
the gradients are averaged across processes after each step, so all processes keep identical weights.
Only process 0 writes files (the resume state and the stage's outputs); the others read the same
workspace, which on more than one machine must be shared storage.

This module imports neither Keras nor JAX at the top: the train stage imports it before it has chosen
the Keras backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError
from pipeline.params import DistributedParams, TrainParams, section_as_dict

log = logging.getLogger(__name__)

# Set by the local launcher in each process it starts: that process's id, and the address of process 0.
PROCESS_ID_ENV = "PIPELINE_TRAIN_PROCESS_ID"
COORDINATOR_ENV = "PIPELINE_TRAIN_COORDINATOR"
# A Kubernetes indexed job gives each pod its index here; Slurm and Open MPI are detected by JAX itself.
K8S_INDEX_ENV = "JOB_COMPLETION_INDEX"
# How long a stopped process gets to clean up (its atomic writes remove their scratch files) before SIGKILL.
STOP_GRACE_SECONDS = 3.0
# After a successful run every process waits here for the others; they all got past training already.
SHUTDOWN_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Role:
    """This process's place in the run: process `index` of `count`."""

    index: int = 0
    count: int = 1

    @property
    def writes_outputs(self) -> bool:
        return self.index == 0


def check_config(params: TrainParams) -> None:
    """The checks `params.py` cannot make key by key: the distributed section against the rest of `train`."""
    dist = params.distributed
    if dist.engine == "none" and dist.processes != 1:
        raise PipelineError(
            f"params.yaml: 'train.distributed.processes' is {dist.processes}, but engine 'none' trains in one "
            "process; set 'train.distributed.engine' to jax, or processes to 1."
        )
    if params.batch_size % dist.processes:
        raise PipelineError(
            f"params.yaml: 'train.batch_size' is {params.batch_size}, which {dist.processes} processes cannot "
            f"split evenly ('train.distributed.processes'); use a batch size that is a multiple of {dist.processes}."
        )


def select_backend(dist: DistributedParams) -> None:
    """Make Keras use the backend the engine needs; must run before the first `import keras`."""
    if dist.engine != "jax":
        return
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "jax":
        raise PipelineError("train.distributed.engine jax needs the JAX backend, but Keras was already imported.")
    os.environ["KERAS_BACKEND"] = "jax"


def launches_here(dist: DistributedParams) -> bool:
    """True in the process the user started when it must start the training processes itself."""
    return (
        dist.engine != "none" and dist.launcher == "local" and dist.processes > 1 and PROCESS_ID_ENV not in os.environ
    )


def model_params(params: TrainParams) -> TrainParams:
    """The params the model is built with. The JAX backend compiles the training step by itself (XLA);
    `jit_compile: false` there would mean running it op by op, ~20x slower, so engine jax always compiles."""
    return dataclasses.replace(params, jit_compile=True) if params.distributed.engine == "jax" else params


def fingerprint_params(params: TrainParams) -> dict[str, Any]:
    """The `train` params that shape the result. Not how the processes are started or found: a resumed
    run may come back on other nodes, with another coordinator address."""
    values = section_as_dict(params)
    values["distributed"] = {key: values["distributed"][key] for key in ("engine", "processes")}
    return values


# ----------------------------------------------------------------------------- joining the other processes


def _process_id_from_env() -> int | None:
    for name in (PROCESS_ID_ENV, K8S_INDEX_ENV):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None  # JAX reads it from Slurm or Open MPI


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _check_coordinator_is_here(address: str) -> None:
    """Process 0 serves the coordinator: its address must be one of this machine's, its port free."""
    host, port = _split_address(address)
    try:
        with socket.create_server((host, 0)):
            pass
    except OSError as err:
        raise PipelineError(
            f"process 0 serves the coordinator, but {address} is not an address of this machine "
            f"({socket.gethostname()}: {err.strerror or err}); set 'train.distributed.coordinator' to process 0's "
            "HOST:PORT, or start process 0 on that host."
        ) from None
    try:
        with socket.create_server(("", port), reuse_port=hasattr(socket, "SO_REUSEPORT")):
            pass
    except OSError as err:
        raise PipelineError(
            f"process 0 cannot serve the coordinator on port {port} ({err.strerror or err}); "
            "choose another port in 'train.distributed.coordinator'."
        ) from None


def _wait_for_coordinator(address: str, index: int, dist: DistributedParams) -> None:
    """Connect once to process 0 before JAX does: JAX aborts the whole process when it cannot."""
    host, port = _split_address(address)
    deadline = time.monotonic() + dist.join_timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise PipelineError(
                    f"process {index} of {dist.processes} could not reach the coordinator at {address} within "
                    f"{dist.join_timeout} s ({err.strerror or err}); check 'train.distributed.coordinator' "
                    "(process 0's HOST:PORT), that process 0 started, and that the port is open between the machines."
                ) from None
            time.sleep(0.2)


def _join(dist: DistributedParams) -> Role:
    coordinator = os.environ.get(COORDINATOR_ENV) or dist.coordinator or None
    process_id = _process_id_from_env()
    if dist.processes > 1 and coordinator and process_id == 0:
        _check_coordinator_is_here(coordinator)
    elif dist.processes > 1 and coordinator and process_id is not None:
        _wait_for_coordinator(coordinator, process_id, dist)
    import jax
    import keras

    if dist.processes > 1:
        try:
            jax.distributed.initialize(
                coordinator_address=coordinator,
                num_processes=dist.processes,
                process_id=process_id,
                initialization_timeout=dist.join_timeout,
                shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_SECONDS,
            )
        except Exception as err:  # JAX raises ValueError, RuntimeError or XlaRuntimeError here
            raise PipelineError(
                f"{'this process' if process_id is None else f'process {process_id}'} could not join the "
                f"{dist.processes}-process run at {coordinator or 'the coordinator named by the environment'} "
                f"({_first_line(err).rstrip('.')}); start the processes with srun, mpirun or a Kubernetes indexed "
                "job (they tell each its id), or set 'train.distributed.coordinator'."
            ) from None
    # auto_shard_dataset=False: every process slices its share of each batch itself (shard_batches), which
    # keeps the per-epoch order of a one-process run; Keras's own sharding needs a statically batched dataset.
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    )
    return Role(index=jax.process_index(), count=jax.process_count())


@contextlib.contextmanager
def membership(dist: DistributedParams) -> Iterator[Role]:
    """Join the run for the duration of the block (engine none: a lone process 0).

    On success, every process waits for the others (process 0 may still be writing) and leaves
    together. On failure it leaves at once: JAX's exit handler would otherwise wait for processes
    that are themselves blocked on the one that failed, until a timeout minutes later.
    """
    if dist.engine == "none" or dist.processes == 1:
        yield _join(dist) if dist.engine != "none" else Role()
        return
    import atexit

    import jax

    role = _join(dist)
    try:
        yield role
    except BaseException:
        atexit.unregister(jax.distributed.shutdown)
        raise
    jax.distributed.shutdown()


def stop_distributing() -> None:
    """Make Keras create new variables on this process alone: saving a model creates some, and under the
    distribution each creation is a collective that process 0, writing alone, would wait on forever."""
    if "keras" in sys.modules:
        sys.modules["keras"].distribution.set_distribution(None)


def agree(role: Role, value: int, what: str) -> None:
    """Raise unless every process holds the same `value` (e.g. the epoch a resume starts at)."""
    if role.count == 1:
        return
    import numpy as np
    from jax.experimental import multihost_utils

    values = multihost_utils.process_allgather(np.array(value))
    if len(set(np.ravel(values).tolist())) > 1:
        raise PipelineError(
            f"the processes disagree on {what} ({np.ravel(values).tolist()} by process); every process must see "
            "the same workspace: put it on storage all machines share."
        )


# ----------------------------------------------------------------------------- the local launcher


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    # Linux: a training process gets SIGTERM if the launcher dies, even by SIGKILL, instead of
    # training on unsupervised (and writing outputs for a stage that DVC already counts as failed).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


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
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads exist yet: they start below)
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
