"""Processes a stage starts die with it: killed by SIGKILL (the OOM killer, a CI timeout), a stage cannot stop
them itself, and they would decode or train on unsupervised, for a stage DVC already counts as failed."""

from __future__ import annotations

import contextlib
import ctypes
import os

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(signum: int, parent: int) -> None:
    """Run first in a child of process `parent`: the kernel sends it `signum` when the parent dies (Linux).

    Exits at once where the parent died before the call. Elsewhere (no prctl) it does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such call
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        os._exit(1)
