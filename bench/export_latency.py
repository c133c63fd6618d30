"""Export formats side by side: file size, single-example and batch-of-256 latency against model.keras.

    .venv/bin/python -m bench.export_latency --rounds 15

1. In a scratch copy of this checkout, runs the default pipeline (digits, the MLP; or the
   params given with --set, e.g. --set train.model=cnn) so that models/export/ holds every format.
   --export-dir skips this and measures an existing models/export/ instead.
2. Opens each format in its own runtime, in this one process, the way predict does
   (pipeline/runtimes.py): Keras (`predict_on_batch`, and `model.predict` for comparison),
   the SavedModel's serving signature in TensorFlow, the .tflite in the LiteRT interpreter,
   the .onnx in ONNX Runtime; each runtime with its default threads.
3. Rounds: in each, every format in turn runs one test example `--single` times and a batch of
   256 test examples `--batches` times (after one warm-up call); the per-call medians over
   every round are reported, so that a load spike hits all formats alike.
The CPU model, its AVX-512 / AMX flags and `uptime` before and after go into the results.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from tests.harness import PROJECT_ROOT, edit_params, make_project_repo

FILES = {
    "keras (predict_on_batch)": "model.keras",
    "keras (model.predict)": "model.keras",
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "onnx": "model.onnx",
}


def cpu_flags() -> list[str]:
    text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    return [flag for flag in wanted if re.search(rf"\b{flag}\b", text)]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def build_export(workdir: Path, changes: dict[str, Any]) -> Path:
    repo = make_project_repo(workdir, untracked=True)
    if changes:
        edit_params(repo, **changes)
    common.dvc(repo, "repro", "-q")
    return repo / "models" / "export"


def open_runners(export_dir: Path) -> dict[str, Any]:
    from pipeline.models import load_model
    from pipeline.runtimes import keras_runner, open_model

    model = load_model(export_dir / "model.keras")
    runners = {"keras (predict_on_batch)": keras_runner(model).run_batch}
    runners["keras (model.predict)"] = lambda x: model.predict(x, batch_size=256, verbose=0)
    for name in ("saved_model", "tflite", "onnx"):
        if (export_dir / FILES[name]).exists():
            runners[name] = open_model(export_dir / FILES[name]).run_batch
    return runners


def time_calls(run_batch, x: np.ndarray, calls: int) -> list[float]:
    run_batch(x)  # warm-up: first-call tracing, allocation
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        run_batch(x)
        seconds.append(time.perf_counter() - start)
    return seconds


def measure(export_dir: Path, x_test: np.ndarray, rounds: int, single: int, batches: int) -> dict[str, Any]:
    runners = open_runners(export_dir)
    one = x_test[:1]
    batch = np.resize(x_test, (256, *x_test.shape[1:])).astype(np.float32)  # the test split, repeated to 256
    timings: dict[str, dict[str, list[float]]] = {name: {"single": [], "batch": []} for name in runners}
    for _ in range(rounds):
        for name, run_batch in runners.items():
            timings[name]["single"] += time_calls(run_batch, one, single)
            timings[name]["batch"] += time_calls(run_batch, batch, batches)
    from pipeline.export import size_bytes

    return {
        name: {
            "size_bytes": size_bytes(export_dir / FILES[name]),
            "single_ms": 1000 * common.median(values["single"]),
            "batch256_ms": 1000 * common.median(values["batch"]),
            "calls": {kind: len(calls) for kind, calls in values.items()},
        }
        for name, values in timings.items()
    }


def table(results: dict[str, Any]) -> str:
    reference = results["keras (predict_on_batch)"]
    lines = [
        "| format | file size | 1 example (median) | batch of 256 (median) |",
        "|---|--:|--:|--:|",
    ]
    for name, row in results.items():
        single = f"{row['single_ms']:.3f} ms ({reference['single_ms'] / row['single_ms']:.2g}x)"
        batch = f"{row['batch256_ms']:.3f} ms ({reference['batch256_ms'] / row['batch256_ms']:.2g}x)"
        lines.append(f"| {name} | {row['size_bytes'] / 1024:.1f} KiB | {single} | {batch} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--single", type=int, default=20, help="single-example calls per format per round")
    parser.add_argument("--batches", type=int, default=5, help="batch-of-256 calls per format per round")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a param of the pipeline run")
    parser.add_argument("--export-dir", type=Path, help="measure this models/export/ instead of running the pipeline")
    parser.add_argument("--name", default="export_latency", help="results file: bench/results/NAME.json")
    args = parser.parse_args()
    import yaml

    changes = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    info = common.machine_info() | {"cpu_flags": cpu_flags(), "uptime_before": uptime()}
    with tempfile.TemporaryDirectory(prefix="export-latency-") as scratch:
        export_dir = args.export_dir or build_export(Path(scratch) / "repo", changes)
        from pipeline.prepared import open_split
        from pipeline.preprocessing import read_meta

        data = export_dir.parent.parent / "data" / "prepared"
        x_test = open_split("test", read_meta(export_dir / "serving.json"), data).x.load()
        results = measure(export_dir, x_test, args.rounds, args.single, args.batches)
    info["uptime_after"] = uptime()
    payload = {"command": common.command_line(), "machine": info, "params": changes, "results": results}
    path = common.save_results(args.name, payload)
    print(f"{common.describe_machine(info)}; flags {' '.join(info['cpu_flags']) or 'none of AVX2/AVX-512/AMX'}")
    print(f"before: {info['uptime_before']}\nafter:  {info['uptime_after']}")
    print(table(results))
    print(f"(speed-up against keras predict_on_batch in brackets; {path.relative_to(PROJECT_ROOT)})")


if __name__ == "__main__":
    main()
