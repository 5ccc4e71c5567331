"""A progress bar on a TTY (stderr), silent otherwise."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """``total`` 0 means unknown: the count alone is shown. ``unit`` names what is
    counted (events, bytes)."""

    def __init__(self, total: int, label: str, *, stream=None, unit: str = ""):
        self.total = max(total, 0)
        self.label = label
        self.unit = f" {unit}" if unit else ""
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if not self.enabled:
            return
        if not self.total:
            if now - self._last > 0.1:
                self._last = now
                self.stream.write(f"\r{self.label} {self.done}{self.unit}")
                self.stream.flush()
            return
        if now - self._last > 0.1 or self.done >= self.total:
            self._last = now
            width = 30
            frac = self.done / self.total if self.total else 1.0
            bar = "#" * int(frac * width)
            self.stream.write(f"\r{self.label} [{bar:<{width}}] {self.done}/{self.total}{self.unit}")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
