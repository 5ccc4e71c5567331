"""The daemon: ``startup()``, ``main_loop()``, ``shutdown()``.

Signal handlers only set state. SIGTERM/SIGINT: stop reading, flush in-flight batches
within ``shutdown_timeout``, persist cursors, exit 0; a second signal exits at once
(cursors on disk only ever cover acknowledged events, so that is safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from .config import Config
from .pipeline import SinkDriver
from .runtime import build_redactors, load_runtime
from .sinks.base import SinkContext
from .tail import ChangeSignal
from .watch import JournalWatcher

__all__ = ["Daemon"]

log = logging.getLogger("auditshipd")


class Daemon:
    def __init__(self, config_path: str | Path | None):
        self.config_path = config_path
        self.config: Config
        self.should_exit = asyncio.Event()
        self.force_exit = False
        self.drivers: dict[str, SinkDriver] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.signal = ChangeSignal()
        self.watcher: JournalWatcher | None = None
        self._cleanups: list[tuple[str, Any]] = []
        self.logger = log
        self.portal: Any = None
        self._exit_requested_at = 0.0

    # -- prose ------------------------------------------------------------------------

    async def serve(self) -> int:
        self._install_signal_handlers()
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()
        return 0

    async def startup(self) -> None:
        self.config, self.pm, self.types = load_runtime(self.config_path)
        self.pm.hook.config_loaded(config=self.config)
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        j = cfg.journal
        Path(j.path).parent.mkdir(parents=True, exist_ok=True)
        self.watcher = JournalWatcher(j.paths, self.signal, force_polling=j.force_polling)
        watch_task = asyncio.create_task(self.watcher.run(), name="watcher")
        self._cleanups.append(("watcher", self._stop_watcher(watch_task)))
        redactors = build_redactors(cfg)
        for sc in cfg.sinks:
            if not sc.enabled:
                continue
            assert sc.sink_type is not None
            context = SinkContext(
                name=sc.name, state_dir=cfg.state_dir,
                logger=logging.getLogger(f"auditshipd.sink.{sc.name}"),
                extra={"journal_path": j.path, "config": cfg},
            )
            sink = sc.sink_type.build(sc.name, sc.options, context)
            driver = SinkDriver(cfg, sc, sink, signal=self.signal, redactor=redactors.get(sc.name),
                                hooks=self.pm.hook)
            await driver.start()
            self.drivers[sc.name] = driver
        for name, driver in self.drivers.items():
            self.tasks[name] = asyncio.create_task(driver.run(), name=f"sink-{name}")
        if cfg.portal.get("enabled"):
            from .portal.app import start_portal

            self.portal = await start_portal(cfg)
            self._cleanups.append(("portal", self.portal.close()))
        await _maybe_await(self.pm.hook.startup(daemon=self))
        log.info("auditshipd started: %d sink(s) %s, journal %s (%s)", len(self.drivers),
                 ", ".join(self.drivers), ", ".join(j.paths), self.watcher.mode)

    async def main_loop(self) -> None:
        waiter = asyncio.create_task(self.should_exit.wait())
        pending = {waiter, *self.tasks.values()}
        while not self.should_exit.is_set():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is waiter:
                    continue
                exc = task.exception()
                if exc is not None:
                    log.error("sink task %s failed: %r; stopping", task.get_name(), exc)
                    self.should_exit.set()
        waiter.cancel()

    async def shutdown(self) -> None:
        log.info("shutting down: flushing in-flight batches (deadline %.1fs)",
                 getattr(self, "config", None) and self.config.shutdown_timeout or 0)
        for driver in self.drivers.values():
            driver.stop()
        if self.tasks:
            timeout = self.config.shutdown_timeout
            _done, pending = await asyncio.wait(list(self.tasks.values()), timeout=timeout)
            for name, task in self.tasks.items():
                if task in pending:
                    log.warning("%s did not finish within %.1fs; cancelling (its cursor stays"
                                " at the last acknowledged batch)", task.get_name(), timeout)
                    self.drivers[name].abort()
                    task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        errors = []
        for name, cleanup in reversed(self._cleanups):
            try:
                await cleanup
            except Exception as exc:  # collect, keep cleaning up
                errors.append(f"{name}: {exc!r}")
        if hasattr(self, "pm"):
            try:
                await _maybe_await(self.pm.hook.shutdown(daemon=self))
            except Exception as exc:
                errors.append(f"shutdown hook: {exc!r}")
        for e in errors:
            log.error("cleanup failed: %s", e)
        log.info("auditshipd stopped")

    # -- helpers ----------------------------------------------------------------------

    async def _stop_watcher(self, task: asyncio.Task[None]) -> None:
        assert self.watcher is not None
        self.watcher.stop()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 2)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_exit_signal, sig)

    def _on_exit_signal(self, sig: int) -> None:
        now = asyncio.get_running_loop().time()
        # The same signal delivered twice at once (to the process and its group, as
        # timeout(1) does) is one request; a second one later forces the exit.
        if self.should_exit.is_set() and now - self._exit_requested_at > 0.5:
            log.warning("second %s: exiting now", signal.Signals(sig).name)
            os._exit(1)
        if not self.should_exit.is_set():
            log.info("%s received: stopping", signal.Signals(sig).name)
            self._exit_requested_at = now
            self.should_exit.set()


async def _maybe_await(results: Any) -> None:
    for r in results or ():
        if asyncio.iscoroutine(r) or isinstance(r, asyncio.Future):
            await r
