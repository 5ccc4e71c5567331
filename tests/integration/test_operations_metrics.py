"""Metrics and health endpoints of a real daemon: values match what the test shipped."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from auditshipd.testing import free_port, read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration




def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(base: str) -> dict[tuple[str, str], float]:
    status, body = get(f"{base}/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, s.labels.get("sink", ""))] = s.value
    return out


def answers(url: str) -> bool:
    try:
        get(url)
    except OSError:
        return False
    return True


def test_metrics_match_what_was_shipped(ws):
    """N events to a file sink: delivered == read == N, lag 0, a latency observed, 200s."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ws.write_config(f"""
[[sinks]]
name = "local-file"
type = "file"
path = "{ws.out}"
[sinks.batch]
max_events = 100
timeout = 0.05
""", extra=f"""
[metrics]
listen = "127.0.0.1:{port}"
""")
    n = 1234
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: answers(f"{base}/healthz"), 20, message="metrics endpoint up")
        ids = write_events(ws.journal, "m", n)
        wait_for(lambda: len(read_jsonl_ids(ws.out)) >= n, 60, message=f"{n} events delivered")
        wait_for(lambda: scrape(base)[("auditshipd_events_delivered_total", "local-file")] == n,
                 20, message="delivered counter == N")
        m = scrape(base)
        assert m[("auditshipd_events_read_total", "local-file")] == n
        assert m[("auditshipd_events_dead_lettered_total", "local-file")] == 0
        assert m[("auditshipd_events_quarantined_total", "local-file")] == 0
        assert m[("auditshipd_events_retried_total", "local-file")] == 0
        assert m[("auditshipd_cursor_lag_bytes", "local-file")] == 0
        assert m[("auditshipd_cursor_lag_events", "local-file")] == 0
        assert m[("auditshipd_sink_up", "local-file")] == 1
        assert m[("auditshipd_last_success_timestamp_seconds", "local-file")] > 1.6e9
        batches = m[("auditshipd_batch_latency_seconds_count", "local-file")]
        assert 1 <= batches <= n  # one observation per delivered batch
        assert m[("auditshipd_batch_latency_seconds_sum", "local-file")] > 0
        assert get(f"{base}/healthz")[0] == 200
        status, body = get(f"{base}/readyz")
        assert status == 200, body
        assert d.terminate() == 0
    assert sorted(read_jsonl_ids(ws.out)) == sorted(ids)
    wait_for(lambda: not answers(f"{base}/healthz"), 10, message="metrics server stopped")


def test_readyz_503_when_a_sink_keeps_failing(ws):
    """An http sink to a closed port: after ready_stuck_after /readyz is 503 naming it."""
    port = free_port()
    dead = free_port()  # nothing listens there
    base = f"http://127.0.0.1:{port}"
    ws.write_config(f"""
[[sinks]]
name = "local-file"
type = "file"
path = "{ws.out}"

[[sinks]]
name = "siem"
type = "http"
url = "http://127.0.0.1:{dead}/ingest"
[sinks.batch]
max_events = 100
timeout = 0.05
[sinks.retry]
initial_backoff = 0.05
max_backoff = 0.2
""", extra=f"""
[metrics]
listen = "127.0.0.1:{port}"
ready_stuck_after = 1.5
""", shutdown_timeout=1.0)  # the stop cancels the failing sink: no need to wait 10 s for it
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: answers(f"{base}/healthz"), 20, message="metrics endpoint up")
        assert get(f"{base}/readyz")[0] == 200, "nothing pending yet: ready"
        write_events(ws.journal, "f", 20)
        wait_for(lambda: len(read_jsonl_ids(ws.out)) >= 20, 60, message="file sink delivered")
        wait_for(lambda: get(f"{base}/readyz")[0] == 503, 30, interval=0.1,
                 message="/readyz turns 503")
        status, body = get(f"{base}/readyz")
        doc = json.loads(body)
        assert status == 503 and doc["ready"] is False
        assert list(doc["failing"]) == ["siem"], doc
        assert "no progress" in doc["failing"]["siem"]
        m = scrape(base)
        assert m[("auditshipd_sink_up", "siem")] == 0
        assert m[("auditshipd_sink_up", "local-file")] == 1
        assert m[("auditshipd_events_retried_total", "siem")] > 0
        assert m[("auditshipd_events_delivered_total", "siem")] == 0
        assert m[("auditshipd_cursor_lag_events", "siem")] == 20
        assert m[("auditshipd_events_delivered_total", "local-file")] == 20
        assert get(f"{base}/healthz")[0] == 200
        assert d.terminate() == 0
