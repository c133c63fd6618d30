"""The log lines of long work inside a stage, e.g. `decoding: 12,000 of 20,000 images (60%)`."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("pipeline")


class Progress:
    """A log line every `every` seconds while long work goes on, e.g. `decoding: 12,000 of 20,000 images (60%)`.

    Work that ends sooner logs nothing. `advance` can be called per table row: it reads the clock about
    ten times a second, whatever the rate of calls.
    """

    def __init__(
        self, what: str, total: int | None = None, unit: str = "", *, scale: float = 1, every: float = 5.0
    ) -> None:
        """`scale` divides the counts shown: bytes counted, megabytes shown with `scale=1e6, unit="MB"`."""
        self.what, self.total, self.unit, self.scale, self.every = what, total, unit, scale, every
        self.done, self.logged = 0, False
        self._last_log = self._last_check = time.monotonic()
        self._next_check, self._stride = 1, 1

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.done >= self._next_check:
            self._check_clock()

    def finish(self) -> None:
        """The last line, once there was a line before it: long work says it ended."""
        if self.logged:
            log.info("%s", self.line())

    def line(self) -> str:
        show = (lambda n: f"{n:,}") if self.scale == 1 else (lambda n: f"{n / self.scale:.1f}")
        unit = f" {self.unit}" if self.unit else ""
        if not self.total:
            return f"{self.what}: {show(self.done)}{unit}"
        return f"{self.what}: {show(self.done)} of {show(self.total)}{unit} ({100 * self.done // self.total}%)"

    def _check_clock(self) -> None:
        now = time.monotonic()
        if now - self._last_check < 0.1:
            self._stride *= 2  # called often: read the clock less often
        self._last_check, self._next_check = now, self.done + self._stride
        if now - self._last_log >= self.every:
            self._last_log, self.logged = now, True
            log.info("%s", self.line())
