"""Run one command and write its wall time, exit status and wait4 figures (peak RSS, CPU time) to a JSON file.

    python -I bench/launch.py REPORT.json COMMAND [ARG ...]

bench/common.py's `run_timed` starts every measured command through this script. A child's peak RSS
(`ru_maxrss`) is at least its parent's RSS when it was started: fork copies the parent's memory map with its
high-water mark, and exec keeps that mark. A bench script that has loaded TensorFlow (to time the exported
formats, say) would lend every stage it starts afterwards its own gigabyte. This script imports the standard
library only, so the commands it starts inherit a few megabytes, and it reports their figures, not its own.
"""

import json
import os
import sys
import time


def main() -> None:
    report, *command = sys.argv[1:]
    start = time.perf_counter()
    pid = os.posix_spawnp(command[0], command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    figures = {
        "seconds": seconds,
        "returncode": os.waitstatus_to_exitcode(status),
        "max_rss_mb": usage.ru_maxrss / 1024,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,  # the command and every process it waited for
    }
    with open(report, "w", encoding="utf-8") as handle:
        json.dump(figures, handle)


if __name__ == "__main__":
    main()
