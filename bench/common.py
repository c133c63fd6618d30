"""What the bench scripts add to the tests' harness (tests/harness.py): timed child processes, machine facts,
Fashion-MNIST subsets, results files.

Every measurement runs the pipeline in a scratch copy of this checkout (tracked files plus
untracked, non-ignored ones such as bench/ itself: `make_project_repo(dest, untracked=True)`), never in
the checkout: stages write data/, models/ and metrics.json relative to their working directory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets import parse_idx
from tests.harness import DVC, ENV, PROJECT_ROOT, edit_params, stage_command

PYTHON = sys.executable
DEFAULT_FASHION = Path("/usr/share/datasets/fashion-mnist")
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
LAUNCHER = Path(__file__).with_name("launch.py")


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """What BENCHMARKS.md must name: cores, CPU model, library versions."""
    cpu, flags = "unknown", set()
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    versions = {}
    for package in ("tensorflow-cpu", "keras", "numpy", "dvc", "jax"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        # Ratios measured on one kind of CPU do not carry to another: these decide oneDNN's and bfloat16's speed.
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_at_start": os.getloadavg()[0],
    }


def describe_machine(info: dict[str, Any]) -> str:
    libs = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    flags = " ".join(info.get("cpu_flags", [])) or "none of avx2/avx512/amx"
    return f"{info['nproc']} cores ({info['cpu']}; {flags}), Python {info['python']}, {libs}"


# ----------------------------------------------------------------------------- processes


@dataclass
class Timed:
    seconds: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system time of the child and its children: what load from others does not inflate


def run_timed(args: list[str], cwd: Path, *, check: bool = True, env: dict[str, str] | None = None) -> Timed:
    """Run a child process; its wall time, CPU time and own peak RSS, measured by bench/launch.py (from wait4, so no
    other process counts, and started from a process without TensorFlow, so this one's memory does not either)."""
    with tempfile.TemporaryDirectory(prefix="run-timed-") as scratch:
        report = Path(scratch) / "figures.json"
        out, err = Path(scratch) / "stdout", Path(scratch) / "stderr"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            launcher = [PYTHON, "-I", str(LAUNCHER), str(report), *map(str, args)]
            status = subprocess.run(launcher, cwd=cwd, env=env or ENV, stdout=stdout, stderr=stderr, check=False)
        text = out.read_text(errors="replace"), err.read_text(errors="replace")
        if not report.is_file():  # the command could not be started: the launcher's traceback says why
            command = " ".join(map(str, args))
            raise RuntimeError(f"{command} did not start (exit {status.returncode})\n{text[1][-3000:]}")
        figures = json.loads(report.read_text())
    result = Timed(figures["seconds"], figures["max_rss_mb"], figures["returncode"], *text, figures["cpu_seconds"])
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, args))} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def stage(repo: Path, name: str) -> Timed:
    """One stage as a user runs it (quiet), timed."""
    return run_timed(stage_command(name, "-q"), repo)


def dvc(repo: Path, *args: str) -> Timed:
    return run_timed([DVC, *args], repo)


# ----------------------------------------------------------------------------- data


def write_idx_gz(path: Path, array: np.ndarray) -> str:
    """Write `array` (uint8) as a gzipped IDX file; return the sha256 of the decompressed bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    with gzip.open(path, "wb", compresslevel=6) as handle:
        handle.write(data)
    return hashlib.sha256(data).hexdigest()


def fashion_subset(source: Path, dest: Path, n_total: int) -> dict[str, str]:
    """The first n_total examples of Fashion-MNIST (6/7 train, 1/7 test, as in the full set) as IDX files.

    Returns the checksums to put in `data.checksums`, which is how the download stage is told
    to trust files that are deliberately not the published release.
    """
    dest.mkdir(parents=True, exist_ok=True)
    n_test = n_total // 7
    n_train = n_total - n_test
    checksums = {}
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        for kind in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"):
            name = f"{prefix}-{kind}"
            images = parse_idx(gzip.decompress((source / name).read_bytes()), name)
            checksums[name] = write_idx_gz(dest / name, images[:count])
    return checksums


def prepare_fashion(repo: Path, source: Path) -> dict[str, Timed]:
    """Download (from a local folder) and preprocess full Fashion-MNIST in `repo`."""
    edit_params(repo, **{"data.dataset": "fashion_mnist", "data.source": str(source)})
    return {"download": stage(repo, "download"), "preprocess": stage(repo, "preprocess")}


# ----------------------------------------------------------------------------- reporting


def median(values: list[float]) -> float:
    return statistics.median(values)


def save_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def command_line() -> str:
    return " ".join([".venv/bin/python -m", sys.modules["__main__"].__spec__.name, *sys.argv[1:]])
