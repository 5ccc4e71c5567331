"""Sinks whose driver died of an unexpected error restart alone; the daemon goes on.

A driver only dies of a bug (in the core or in a sink plugin): sinks' own failures are
retried, dead-lettered or reported by the driver itself. With organizations' self-service
streams on the same daemon, one stream must never take the others down, so the dead
driver's sink is restarted on its own after a growing delay (2 s, doubling, at most 5
minutes; back to 2 s once it has run for 10 minutes). The driver saved its cursor on the
way out: what it had acknowledged is not sent again, what it had not is read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..delivery.status import SinkStats, StatusFile
from ..scrub import scrub_secrets, sink_secrets
from ..timestamps import now_rfc3339

__all__ = ["SinkRestarts"]

log = logging.getLogger("auditshipd")

FIRST_DELAY = 2.0
MAX_DELAY = 300.0
# A sink that ran this long since its last restart starts again from FIRST_DELAY.
STABLE_AFTER = 600.0


class SinkRestarts:
    """``start(sink_config, redactor)`` starts a driver; ``current(name)`` is the sink's
    config in the running config (None once removed); ``running(name)`` whether a driver
    of that name runs (a reload may have started one meanwhile); ``fingerprint(config)``
    what makes two configs of a sink the same (a reload that changed it restarts it
    itself)."""

    def __init__(self, start: Callable[[Any, Any], Awaitable[None]],
                 current: Callable[[str], Any], running: Callable[[str], bool],
                 fingerprint: Callable[[Any], Any],
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self._start = start
        self._current = current
        self._running = running
        self._fingerprint = fingerprint
        self._sleep = sleep
        self._failures: dict[str, tuple[int, float]] = {}  # name -> (count, last restart)
        self._pending: dict[str, asyncio.Task[None]] = {}

    def crashed(self, driver: Any, exc: BaseException) -> float:
        """Report ``driver``'s death and schedule its sink's restart; the delay (s)."""
        message = scrub_secrets(f"{type(exc).__name__}: {exc}", getattr(driver, "secrets", ()))
        delay = self._schedule(driver.name, driver.sc, driver.redactor)
        log.error("sink %s failed: %s; restarting it in %.0fs (the other sinks go on)",
                  driver.name, message, delay)
        stats = getattr(driver, "stats", None)
        if stats is not None:
            stats.state = "error"
            stats.last_error = f"internal error, restarting in {delay:.0f}s: {message}"
            self._write(driver.name, driver.status)
        return delay

    def start_failed(self, sc: Any, redactor: Any, exc: BaseException, state_dir: Path) -> float:
        """Report that the sink ``sc`` could not be started and schedule another try; the
        delay (s). Its status file (in ``state_dir``) says so until it runs."""
        message = scrub_secrets(f"{type(exc).__name__}: {exc}", sink_secrets(sc))
        delay = self._schedule(sc.name, sc, redactor)
        log.error("sink %s did not start: %s; trying again in %.0fs (the other sinks go on)",
                  sc.name, message, delay)
        stats = SinkStats(sink=sc.name, type=sc.type, state="error", started_at=now_rfc3339(),
                          last_error=f"did not start, trying again in {delay:.0f}s: {message}",
                          last_error_at=now_rfc3339())
        self._write(sc.name, StatusFile(state_dir, sc.name, stats, log))
        return delay

    def _schedule(self, name: str, sc: Any, redactor: Any) -> float:
        count, restarted = self._failures.get(name, (0, 0.0))
        if restarted and time.monotonic() - restarted > STABLE_AFTER:
            count = 0
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** count)
        self._failures[name] = (count + 1, restarted)
        old = self._pending.pop(name, None)
        if old is not None:
            old.cancel()
        self._pending[name] = asyncio.create_task(
            self._restart(name, sc, redactor, delay), name=f"restart-{name}")
        return delay

    @staticmethod
    def _write(name: str, status: Any) -> None:
        try:
            status.write(True)
        except Exception as write_exc:  # the log already says what happened
            log.warning("status of sink %s not written: %s", name, write_exc)

    async def _restart(self, name: str, sc: Any, redactor: Any, delay: float) -> None:
        while True:
            await self._sleep(delay)
            now = self._current(name)
            if self._running(name) or now is None or self._fingerprint(now) != self._fingerprint(sc):
                break  # removed, changed or started again by a reload meanwhile
            count, _ = self._failures.get(name, (1, 0.0))
            self._failures[name] = (count, time.monotonic())
            try:
                await self._start(now, redactor)
                break
            except Exception as exc:
                delay = min(MAX_DELAY, delay * 2)
                log.error("sink %s did not restart: %s; trying again in %.0fs", name,
                          scrub_secrets(f"{type(exc).__name__}: {exc}", sink_secrets(sc)), delay)
        self._pending.pop(name, None)

    def cancel(self, name: str) -> None:
        """Forget the restart scheduled for ``name`` (a reload starts, restarts or removes
        that sink itself: two drivers must never run under one name)."""
        task = self._pending.pop(name, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()
