"""Data-parallel training on several processes: joining them into one run, and what they share while in it.

Engine `jax` is Keras's own `keras.distribution.DataParallel` on the JAX backend, joined through
`jax.distributed` (gloo collectives on CPU, NCCL on GPU). Not `tf.distribute.MultiWorkerMirroredStrategy`:
with Keras 3 it fails as soon as there are two workers (tensorflow#72388, keras-team/keras#20585).

Every process holds the whole model and takes an equal slice of every global batch
(`pipeline.training.shard_batches`); the gradients are averaged across processes after each step,
so all processes keep identical weights. Only process 0 writes files (the resume state and the
stage's outputs); the others read the same workspace, which on more than one machine must be shared
storage. Who starts the processes is another concern: `pipeline.launcher` (launcher `local`), or a
cluster (`external`). How the section's keys must fit the rest of `train` is checked with the other
params (`TrainParams.check_combinations`). A one-process run (engine none) never imports this module.

This module imports neither Keras nor JAX at the top: the train stage imports it before it has chosen
the Keras backend.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.errors import PipelineError
from pipeline.params import DistributedParams

# What a process reads to learn its id and process 0's address, when no cluster tells JAX: the local
# launcher sets both; a Kubernetes indexed job gives each pod its index. Slurm and Open MPI are detected by JAX.
PROCESS_ID_ENV = "PIPELINE_TRAIN_PROCESS_ID"
COORDINATOR_ENV = "PIPELINE_TRAIN_COORDINATOR"
K8S_INDEX_ENV = "JOB_COMPLETION_INDEX"
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

    def agree(self, value: int, what: str) -> None:
        """Raise unless every process holds the same `value` (e.g. the epoch a resume starts at)."""
        if self.count == 1:
            return
        import numpy as np
        from jax.experimental import multihost_utils

        values = np.ravel(multihost_utils.process_allgather(np.array(value))).tolist()
        if len(set(values)) > 1:
            raise PipelineError(
                f"the processes disagree on {what} ({values} by process); every process must see "
                "the same workspace: put it on storage all machines share."
            )


def select_backend(dist: DistributedParams) -> None:
    """Make Keras use the backend the engine needs; must run before the first `import keras`."""
    if dist.engine != "jax":
        return
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "jax":
        raise PipelineError("train.distributed.engine jax needs the JAX backend, but Keras was already imported.")
    os.environ["KERAS_BACKEND"] = "jax"


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
    """Join the run for the duration of the block.

    On success, every process waits for the others (process 0 may still be writing) and leaves
    together. On failure it leaves at once: JAX's exit handler would otherwise wait for processes
    that are themselves blocked on the one that failed, until a timeout minutes later.
    """
    if dist.processes == 1:
        yield _join(dist)
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
