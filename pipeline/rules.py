"""The rules params.yaml's values are checked by: each takes a YAML value and returns it typed.

A rule that refuses a value raises `Invalid` with the "what is allowed" half of the sentence;
pipeline/params.py, which knows the key, writes the other half. The sections there map each key
to one of these rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class Invalid(Exception):
    """Raised by a rule with the 'what is allowed' half of the sentence."""


Rule = Callable[[Any], Any]


def describe(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def integer(low: int | None = None, high: int | None = None) -> Rule:
    def rule(value: Any) -> int:
        bounds = _bounds_text(low, high)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"an integer{bounds}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise Invalid(f"an integer{bounds}")
        return value

    return rule


def real(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def rule(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Invalid(f"a number in {interval}")
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if below or above:
            raise Invalid(f"a number in {interval}")
        return float(value)

    return rule


def choice(*names: str) -> Rule:
    def rule(value: Any) -> str:
        if value not in names:
            raise Invalid(f"one of {', '.join(names)}")
        return value

    rule.names = names  # what params.yaml's comments list (tests/test_docs.py compares them)
    return rule


def boolean() -> Rule:
    def rule(value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid("true or false")
        return value

    return rule


def text() -> Rule:
    def rule(value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise Invalid('a string (use "" for none)')
        return value

    return rule


def integer_list(low: int, *, min_length: int = 0) -> Rule:
    def rule(value: Any) -> tuple[int, ...]:
        allowed = f"a list of at least {min_length} integers ≥ {low}" if min_length else f"a list of integers ≥ {low}"
        if not isinstance(value, list) or len(value) < min_length:
            raise Invalid(allowed)
        if any(isinstance(item, bool) or not isinstance(item, int) or item < low for item in value):
            raise Invalid(allowed)
        return tuple(value)

    return rule


def choice_list(*names: str) -> Rule:
    """A non-empty list of distinct names out of `names`, e.g. the export formats."""

    def rule(value: Any) -> tuple[str, ...]:
        allowed = f"a non-empty list of distinct names out of {', '.join(names)}"
        if not isinstance(value, list) or not value or any(item not in names for item in value):
            raise Invalid(allowed)
        if len(set(value)) != len(value):
            raise Invalid(allowed)
        return tuple(value)

    rule.names = names
    return rule


def sha256_mapping() -> Rule:
    def rule(value: Any) -> dict[str, str]:
        allowed = "a mapping of file name to a 64-character hex sha256 ({} for the published checksums)"
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise Invalid(allowed)
        for name, digest in value.items():
            if not isinstance(name, str) or not isinstance(digest, str) or len(digest) != 64:
                raise Invalid(allowed)
            try:
                int(digest, 16)
            except ValueError:
                raise Invalid(allowed) from None
        return dict(value)

    return rule


def host_port() -> Rule:
    def rule(value: Any) -> str:
        allowed = 'HOST:PORT with a port from 1 to 65535, e.g. "10.0.0.5:12355" ("" = detect it)'
        if value is None or value == "":
            return ""
        if not isinstance(value, str):
            raise Invalid(allowed)
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise Invalid(allowed)
        return value

    return rule


def image_size() -> Rule:
    def rule(value: Any) -> tuple[int, ...]:
        allowed = "[] (each image's own size) or [height, width], two integers from 1 to 4096, e.g. [64, 64]"
        if not isinstance(value, list) or len(value) not in (0, 2):
            raise Invalid(allowed)
        if any(isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= 4096 for side in value):
            raise Invalid(allowed)
        return tuple(value)

    return rule


def _bounds_text(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" ≥ {low}"
    if high is not None:
        return f" ≤ {high}"
    return ""
