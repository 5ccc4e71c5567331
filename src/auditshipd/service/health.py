"""Readiness: every sink started and none stuck.

A sink is *stuck* when it has work pending (unread journal bytes or batches in flight)
and has made no progress for ``stuck_after`` seconds. Progress is any change of its
delivered, dead-lettered or quarantined counts or of its committed cursor, so a sink
that keeps retrying without ever succeeding is stuck, while an idle one never is. The
monitor samples the drivers' counters about once a second (never on the hot path).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ReadinessMonitor", "driver_lag_bytes"]


def driver_lag_bytes(driver: Any) -> int:
    """``driver.lag_bytes()``; the reader may change its segment table in its worker
    thread meanwhile, so a concurrent resize is retried instead of failing a scrape."""
    for _ in range(3):
        try:
            return int(driver.lag_bytes())
        except RuntimeError:
            continue
    return 0


def _started(driver: Any) -> bool:
    """``driver.started`` (SinkDriver: its sink's start() succeeded)."""
    return bool(getattr(driver, "started", True))


class ReadinessMonitor:
    __slots__ = ("daemon", "stuck_after", "clock", "_progress", "_task")

    def __init__(self, daemon: Any, stuck_after: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.daemon = daemon
        self.stuck_after = stuck_after
        self.clock = clock
        # sink name -> (progress token, when it last changed or nothing was pending)
        self._progress: dict[str, tuple[tuple[int, ...], float]] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        now = self.clock()
        drivers = dict(self.daemon.drivers)
        for name, driver in drivers.items():
            stats = driver.stats
            token = (stats.delivered, stats.dead_lettered, stats.quarantined,
                     driver.committed.acked_events)
            previous = self._progress.get(name)
            if previous is None or previous[0] != token or not self._pending(driver):
                self._progress[name] = (token, now)
        for name in [n for n in self._progress if n not in drivers]:
            del self._progress[name]

    @staticmethod
    def _pending(driver: Any) -> bool:
        return driver_lag_bytes(driver) > 0 or getattr(driver, "inflight", 0) > 0

    def failing(self) -> dict[str, str]:
        """Sink name -> why it is not ready; empty when the daemon is ready."""
        self.sample()
        now = self.clock()
        drivers = self.daemon.drivers
        config = getattr(self.daemon, "config", None)
        problems: dict[str, str] = {}
        for sc in getattr(config, "sinks", ()):
            if sc.enabled and sc.name not in drivers:
                problems[sc.name] = "not started"
        for name, driver in list(drivers.items()):
            stats = driver.stats
            if not _started(driver) or stats.state == "starting":
                problems[name] = _with_error("not started", stats)
            elif stats.state == "blocked":
                problems[name] = _with_error("blocked (dead-letter storage full?)", stats)
            elif self._pending(driver):
                since = now - self._progress.get(name, ((), now))[1]
                if since > self.stuck_after:
                    problems[name] = _with_error(
                        f"no progress for {since:.0f}s with events pending", stats)
        return problems

    def start(self) -> None:
        interval = max(0.05, min(1.0, self.stuck_after / 4))
        self._task = asyncio.create_task(self._run(interval), name="readiness-monitor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, interval: float) -> None:
        while True:
            self.sample()
            await asyncio.sleep(interval)


def _with_error(reason: str, stats: Any) -> str:
    return f"{reason}; last error: {stats.last_error}" if stats.last_error else reason
