"""Metrics collector, readiness monitor and metrics server against a fake daemon."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from auditshipd.config import parse_config
from auditshipd.delivery.status import SinkStats
from auditshipd.errors import ConfigError
from auditshipd.journal.cursor import CursorState
from auditshipd.service.daemon import Daemon
from auditshipd.service.health import ReadinessMonitor
from auditshipd.service.metrics import (
    DaemonMetrics,
    MetricsConfig,
    metrics_config,
    start_metrics_server,
)
from auditshipd.testing import free_port


class FakeDriver:
    def __init__(self, name: str, *, lag: int = 0, inflight: int = 0, started: bool = True):
        self.name = name
        self.stats = SinkStats(sink=name, type="file", state="active")
        self.committed = CursorState(sink=name)
        self.lag = lag
        self.inflight = inflight
        self.started = started
        self.sc = SimpleNamespace(start_at="beginning")

    def lag_bytes(self) -> int:
        return self.lag


def fake_daemon(tmp_path: Path, *drivers: FakeDriver) -> SimpleNamespace:
    journal = tmp_path / "audit.jsonl"
    journal.touch()
    config = SimpleNamespace(
        source="test.toml",
        journal=SimpleNamespace(paths=[f"{journal}*"]),
        sinks=[SimpleNamespace(name=d.name, enabled=True) for d in drivers],
    )
    return SimpleNamespace(config=config, drivers={d.name: d for d in drivers})


def scrape(metrics: DaemonMetrics) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, s.labels.get("sink", ""))] = s.value
    return out


def test_collector_reads_live_stats(tmp_path):
    """Counters and gauges reflect the driver's stats at scrape time, per sink."""
    a, b = FakeDriver("a", lag=123), FakeDriver("b")
    daemon = fake_daemon(tmp_path, a, b)
    metrics = DaemonMetrics(daemon, MetricsConfig())
    a.stats.read_events, a.stats.delivered, a.stats.retries = 10, 7, 3
    a.stats.dead_lettered, a.stats.quarantined = 2, 1
    a.stats.last_success_at = "2024-01-01T00:00:00.000+00:00"
    a.committed.acked_events = 9
    b.stats.state = "error"
    s = scrape(metrics)
    assert s[("auditshipd_events_read_total", "a")] == 10
    assert s[("auditshipd_events_delivered_total", "a")] == 7
    assert s[("auditshipd_events_retried_total", "a")] == 3
    assert s[("auditshipd_events_dead_lettered_total", "a")] == 2
    assert s[("auditshipd_events_quarantined_total", "a")] == 1
    assert s[("auditshipd_cursor_lag_bytes", "a")] == 123
    assert s[("auditshipd_cursor_acked_events", "a")] == 9
    assert s[("auditshipd_last_success_timestamp_seconds", "a")] == 1704067200.0
    assert s[("auditshipd_sink_up", "a")] == 1
    assert s[("auditshipd_sink_up", "b")] == 0
    assert ("auditshipd_last_success_timestamp_seconds", "b") not in s
    a.stats.delivered = 8
    assert scrape(metrics)[("auditshipd_events_delivered_total", "a")] == 8


def test_lag_events_counts_lines_after_committed_cursor(tmp_path):
    """auditshipd_cursor_lag_events counts the journal lines the cursor has not passed."""
    d = FakeDriver("a")
    daemon = fake_daemon(tmp_path, d)
    (tmp_path / "audit.jsonl").write_bytes(b'{"id":"1"}\n' * 5)
    metrics = DaemonMetrics(daemon, MetricsConfig())
    assert scrape(metrics)[("auditshipd_cursor_lag_events", "a")] == 5


def test_batch_latency_histogram_per_daemon(tmp_path):
    """Each DaemonMetrics has its own registry; the observer feeds its histogram."""
    m1 = DaemonMetrics(fake_daemon(tmp_path, FakeDriver("a")), MetricsConfig())
    m2 = DaemonMetrics(fake_daemon(tmp_path, FakeDriver("a")), MetricsConfig())
    observe = m1.batch_latency_observer("a")
    observe(0.02)
    observe(3.0)
    s1, s2 = scrape(m1), scrape(m2)
    assert s1[("auditshipd_batch_latency_seconds_count", "a")] == 2
    assert s1[("auditshipd_batch_latency_seconds_sum", "a")] == pytest.approx(3.02)
    assert ("auditshipd_batch_latency_seconds_count", "a") not in s2


def test_daemon_observer_records_only_while_metrics_run(tmp_path):
    """The observer the daemon gives a driver drops latencies while no metrics server runs
    (none recorded anywhere) and feeds the running one's histogram otherwise."""
    daemon = Daemon(None)
    observe = daemon.batch_latency_observer("a")
    observe(0.5)  # no metrics yet: nothing to record into, no error
    metrics = DaemonMetrics(fake_daemon(tmp_path, FakeDriver("a")), MetricsConfig())
    daemon.metrics = metrics
    observe(0.25)
    assert scrape(metrics)[("auditshipd_batch_latency_seconds_count", "a")] == 1
    assert scrape(metrics)[("auditshipd_batch_latency_seconds_sum", "a")] == pytest.approx(0.25)
    daemon.metrics = None
    observe(0.5)
    assert scrape(metrics)[("auditshipd_batch_latency_seconds_count", "a")] == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_readiness_stuck_only_with_pending_work_and_no_progress(tmp_path):
    """Pending events and no counter moving for stuck_after -> failing; progress clears it."""
    d = FakeDriver("a")
    clock = Clock()
    mon = ReadinessMonitor(fake_daemon(tmp_path, d), 30.0, clock=clock)
    assert mon.failing() == {}
    clock.now += 100  # idle: nothing pending is never stuck
    assert mon.failing() == {}
    d.inflight = 1  # a batch in flight, retried for ever
    d.stats.state, d.stats.last_error = "error", "connection refused"
    mon.sample()
    clock.now += 29
    assert mon.failing() == {}
    clock.now += 2
    failing = mon.failing()
    assert list(failing) == ["a"]
    assert "no progress" in failing["a"] and "connection refused" in failing["a"]
    d.stats.delivered += 1  # progress
    assert mon.failing() == {}
    d.lag = 10  # unread bytes count as pending too
    d.inflight = 0
    clock.now += 31
    assert list(mon.failing()) == ["a"]


def test_readiness_not_started_blocked_and_missing(tmp_path):
    """A sink not started, blocked, or configured without a driver makes readiness fail."""
    a, b = FakeDriver("a", started=False), FakeDriver("b")
    daemon = fake_daemon(tmp_path, a, b)
    daemon.config.sinks.append(SimpleNamespace(name="c", enabled=True))
    daemon.config.sinks.append(SimpleNamespace(name="off", enabled=False))
    b.stats.state = "blocked"
    failing = ReadinessMonitor(daemon, 300.0).failing()
    assert failing["a"].startswith("not started")
    assert failing["b"].startswith("blocked")
    assert failing["c"] == "not started"
    assert "off" not in failing


def _config(metrics_toml: str):
    return parse_config(textwrap.dedent(metrics_toml), "cfg.toml")


def test_metrics_config_defaults_and_values():
    """[metrics] defaults to enabled on 127.0.0.1:9750 with a 300 s stuck threshold."""
    mc = metrics_config(_config(""))
    assert (mc.enabled, mc.listen, mc.ready_stuck_after) == (True, "127.0.0.1:9750", 300.0)
    mc = metrics_config(_config("""
        [metrics]
        enabled = false
        listen = "[::1]:9999"
        ready_stuck_after = 2.5
    """))
    assert (mc.enabled, mc.address(), mc.ready_stuck_after) == (False, ("::1", 9999), 2.5)


@pytest.mark.parametrize(("toml", "key"), [
    ("[metrics]\nlisten = 9750", "metrics.listen"),
    ("[metrics]\nlisten = \"localhost\"", "metrics.listen"),
    ("[metrics]\nlisten = \"127.0.0.1:99999\"", "metrics.listen"),
    ("[metrics]\nready_stuck_after = 0", "metrics.ready_stuck_after"),
    ("[metrics]\nenabled = \"yes\"", "metrics.enabled"),
    ("[metrics]\nlisen = \"127.0.0.1:1\"", "metrics.lisen"),
])
def test_metrics_config_errors_name_the_key(toml, key):
    """Bad [metrics] values raise ConfigError naming the file and metrics.<key>."""
    with pytest.raises(ConfigError) as err:
        metrics_config(_config(toml))
    assert err.value.file == "cfg.toml"
    assert err.value.key == key


async def test_server_endpoints(tmp_path):
    """/metrics, /healthz and /readyz answer; /readyz is 503 naming a blocked sink."""
    d = FakeDriver("a")
    d.stats.delivered = 5
    daemon = fake_daemon(tmp_path, d)
    port = free_port()
    runner = await start_metrics_server(daemon, MetricsConfig(listen=f"127.0.0.1:{port}"))
    try:
        base = f"http://127.0.0.1:{port}"
        runner.metrics.batch_latency_observer("a")(0.1)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain")
                text = await r.text()
            assert 'auditshipd_events_delivered_total{sink="a"} 5.0' in text
            assert 'auditshipd_batch_latency_seconds_count{sink="a"} 1.0' in text
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200 and (await r.json()) == {"ready": True}
            d.stats.state = "blocked"
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503
                body = await r.json()
            assert body["ready"] is False and list(body["failing"]) == ["a"]
    finally:
        await runner.cleanup()


async def test_configured_port_in_use_is_a_config_error(tmp_path):
    """An explicitly configured listen address already taken is a metrics.listen error."""
    port = free_port()
    daemon = fake_daemon(tmp_path, FakeDriver("a"))
    first = await start_metrics_server(daemon, MetricsConfig(listen=f"127.0.0.1:{port}"))
    try:
        with pytest.raises(ConfigError) as err:
            await start_metrics_server(daemon, MetricsConfig(listen=f"127.0.0.1:{port}"))
        assert err.value.key == "metrics.listen" and err.value.file == "test.toml"
    finally:
        await first.cleanup()


async def test_default_port_in_use_logs_and_goes_on(tmp_path, caplog, monkeypatch):
    """The default address taken: an error is logged and the daemon goes on without it."""
    import auditshipd.service.metrics as metrics_module

    port = free_port()
    daemon = fake_daemon(tmp_path, FakeDriver("a"))
    first = await start_metrics_server(daemon, MetricsConfig(listen=f"127.0.0.1:{port}"))
    try:
        monkeypatch.setattr(metrics_module, "DEFAULT_METRICS_LISTEN", f"127.0.0.1:{port}")
        with caplog.at_level("ERROR", logger="auditshipd.metrics"):
            second = await start_metrics_server(daemon, MetricsConfig(listen=f"127.0.0.1:{port}"))
        await second.cleanup()
        assert "metrics and health endpoints are OFF" in caplog.text
    finally:
        await first.cleanup()
