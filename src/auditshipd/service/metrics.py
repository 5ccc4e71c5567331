"""Prometheus metrics and health endpoints on ``[metrics] listen``.

Per-sink counters and gauges are read from the live drivers when Prometheus scrapes
(:class:`DaemonCollector`), so the hot path pays nothing per event. The only value the
pipeline reports itself is the batch latency, once per delivered batch, through
:meth:`DaemonMetrics.batch_latency_observer`
(the daemon passes it to each driver). Each daemon gets its own ``CollectorRegistry``.

Endpoints: ``/metrics`` (text format), ``/healthz`` (200 while the event loop answers),
``/readyz`` (200 when every sink started and none is stuck; 503 with a JSON body naming
the failing sinks otherwise, see :mod:`auditshipd.service.health`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config import Config, MetricsConfig
from ..config.tables import DEFAULT_METRICS_LISTEN, parse_listen
from ..errors import ConfigError, ConfigErrors
from ..hostcheck import allowed_hosts_middleware, default_allowed_hosts
from ..timestamps import parse_time
from .health import ReadinessMonitor, driver_lag_bytes
from .status import journal_lag

__all__ = [
    "DaemonCollector",
    "DaemonMetrics",
    "MetricsConfig",
    "MetricsServer",
    "metrics_config",
    "metrics_listen_problem",
    "start_metrics_server",
]

log = logging.getLogger("auditshipd.metrics")

# Bytes of journal read per file and scrape to count pending lines; estimated beyond.
LAG_COUNT_BUDGET = 4 * 1024 * 1024
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)


def metrics_listen_problem(listen: str) -> str | None:
    """What is wrong with a ``[metrics] listen`` value (None: nothing): what
    ``[portal] listen`` would say of it (:func:`~auditshipd.config.tables.parse_listen`)."""
    try:
        parse_listen(listen)
    except ValueError as exc:
        return str(exc)
    return None


def metrics_config(config: Config) -> MetricsConfig:
    """The ``[metrics]`` table (typed when the file loaded), its values checked; errors
    name ``metrics.<key>``, all of them at once."""
    mc = config.metrics
    errors = []
    problem = metrics_listen_problem(mc.listen)
    if problem is not None:
        errors.append(ConfigError(problem, file=config.source, key="metrics.listen"))
    if not (math.isfinite(mc.ready_stuck_after) and mc.ready_stuck_after > 0):
        errors.append(ConfigError("must be a positive (finite) number of seconds",
                                  file=config.source, key="metrics.ready_stuck_after"))
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    return mc


class DaemonCollector(Collector):
    """Reads ``daemon.drivers[name].stats`` / ``.committed`` / ``.lag_bytes()`` per scrape."""

    def __init__(self, daemon: Any, lag_budget: int = LAG_COUNT_BUDGET) -> None:
        self.daemon = daemon
        self.lag_budget = lag_budget

    def describe(self) -> list[Metric]:
        return []  # values exist only at scrape time; no up-front description

    def collect(self) -> Iterator[Metric]:
        label = ["sink"]
        counters = {
            "read_events": CounterMetricFamily(
                "auditshipd_events_read", "Journal lines read (events and quarantined lines)",
                labels=label),
            "delivered": CounterMetricFamily(
                "auditshipd_events_delivered", "Events acknowledged by the sink", labels=label),
            "retries": CounterMetricFamily(
                "auditshipd_events_retried", "Delivery attempts retried after a retryable failure",
                labels=label),
            "dead_lettered": CounterMetricFamily(
                "auditshipd_events_dead_lettered", "Events written to the dead-letter file",
                labels=label),
            "quarantined": CounterMetricFamily(
                "auditshipd_events_quarantined", "Journal lines quarantined", labels=label),
            "persist_errors": CounterMetricFamily(
                "auditshipd_state_persist_errors",
                "Failed attempts to save the cursor or status file in the state dir",
                labels=label),
        }
        lag_bytes = GaugeMetricFamily(
            "auditshipd_cursor_lag_bytes", "Journal bytes not read yet by the sink", labels=label)
        lag_events = GaugeMetricFamily(
            "auditshipd_cursor_lag_events",
            "Journal lines after the committed cursor (counted up to a read budget per file,"
            " estimated from the average line length beyond)", labels=label)
        acked = GaugeMetricFamily(
            "auditshipd_cursor_acked_events",
            "Events acknowledged or dead-lettered since the cursor was created", labels=label)
        last_success = GaugeMetricFamily(
            "auditshipd_last_success_timestamp_seconds",
            "Unix time of the sink's last successful delivery", labels=label)
        up = GaugeMetricFamily(
            "auditshipd_sink_up", "1 when the sink is active, 0 otherwise", labels=label)
        paths = self.daemon.config.journal.paths
        follow = getattr(self.daemon.config.journal, "follow_symlinks", False)
        drivers = dict(self.daemon.drivers)
        retired = getattr(self.daemon, "retired", None)
        if retired is not None:
            retired.keep_only(configured_sinks(self.daemon))
        # A sink's counters: its drivers replaced during this run plus the live one.
        for name in sorted(set(drivers) | set(retired.totals if retired else ())):
            driver = drivers.get(name)
            sync = getattr(driver, "sync_stats", None)
            if sync is not None:  # lines the shared pass read for it, counted now
                sync()
            for attr, family in counters.items():
                live = getattr(driver.stats, attr) if driver is not None else 0
                family.add_metric([name], live + (retired.of(name, attr) if retired else 0))
        for name, driver in sorted(drivers.items()):
            stats = driver.stats
            lag_bytes.add_metric([name], driver_lag_bytes(driver))
            segments = dict(driver.committed.segments)
            from_end = getattr(getattr(driver, "sc", None), "start_at", "") == "end"
            lag = journal_lag(paths, segments, budget=self.lag_budget, from_end=from_end,
                              follow_symlinks=follow)
            lag_events.add_metric([name], lag.events)
            acked.add_metric([name], driver.committed.acked_events)
            ts = parse_time(stats.last_success_at)
            if ts is not None:
                last_success.add_metric([name], ts)
            up.add_metric([name], 1 if stats.state == "active" else 0)
        yield from counters.values()
        yield from (lag_bytes, lag_events, acked, last_success, up)


class DaemonMetrics:
    """One daemon's registry, collector, latency histogram and readiness monitor. A
    metrics server restarted on new settings serves the same instance again
    (:meth:`reconfigure`): the histogram's counts go on."""

    def __init__(self, daemon: Any, mc: MetricsConfig) -> None:
        self.daemon = daemon
        self.config = mc
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = DaemonCollector(daemon)
        self.registry.register(self.collector)
        self.batch_latency = Histogram(
            "auditshipd_batch_latency_seconds",
            "Seconds from a batch's first delivery attempt to its acknowledgement",
            ["sink"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.readiness = ReadinessMonitor(daemon, mc.ready_stuck_after)
        self._latency_sinks: set[str] = set()

    def reconfigure(self, mc: MetricsConfig) -> None:
        """New ``[metrics]`` settings: a fresh readiness monitor on them."""
        self.config = mc
        self.readiness = ReadinessMonitor(self.daemon, mc.ready_stuck_after)

    def batch_latency_observer(self, sink_name: str) -> Callable[[float], None]:
        self._latency_sinks.add(sink_name)
        return self.batch_latency.labels(sink_name).observe

    def render(self) -> bytes:
        configured = configured_sinks(self.daemon)
        for name in list(self._latency_sinks):  # removed sinks leave, as their counters do
            if name not in configured:
                self._latency_sinks.discard(name)
                self.batch_latency.remove(name)
        return generate_latest(self.registry)




def configured_sinks(daemon: Any) -> set[str]:
    """The names of the sinks in the daemon's running config (enabled or not)."""
    return {sc.name for sc in daemon.config.sinks}


_METRICS = web.AppKey("metrics", DaemonMetrics)


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[_METRICS]
    # The collector counts pending journal lines (file reads): off the event loop.
    body = await asyncio.to_thread(metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    failing = request.app[_METRICS].readiness.failing()
    if failing:
        return web.Response(status=503, content_type="application/json",
                            text=json.dumps({"ready": False, "failing": failing}))
    return web.json_response({"ready": True})


class MetricsServer:
    """A started metrics endpoint. ``metrics`` is None when it could not listen (the
    default address taken): then nothing is recorded."""

    def __init__(self, runner: web.AppRunner, metrics: DaemonMetrics | None) -> None:
        self.runner = runner
        self.metrics = metrics

    async def cleanup(self) -> None:
        await self.runner.cleanup()


async def start_metrics_server(daemon: Any, mc: MetricsConfig,
                               metrics: DaemonMetrics | None = None) -> MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``mc.listen``: ``metrics``
    (those of a previous server of this daemon) or new ones.

    The caller awaits ``server.cleanup()`` at shutdown.
    """
    if metrics is None:
        metrics = DaemonMetrics(daemon, mc)
    else:
        metrics.reconfigure(mc)
    listen_host = mc.address()[0]
    allowed = mc.allowed_hosts or default_allowed_hosts(listen_host)
    app = web.Application(middlewares=[allowed_hosts_middleware(allowed, listen_host)])
    app[_METRICS] = metrics
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)

    async def on_cleanup(_app: web.Application) -> None:
        await metrics.readiness.close()

    app.on_cleanup.append(on_cleanup)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = mc.address()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        config = getattr(daemon, "config", None)
        if mc.listen != DEFAULT_METRICS_LISTEN:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {mc.listen}: {exc.strerror or exc}",
                              file=getattr(config, "source", None), key="metrics.listen") from None
        # The default address taken (another auditshipd on this host): shipping audit
        # events matters more than this endpoint; say so loudly and go on without it.
        log.error("metrics and health endpoints are OFF: cannot listen on the default %s (%s);"
                  " set [metrics] listen to a free address", mc.listen, exc.strerror or exc)
        return MetricsServer(runner, None)
    metrics.readiness.start()
    log.info("metrics and health on http://%s (/metrics, /healthz, /readyz)", mc.listen)
    return MetricsServer(runner, metrics)
