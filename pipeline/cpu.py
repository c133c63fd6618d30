"""What this machine's CPU can do, read from /proc/cpuinfo (Linux): enough to pick or warn about speed settings.

No TensorFlow here: the train stage asks before it loads it. The speed of each setting named here, per CPU,
is measured in BENCHMARKS.md (section 1), docs/bf16.md and docs/performance.md; the messages point there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.params import TrainParams

CPUINFO = Path("/proc/cpuinfo")
# The instructions that run bfloat16 arithmetic natively: AMX tiles (Intel Xeon, Sapphire Rapids and
# newer) and the AVX-512 BF16 dot products (Intel Cooper Lake and newer, AMD Zen 4 and newer).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags of the first CPU listed; empty where the file is missing or unreadable (not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 | ARM
            return frozenset(value.split())
    return frozenset()


def bf16_flags(cpuinfo: Path = CPUINFO) -> tuple[str, ...]:
    """Which of BF16_FLAGS this CPU has, in that order."""
    flags = cpu_flags(cpuinfo)
    return tuple(flag for flag in BF16_FLAGS if flag in flags)


def speed_warnings(params: TrainParams, bf16_flags: tuple[str, ...] = ()) -> list[str]:
    """Speed settings measured to slow this model down on a CPU (bench/step_time.py, bench/bf16.py), as
    sentences to log. `bf16_flags`: the CPU's bfloat16 instructions (`bf16_flags()`)."""
    warnings = _bf16_warnings(params, bf16_flags) if params.precision == "mixed_bfloat16" else []
    if params.distributed.engine != "none":  # engine jax compiles every step, whatever jit_compile says
        return _with_advice(warnings)
    if params.jit_compile and params.model in ("cnn", "fast_cnn"):
        warnings.append("train.jit_compile=true with a CNN: XLA's convolutions make its steps slower")
    if params.jit_compile and params.model == "mlp" and params.mlp.dropout > 0:
        warnings.append("train.jit_compile=true with train.mlp.dropout > 0: XLA's dropout makes the steps slower")
    if params.steps_per_execution > 1 and params.model == "cnn":
        warnings.append("train.steps_per_execution > 1 with a CNN: its epochs run slower than with 1")
    return _with_advice(warnings)


def speed_hint(params: TrainParams, bf16_flags: tuple[str, ...]) -> str | None:
    """One line for the log when this CPU has a faster setting for this model than the one asked for."""
    if params.precision == "float32" and params.model == "cnn" and bf16_flags and params.onednn:
        return (
            f"this CPU has {' and '.join(bf16_flags)}: train.precision=mixed_bfloat16 runs the tutorial CNN's "
            "steps faster than float32 there (docs/bf16.md)"
        )
    return None


def _bf16_warnings(params: TrainParams, bf16_flags: tuple[str, ...]) -> list[str]:
    # Where bench/bf16.py measured bfloat16 slower than float32: without the instructions it is emulated, without
    # oneDNN TensorFlow's own convolutions are slow, and dense nets did not gain even with them.
    setting = "train.precision=mixed_bfloat16"
    if not bf16_flags:
        return [
            f"{setting} without bfloat16 instructions (neither amx_bf16 nor avx512_bf16 in /proc/cpuinfo): "
            "bfloat16 is converted there, not computed natively, so the steps run slower than in float32"
        ]
    if params.distributed.engine == "none" and not params.onednn:
        return [f"{setting} with train.onednn=false: without oneDNN, bfloat16 convolutions run far slower"]
    if params.model == "mlp":
        return [f"{setting} with a dense net: its steps run no faster than in float32, and often slower"]
    return []


def _with_advice(warnings: list[str]) -> list[str]:
    advice = "on a CPU (numbers: BENCHMARKS.md, section 1; docs/bf16.md); change it unless you train on a GPU."
    return [f"{text} {advice}" for text in warnings]
