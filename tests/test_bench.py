"""The bench scripts' measuring tools (bench/common.py): what BENCHMARKS.md's figures rest on."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from bench import common
from tests.harness import PROJECT_ROOT

BALLAST_MB = 300


def test_a_childs_peak_rss_is_its_own_not_its_parents() -> None:
    """Linux carries a parent's peak RSS into the children it starts; run_timed's launcher keeps it out."""
    command = [sys.executable, "-c", "pass"]
    ballast = np.ones(BALLAST_MB * 2**20 // 8)  # touched: resident in this process
    child = subprocess.Popen(command)
    carried = os.wait4(child.pid, 0)[2].ru_maxrss / 1024  # what a plain wait4 on a direct child reports
    timed = common.run_timed(command, PROJECT_ROOT)
    del ballast
    assert carried > BALLAST_MB, carried
    assert timed.max_rss_mb < BALLAST_MB / 3 and timed.returncode == 0, timed


def test_run_timed_gives_the_commands_exit_code_and_output() -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    timed = common.run_timed([sys.executable, "-c", code], PROJECT_ROOT, check=False)
    assert (timed.returncode, timed.stdout, timed.stderr) == (3, "out\n", "err\n")
    assert timed.seconds > 0 and timed.cpu_seconds > 0
