"""The daemon's portal and metrics servers: started on a config's settings, restarted
on a reload that changes ``[portal]`` or ``[metrics]``.

The metrics themselves (registry, batch-latency histogram) belong to the daemon's run,
not to one server: a restart serves the same ones again, so the histogram keeps its
counts (Prometheus sees no reset of a process that did not restart).
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import Config
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
