"""The daemon's portal and metrics servers: started on a config's settings, restarted
on a reload that changes ``[portal]`` or ``[metrics]``.

The metrics themselves (registry, batch-latency histogram) belong to the daemon's run,
not to one server: a restart serves the same ones again, so the histogram keeps its
counts (Prometheus sees no reset of a process that did not restart).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..config import Config
from ..config.collect import raise_all
from ..config.loading import config_text
from ..config.tables import DEFAULT_METRICS_LISTEN, parse_listen
from ..errors import ConfigError
from ..scrub import scrub_secrets

__all__ = ["Servers"]

log = logging.getLogger("auditshipd")


class Servers:
    """The portal and metrics servers of ``daemon``. While the metrics server listens,
    ``daemon.metrics`` is its :class:`~auditshipd.service.metrics.DaemonMetrics`
    (None otherwise)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.portal: Any = None
        self.metrics_runner: Any = None
        self._metrics: Any = None  # created on the first start, kept for the whole run

    async def start(self, cfg: Config) -> None:
        """Start the servers ``cfg`` enables. An address they cannot listen on is a
        ConfigError naming ``portal.listen`` or ``metrics.listen`` and its line."""
        try:
            await self._start(cfg)
        except ConfigError as exc:
            raise_all(getattr(exc, "errors", [exc]), config_text(cfg.source), cfg.source)
            raise

    async def _start(self, cfg: Config) -> None:
        if cfg.portal.enabled:
            from ..portal.server import start_portal

            self.portal = await start_portal(cfg)
        from .metrics import DaemonMetrics, metrics_config, start_metrics_server

        mc = metrics_config(cfg)
        if mc.enabled:
            if self._metrics is None:
                self._metrics = DaemonMetrics(self.daemon, mc)
            self.metrics_runner = await start_metrics_server(self.daemon, mc, self._metrics)
            self.daemon.metrics = self.metrics_runner.metrics

    async def check_addresses(self, cfg: Config, running: Config) -> None:
        """Before a reload applies ``cfg``: a ConfigError (with its line) for each
        ``[portal]`` or explicit ``[metrics]`` address it changes to that cannot be
        listened on (taken by another process), so that the reload is refused as a
        whole. A port this daemon's servers hold now is not tried: it is free again
        once they stop."""
        if cfg.portal == running.portal and cfg.metrics == running.metrics:
            return
        held = self._ports()
        wanted = []
        if cfg.portal.enabled:
            wanted.append(("portal.listen", cfg.portal.listen))
        if cfg.metrics.enabled and cfg.metrics.listen != DEFAULT_METRICS_LISTEN:
            wanted.append(("metrics.listen", cfg.metrics.listen))
        errors = []
        for key, listen in wanted:
            host, port = parse_listen(listen)
            if port in held or port == 0:
                continue
            try:
                server = await asyncio.get_running_loop().create_server(
                    asyncio.Protocol, host, port)
            except OSError as exc:
                errors.append(ConfigError(f"cannot listen on {listen}: {exc.strerror or exc}",
                                          file=cfg.source, key=key))
                continue
            server.close()
            await server.wait_closed()
        raise_all(errors, config_text(cfg.source), cfg.source)

    def _ports(self) -> set[int]:
        """The ports the servers listen on now."""
        runners = [self.portal.runner if self.portal is not None else None,
                   self.metrics_runner.runner if self.metrics_runner is not None
                   and self.metrics_runner.metrics is not None else None]
        return {address[1] for runner in runners if runner is not None
                for address in runner.addresses if isinstance(address, tuple)}

    async def stop(self) -> None:
        if self.portal is not None:
            await self.portal.close()
            self.portal = None
        if self.metrics_runner is not None:
            self.daemon.metrics = None
            await self.metrics_runner.cleanup()
            self.metrics_runner = None

    async def restart(self, cfg: Config, old: Config) -> None:
        """The servers on ``cfg``'s settings; when they cannot start there (an address
        taken, the store unreachable), on ``old``'s again, and the daemon goes on
        shipping either way."""
        await self.stop()
        try:
            await self.start(cfg)
            return
        except Exception as exc:  # noqa: BLE001 - reported; the sinks are not affected
            log.error("config reload: the portal or metrics server cannot start on the new"
                      " settings (%s); it keeps the previous ones", scrub_secrets(str(exc)))
        await self.stop()
        try:
            await self.start(old)
        except Exception as exc:  # noqa: BLE001
            log.error("the portal or metrics server cannot start again: %s; it stays off"
                      " until the next reload", scrub_secrets(str(exc)))

