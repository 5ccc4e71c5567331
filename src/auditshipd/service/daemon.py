"""The daemon: ``startup()``, ``main_loop()``, ``shutdown()``.

Signal handlers only set state. SIGTERM/SIGINT: stop reading, flush in-flight batches
within ``shutdown_timeout``, persist cursors, exit 0; a second signal exits at once
(cursors on disk only ever cover acknowledged events, so that is safe). SIGHUP, or an
edit of the config file or of a stream file, reloads: the new config is validated
first; if it is invalid the error is logged with file and key and the running config
stays. Otherwise the difference is applied: removed sinks stop cleanly (cursor kept),
changed sinks restart from their cursor, new sinks start from ``start_at``; a changed
``[journal]`` is taken by the running readers (:mod:`.journal_core`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, SinkConfig
from ..delivery.contexts import sink_context
from ..delivery.driver import SinkDriver
from ..errors import ConfigError
from ..journal.held import take_held
from ..journal.watch import ChangeSignal
from ..scrub import scrub_secrets
from . import heap
from .config_watch import watch_config
from .journal_core import JournalCore
from .loading import (
    build_redactors,
    config_signature,
    load_runtime,
    notify_config_loaded,
    record_reload,
    require_same_state_dir,
    sink_fingerprint,
)
from .metrics_counts import RetiredCounts
from .notify import SystemdNotifier
from .servers import Servers
from .sink_restarts import SinkRestarts
from .startup_checks import check_journal_dir, run_startup_checks
from .state_lock import hold_state_dir
from .store_streams import SOURCE as STORE_SOURCE
from .store_streams import StoreStreams, host_id

if TYPE_CHECKING:
    from ..redaction.redactor import Redactor

__all__ = ["Daemon"]

log = logging.getLogger("auditshipd")


class Daemon:
    def __init__(self, config_path: str | Path | None):
        self.config_path = config_path
        self.config: Config
        self.should_exit = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.drivers: dict[str, SinkDriver] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.signal = ChangeSignal()
        self.notifier = SystemdNotifier()
        self.logger = log
        # The running metrics (None while no metrics server runs): what the drivers'
        # latency observers report to; the counts of the drivers a reload replaced.
        self.metrics: Any = None
        self.retired = RetiredCounts()
        self.leftovers: dict[str, dict[str, tuple[str, int]]] = {}  # see _retire
        self.servers = Servers(self)
        self._cleanups: list[tuple[str, Any]] = []
        self._exit_requested_at = 0.0
        self._background: list[asyncio.Task[Any]] = []
        # Self-service streams defined in the portal's store: another source of sinks.
        self.store_streams = StoreStreams()
        self.reloading = False
        self.core: JournalCore | None = None  # watcher, shared pass, cursor saver
        # A sink whose driver dies of a bug restarts alone; the others go on.
        self.restarts = SinkRestarts(
            self._start_driver, self._sink_config, lambda name: name in self.drivers,
            lambda sc: sink_fingerprint(sc, self.config))

    # -- prose ------------------------------------------------------------------------

    async def serve(self) -> int:
        self._install_signal_handlers()
        heap.tune()
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()
        return 0

    async def startup(self) -> None:
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        self._loaded_signature = self._config_signature()
        self.config, self.pm, self.types = load_runtime(self.config_path)
        cfg = self.config
        cfg.sinks.extend(await self.store_streams.sink_configs(cfg, self.types))
        self._cleanups.append(("store streams", self.store_streams.close()))
        self._report_stream_errors(cfg)
        notify_config_loaded(self.pm, cfg)
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._cleanups.append(("state dir lock", hold_state_dir(cfg)))
        run_startup_checks(cfg)
        self._cleanups.append(("journal", self._close_core()))
        await self._start_core(cfg, build_redactors(cfg))
        await self.servers.start(cfg)
        self._cleanups.append(("servers", self.servers.stop()))
        if self.config_path is not None and cfg.config_watch:
            self._background.append(asyncio.create_task(watch_config(self), name="config-watch"))
        self._background.append(asyncio.create_task(self._poll_store_streams(),
                                                    name="store-streams"))
        interval = self.notifier.watchdog_interval()
        if interval:
            self._background.append(asyncio.create_task(self.notifier.watchdog(interval),
                                                        name="watchdog"))
        await _maybe_await(self.pm.hook.startup(daemon=self))
        heap.settle()
        self.notifier.notify("READY=1", f"STATUS={self.summary()}")
        log.info("auditshipd started: %d sink(s) %s, journal %s (%s)", len(self.drivers),
                 ", ".join(self.drivers), ", ".join(cfg.journal.paths), self.core.watcher.mode)

    async def main_loop(self) -> None:
        exit_wait = asyncio.create_task(self.should_exit.wait())
        reload_wait = asyncio.create_task(self.reload_requested.wait())
        try:
            while not self.should_exit.is_set():
                watched = {exit_wait, reload_wait, *self.tasks.values(), *self._core_tasks()}
                done, _ = await asyncio.wait(watched, timeout=10,
                                             return_when=asyncio.FIRST_COMPLETED)
                if reload_wait in done and not self.should_exit.is_set():
                    self.reload_requested.clear()
                    await self.reload()
                    reload_wait = asyncio.create_task(self.reload_requested.wait())
                for task in self._core_tasks():
                    if task in done and not task.cancelled() and task.exception():
                        log.error("%s failed: %r; stopping", task.get_name(), task.exception())
                        self.should_exit.set()
                for name, task in list(self.tasks.items()):
                    if task in done and task.done() and not task.cancelled() and task.exception():
                        self.tasks.pop(name)
                        self.restarts.crashed(self._retire(name), task.exception())
                self.notifier.notify(f"STATUS={self.summary()}")
        finally:
            exit_wait.cancel()
            reload_wait.cancel()

    async def shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        timeout = self.config.shutdown_timeout if hasattr(self, "config") else 10.0
        log.info("shutting down: flushing in-flight batches (deadline %.1fs)", timeout)
        for task in self._background:
            task.cancel()
        if self.core is not None:
            self.core.halt()  # nothing more is read; in-flight batches finish
        self.restarts.cancel_all()
        await self._stop_drivers(list(self.drivers), timeout)
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
        self.notifier.close()
        log.info("auditshipd stopped")

    # -- reload -----------------------------------------------------------------------

    async def reload(self) -> bool:
        """Apply a new config; False (and the old one keeps running) if it is invalid."""
        self.reloading = True
        try:
            return await self._reload()
        finally:
            self.reloading = False

    async def _reload(self) -> bool:
        self.notifier.notify("RELOADING=1")
        self._loaded_signature = self._config_signature()
        try:
            new, pm, types = await asyncio.to_thread(load_runtime, self.config_path)
            # Before the store is read: a rejected config must not move the streams to
            # the store it names.
            require_same_state_dir(new, self.config)
            journal_warnings = (check_journal_dir(new)
                                if new.journal.path != self.config.journal.path else [])
            await self.servers.check_addresses(new, self.config)
            # First: a broken stream file's running sinks keep their names, which the
            # store's streams then cannot take.
            self._keep_sinks_of_broken_streams(new)
            new.sinks.extend(await self._store_sinks(new, types))
            redactors = build_redactors(new)
        except Exception as exc:  # noqa: BLE001 - no reload may stop the daemon
            reason = str(exc) if isinstance(exc, ConfigError) else (
                f"{self.config_path}: {type(exc).__name__}: {scrub_secrets(str(exc))}")
            log.error("config reload rejected, the running config stays: %s", reason)
            self.notifier.notify("READY=1", f"STATUS=reload rejected: {reason}")
            return False
        old = self.config
        self._report_stream_errors(new)
        old_by, new_by = {s.name: s for s in old.sinks}, {s.name: s for s in new.sinks}
        global_changed = new.redaction != old.redaction
        removed = [n for n in old_by if n not in new_by]
        added = [n for n in new_by if n not in old_by]
        changed = [n for n in new_by if n in old_by and (
            global_changed or sink_fingerprint(new_by[n], new) != sink_fingerprint(old_by[n], old))]
        for warning in journal_warnings:
            log.warning("%s", warning)
        journal_changed = new.journal != old.journal
        if journal_changed and self.core is not None:  # the running readers take it
            await self.core.retune(new.journal, list(self.drivers.values()))
            log.info("[journal] changed: reading %s", ", ".join(new.journal.paths))
        for name in removed + changed + added:
            self.restarts.cancel(name)  # this reload decides what runs under that name
        await self._stop_drivers([n for n in removed + changed if n in self.drivers],
                                 new.shutdown_timeout)
        self.config, self.pm, self.types = new, pm, types
        for name in changed + added:
            sc = new_by[name]
            if sc.enabled:
                await self._start_or_retry(sc, redactors[name])
        self._drop_leftovers(keep=[n for n, sc in new_by.items() if sc.enabled])
        if (new.portal, new.metrics, new.journal.path) != (old.portal, old.metrics, old.journal.path):
            await self.servers.restart(new, old)
        notify_config_loaded(self.pm, new)
        if removed or added or changed or journal_changed:
            await asyncio.to_thread(record_reload, new, added, removed, changed, journal_changed)
        log.info("config reloaded: %d added %s, %d removed %s, %d changed %s", len(added), added,
                 len(removed), removed, len(changed), changed)
        heap.settle()
        self.notifier.notify("READY=1", f"STATUS={self.summary()}")
        return True

    async def _store_sinks(self, new: Config, types: dict[str, Any]) -> list[SinkConfig]:
        """The store's streams for ``new``; while the store cannot be read, the streams
        running now (those whose names ``new`` leaves free): an outage of the store stops
        no stream, and the next poll that reads it again reloads."""
        sinks = await self.store_streams.sink_configs(new, types)
        if not self.store_streams.unavailable:
            return sinks
        taken = {s.name for s in new.sinks}
        kept = [sc for sc in self.config.sinks if sc.source == STORE_SOURCE and sc.name not in taken]
        if kept:
            log.warning("self-service streams: the portal store cannot be read; the %d"
                        " running stream(s) keep running as they are", len(kept))
        return kept

    async def _start_or_retry(self, sc: SinkConfig, redactor: Redactor) -> None:
        """Start a sink's driver; one that fails to start (a plugin's bug, the state dir
        refusing its files) is reported and tried again later, as a crashed one is:
        the other sinks go on."""
        try:
            await self._start_driver(sc, redactor)
        except Exception as exc:  # noqa: BLE001 - isolated to this sink, reported
            self.restarts.start_failed(sc, redactor, exc, self.config.state_dir)

    def _keep_sinks_of_broken_streams(self, new: Config) -> None:
        names = {s.name for s in new.sinks}
        for org in new.stream_errors:
            for sc in self.config.sinks:
                if sc.stream_org == org and sc.name not in names:
                    new.sinks.append(sc)

    def _report_stream_errors(self, cfg: Config) -> None:
        for org, exc in cfg.stream_errors.items():
            log.error("stream file of organization %r rejected (its previous streams, if any,"
                      " keep running): %s", org, exc)

    # -- parts ------------------------------------------------------------------------

    def _sink_config(self, name: str) -> SinkConfig | None:
        return next((s for s in self.config.sinks if s.name == name and s.enabled), None)

    async def _start_driver(self, sc: SinkConfig, redactor: Redactor) -> None:
        self._run_driver(await self._build_driver(sc, redactor))

    def _run_driver(self, driver: SinkDriver) -> None:
        self.drivers[driver.name] = driver
        self.tasks[driver.name] = asyncio.create_task(driver.run(), name=f"sink-{driver.name}")

    async def _build_driver(self, sc: SinkConfig, redactor: Redactor) -> SinkDriver:
        cfg = self.config
        assert sc.sink_type is not None
        context = sink_context(cfg, sc, logging.getLogger(f"auditshipd.sink.{sc.name}"))
        sink = sc.sink_type.build(sc.name, sc.options, context)
        driver = SinkDriver(cfg, sc, sink, signal=self.signal, redactor=redactor,
                            hooks=self.pm.hook,
                            observe_batch_latency=self.batch_latency_observer(sc.name),
                            shared=self.core.shared, saver=self.core.saver,
                            inherit=self.leftovers.pop(sc.name, None))
        try:
            await driver.start()
        except BaseException:
            # it read nothing: all it was handed is still needed (read or not yet)
            take_held(self.leftovers.setdefault(sc.name, {}), driver.inherit)
            raise
        return driver

    async def _stop_drivers(self, names: list[str], timeout: float) -> None:
        for name in names:
            self.drivers[name].stop()
        tasks = {name: self.tasks[name] for name in names if name in self.tasks}
        if tasks:
            _done, pending = await asyncio.wait(list(tasks.values()), timeout=timeout)
            for name, task in tasks.items():
                if task in pending:
                    log.warning("sink %s did not finish within %.1fs; cancelling its in-flight"
                                " batches (its cursor stays at the last acknowledged one)",
                                name, timeout)
                    self.drivers[name].abort()
            if pending:
                # Aborted drivers still persist their cursor and close their sink; a sink
                # whose close() hangs is cancelled after a short grace.
                _done, pending = await asyncio.wait(pending, timeout=5.0)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        for name in names:
            if name in self.drivers:
                self._retire(name)
            self.tasks.pop(name, None)

    def _retire(self, name: str) -> SinkDriver:
        """Take ``name``'s driver out; its counts stay in the sink's metrics, and the
        descriptors of segments it still read that left the glob (renamed, deleted) wait
        for the driver that replaces it: a reload or a restart loses none of their lines."""
        driver = self.drivers.pop(name)
        self.retired.add(name, driver)
        take_held(self.leftovers.setdefault(name, {}), driver.leftover)
        return driver

    def _drop_leftovers(self, keep: Iterable[str] = ()) -> None:
        """Close the held descriptors of sinks no driver will run again."""
        keep = set(keep)
        for name in [n for n in self.leftovers if n not in keep]:
            take_held({}, self.leftovers.pop(name))
        if self.core is not None:  # and the boxes of segments kept for them
            self.core.shared.kept.forget(keep.__contains__)

    async def _start_core(self, cfg: Config, redactors: dict[str, Redactor]) -> None:
        """Build the reading core on ``cfg`` and start every enabled sink of ``cfg``
        from its cursor (one that fails to start is tried again later)."""
        self.core = JournalCore(cfg, self.signal, lambda: list(self.drivers.values()))
        self.core.watch()
        drivers = []
        for sc in cfg.sinks:
            if sc.enabled:
                try:
                    drivers.append(await self._build_driver(sc, redactors[sc.name]))
                except Exception as exc:  # noqa: BLE001 - this sink only, tried again later
                    self.restarts.start_failed(sc, redactors[sc.name], exc, cfg.state_dir)
        # The pass starts where most sinks are (after a restart: all of them).
        for driver in drivers:  # first: they join the pass before it reads anything
            self._run_driver(driver)
        self.core.begin(d.start_point() for d in drivers)

    async def _close_core(self) -> None:
        if self.core is not None:
            await self.core.close()

    def _core_tasks(self) -> list[asyncio.Task[Any]]:
        return self.core.tasks if self.core is not None else []

    def _config_signature(self) -> tuple[Any, ...]:
        streams = getattr(self, "config", None) and self.config.streams_dir
        return config_signature(self.config_path, streams)

    async def _poll_store_streams(self) -> None:
        """Reload when a self-service stream changed in the store; report their state."""
        host = host_id(self.config)
        while True:
            await asyncio.sleep(self.config.portal.stream_poll_interval)
            if self.reloading:  # its config may name another store: look at the next poll
                continue
            try:
                if await self.store_streams.changed(self.config):
                    self.reload_requested.set()
                await self.store_streams.report(self.config, host)
            except Exception as exc:  # a bug here must not stop the looking
                log.error("self-service streams: %s: %s", type(exc).__name__, exc)

    def batch_latency_observer(self, sink_name: str) -> Callable[[float], None]:
        """What the driver of ``sink_name`` calls once per delivered batch: the latency
        goes to the running metrics' histogram, or nowhere while none runs (before the
        server started, after it stopped, metrics disabled)."""

        def observe(seconds: float) -> None:
            metrics = self.metrics
            if metrics is not None:
                metrics.batch_latency_observer(sink_name)(seconds)
        return observe

    def summary(self) -> str:
        states = Counter(d.stats.state for d in self.drivers.values())
        parts = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no sinks"
        delivered = sum(d.stats.delivered for d in self.drivers.values())
        return f"{len(self.drivers)} sink(s): {parts}; {delivered} events delivered"

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_exit_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)

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
