"""What this machine's CPU can do, read from /proc/cpuinfo (Linux): enough to pick or warn about speed settings.

No TensorFlow here: the train stage asks before it loads it.
"""

from __future__ import annotations

from pathlib import Path

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
