"""Log output: JSON lines when stderr is not a TTY (journald, files), readable on a TTY.

Repeats are rate limited: a sink failing a thousand times a minute must not flood the
journal. Records at WARNING and above with the same logger and message *template*
(``record.msg``, before its arguments are merged) pass ``limit`` times per ``window``
seconds; the rest are counted, and one summary line ("... (repeated 990 more times in
the last 60s)") is written when the window closes: at the next line of any kind after
that, from a timer, or when logging shuts down. Nothing here ever adds a value to a
message; secrets are kept out where messages are written, and the formatters mask
any credential that slipped through (URL user:password and query values...).
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import msgspec

from ..scrub import scrub_secrets

__all__ = ["JsonFormatter", "RateLimitedHandler", "RepeatLimiter", "setup_logging"]

_encode = msgspec.json.Encoder().encode
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with credentials masked (URL user:password and query values...)."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub_secrets(super().format(record)) or ""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub_secrets(record.getMessage()),
        }
        repeated = getattr(record, "repeated", None)
        if repeated is not None:
            doc["repeated"] = repeated
        if record.exc_info:
            doc["exc"] = scrub_secrets(self.formatException(record.exc_info))
        return _encode(doc).decode()


class _Window:
    __slots__ = ("start", "count", "suppressed", "last", "timer")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.suppressed = 0
        self.last: logging.LogRecord | None = None
        self.timer = False


class RepeatLimiter:
    """Decides which records to write; returns summaries of what it held back."""

    def __init__(self, limit: int = 10, window: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic, level: int = logging.WARNING,
                 max_keys: int = 1000) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.level = level
        self.max_keys = max_keys
        self._windows: dict[tuple[str, str], _Window] = {}
        self._next_sweep = 0.0

    def process(self, record: logging.LogRecord) -> list[logging.LogRecord]:
        """The records to write for ``record``, in order (summaries first)."""
        now = self.clock()
        out = self.expired(now) if now >= self._next_sweep else []
        if record.levelno < self.level:
            out.append(record)
            return out
        key = (record.name, str(record.msg))
        w = self._windows.get(key)
        if w is not None and now - w.start >= self.window:
            out.extend(self._close(key, w))
            w = None
        if w is None:
            if len(self._windows) >= self.max_keys:
                oldest = min(self._windows, key=lambda k: self._windows[k].start)
                out.extend(self._close(oldest, self._windows[oldest]))
            w = self._windows[key] = _Window(now)
        w.count += 1
        if w.count <= self.limit:
            out.append(record)
        else:
            w.suppressed += 1
            w.last = record
        return out

    def expired(self, now: float | None = None) -> list[logging.LogRecord]:
        """Summaries of the windows that closed by ``now`` (those windows are dropped)."""
        now = self.clock() if now is None else now
        self._next_sweep = now + min(1.0, self.window)
        out: list[logging.LogRecord] = []
        for key, w in list(self._windows.items()):
            if now - w.start >= self.window:
                out.extend(self._close(key, w))
        return out

    def flush(self) -> list[logging.LogRecord]:
        """Summaries of everything held back so far (at shutdown)."""
        out: list[logging.LogRecord] = []
        for key, w in list(self._windows.items()):
            out.extend(self._close(key, w))
        return out

    def needs_timer(self, record: logging.LogRecord) -> float | None:
        """Seconds until the window of a just-suppressed ``record`` closes, once per window."""
        w = self._windows.get((record.name, str(record.msg)))
        if w is None or w.suppressed != 1 or w.timer:
            return None
        w.timer = True
        return max(0.0, w.start + self.window - self.clock())

    def _close(self, key: tuple[str, str], w: _Window) -> list[logging.LogRecord]:
        del self._windows[key]
        if not w.suppressed or w.last is None:
            return []
        return [self._summary(w.last, w.suppressed)]

    def _summary(self, last: logging.LogRecord, n: int) -> logging.LogRecord:
        times = "time" if n == 1 else "times"
        summary = logging.makeLogRecord({
            "name": last.name, "levelno": last.levelno, "levelname": last.levelname,
            "pathname": last.pathname, "lineno": last.lineno, "funcName": last.funcName,
            "msg": "%s (repeated %d more %s in the last %ss)",
            "args": (last.getMessage(), n, times, f"{self.window:g}"),
            "repeated": n,
        })
        return summary


class RateLimitedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that passes records through a :class:`RepeatLimiter`."""

    def __init__(self, stream: TextIO | None = None, limiter: RepeatLimiter | None = None,
                 *, timers: bool = True) -> None:
        super().__init__(stream)
        self.limiter = limiter or RepeatLimiter()
        self.timers = timers

    def emit(self, record: logging.LogRecord) -> None:
        # Runs under the handler's lock (Handler.handle), which also guards the limiter.
        if getattr(self.stream, "closed", False):
            return  # stderr went away (or a test's captured stream closed): nowhere to log
        for r in self.limiter.process(record):
            super().emit(r)
        if self.timers:
            delay = self.limiter.needs_timer(record)
            if delay is not None:
                timer = threading.Timer(delay + 0.01, self.flush_expired)
                timer.daemon = True
                timer.start()

    def flush_expired(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if getattr(self.stream, "closed", False):
                return
            for r in self.limiter.expired():
                super().emit(r)

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            for r in self.limiter.flush():
                super().emit(r)
        super().close()


def setup_logging(level: str = "info", json: bool | None = None, *,
                  stream: TextIO | None = None, repeat_limit: int = 10,
                  repeat_window: float = 60.0, clock: Callable[[], float] = time.monotonic,
                  timers: bool = True) -> RateLimitedHandler:
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    limiter = RepeatLimiter(repeat_limit, repeat_window, clock=clock)
    handler = RateLimitedHandler(stream, limiter, timers=timers)
    handler.setFormatter(JsonFormatter() if json else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, RateLimitedHandler):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler
