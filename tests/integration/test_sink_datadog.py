"""The datadog sink against a real HTTP server that enforces the logs intake rules (tests/fakes)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.fakes.datadog_server import DatadogIntakeServer

from auditshipd.delivery.batch import Batch
from auditshipd.errors import PermanentError, RetryableError
from auditshipd.plugin import SinkContext
from auditshipd.sinks.datadog import (
    MAX_ENTRIES,
    MAX_LOG_BYTES,
    MAX_PAYLOAD_BYTES,
    DatadogOptions,
    DatadogSink,
    validate,
)

pytestmark = pytest.mark.integration

API_KEY = "d41d8cd98f00b204e9800998ecf8427e"


def make_events(n: int, *, start: int = 0, pad: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"01HZY{i:021d}",
            "action": "member.invited",
            "occurred_at": "2024-05-01T12:00:00.000Z",
            "actor": {"type": "user", "email": f"u{i}@example.com"},
            "organization": {"slug": "acme"},
            "metadata": {"pad": "p" * pad, "quote": 'say "hi"\n'},
        }
        for i in range(start, start + n)
    ]


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


@pytest.fixture
async def server() -> AsyncIterator[DatadogIntakeServer]:
    async with DatadogIntakeServer(api_key=API_KEY) as srv:
        yield srv


@pytest.fixture
async def make_sink(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    sinks: list[DatadogSink] = []

    async def factory(srv: DatadogIntakeServer, **options: Any) -> DatadogSink:
        opts = msgspec.convert(
            {"url": srv.url, "api_key": srv.api_key, "timeout": 5.0, **options}, DatadogOptions
        )
        validate(opts)
        ctx = SinkContext(name="dd", state_dir=tmp_path, logger=logging.getLogger("test.dd"))
        sink = DatadogSink("dd", opts, ctx)
        await sink.start()
        sinks.append(sink)
        return sink

    yield factory
    for sink in sinks:
        await sink.close()


async def test_happy_path_every_event_once_with_attributes(server, make_sink):
    """Two batches arrive gzip'd: every id once, entries carry source/service/host/tags and
    the event as a JSON message."""
    sink = await make_sink(
        server, service="acme-audit", ddtags=["env:prod", "team:sec"], hostname="shipper-1"
    )
    events = make_events(150)
    await sink.send(Batch(events[:100]))
    await sink.send(Batch(events[100:]))
    assert server.event_ids == ids(events)
    log = server.logs[0]
    assert log["ddsource"] == "auditshipd"
    assert log["service"] == "acme-audit"
    assert log["hostname"] == "shipper-1"
    assert log["ddtags"] == "env:prod,team:sec"
    assert log["action"] == "member.invited"
    assert log["occurred_at"] == "2024-05-01T12:00:00.000Z"
    assert json.loads(log["message"]) == events[0]
    assert all(r.gzip and r.status == 202 for r in server.requests)
    assert all(r.wire_bytes < r.body_bytes for r in server.requests)
    assert server.requests[0].headers["Content-Type"] == "application/json"


async def test_gzip_off_sends_plain_json(server, make_sink):
    """gzip = false: no Content-Encoding, the same logs arrive."""
    sink = await make_sink(server, gzip=False)
    events = make_events(10)
    await sink.send(Batch(events))
    assert server.event_ids == ids(events)
    assert not server.requests[0].gzip
    assert "Content-Encoding" not in server.requests[0].headers


async def test_more_than_1000_events_split_by_count(server, make_sink):
    """2500 small events: requests of at most 1000 logs, each id once."""
    sink = await make_sink(server)
    events = make_events(2500)
    await sink.send(Batch(events))
    assert server.event_ids == ids(events)
    assert [r.events for r in server.requests] == [MAX_ENTRIES, MAX_ENTRIES, 500]
    assert all(r.status == 202 for r in server.requests)


async def test_payload_over_5mb_split_by_size(server, make_sink):
    """About 12 MB of events: every request stays within 5 MB uncompressed, none 413'd."""
    sink = await make_sink(server)
    events = make_events(60, pad=200_000)
    await sink.send(Batch(events))
    assert server.event_ids == ids(events)
    assert len(server.requests) >= 3
    assert all(r.status == 202 and r.body_bytes <= MAX_PAYLOAD_BYTES for r in server.requests)
    assert server.truncated_by_server == 0


async def test_oversize_log_dead_lettered_alone(server, make_sink):
    """A log above 1 MB with oversize = dead_letter: earlier events sent, then
    PermanentError(accepted=k, rejected=1); the rest goes on."""
    sink = await make_sink(server)
    events = make_events(6)
    events[2]["metadata"]["pad"] = "z" * (MAX_LOG_BYTES + 10)
    with pytest.raises(PermanentError) as info:
        await sink.send(Batch(events))
    assert (info.value.accepted, info.value.rejected) == (2, 1)
    assert "oversize" in str(info.value)
    assert server.event_ids == ids(events[:2])
    await sink.send(Batch(events)[3:])
    assert server.event_ids == ids(events[:2] + events[3:])
    assert server.truncated_by_server == 0


async def test_oversize_log_truncated(server, make_sink):
    """oversize = truncate: the log is sent within 1 MB, marked truncated, id kept."""
    sink = await make_sink(server, oversize="truncate")
    events = make_events(3)
    events[1]["metadata"]["pad"] = '"' * (MAX_LOG_BYTES // 2 + 5)  # escapes double its size
    await sink.send(Batch(events))
    assert server.event_ids == ids(events)
    assert server.truncated_by_server == 0
    log = server.logs[1]
    assert log["truncated"] is True
    size = len(json.dumps(log, separators=(",", ":"), ensure_ascii=False).encode())
    assert MAX_LOG_BYTES - 1000 < size <= MAX_LOG_BYTES
    assert "truncated" not in server.logs[0]


async def test_413_splits_in_halves_and_resends(make_sink):
    """A proxy with a smaller limit answers 413: halves are resent, nothing dead-lettered."""
    async with DatadogIntakeServer(api_key=API_KEY, max_payload_bytes=20_000) as srv:
        sink = await make_sink(srv)
        events = make_events(300, pad=100)
        await sink.send(Batch(events))
        assert sorted(srv.event_ids) == sorted(ids(events))
        assert Counter(srv.event_ids).most_common(1)[0][1] == 1
        assert any(r.status == 413 for r in srv.requests)


async def test_single_event_413_is_permanent(make_sink):
    """One log still too large for the receiver: PermanentError for that event only."""
    async with DatadogIntakeServer(api_key=API_KEY, max_payload_bytes=3_000) as srv:
        sink = await make_sink(srv)
        events = make_events(4)
        events[1]["metadata"]["pad"] = "q" * 5_000
        with pytest.raises(PermanentError) as info:
            await sink.send(Batch(events))
        assert (info.value.accepted, info.value.rejected) == (1, 1)
        assert "413" in str(info.value)
        assert srv.event_ids == ids(events[:1])


async def test_rate_limited_429_honours_rate_limit_reset(server, make_sink):
    """429 with X-RateLimit-Reset: RetryableError with that wait; recovery afterwards."""
    sink = await make_sink(server)
    server.fail_next("rate_limited", reset=12)
    events = make_events(5)
    with pytest.raises(RetryableError) as info:
        await sink.send(Batch(events))
    assert info.value.retry_after == 12
    await sink.send(Batch(events))
    assert server.event_ids == ids(events)


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
async def test_408_and_5xx_retryable_with_retry_after(server, make_sink, status):
    """408/5xx are retryable; Retry-After becomes retry_after."""
    sink = await make_sink(server)
    server.fail_next("http", status=status, headers={"Retry-After": "4"})
    with pytest.raises(RetryableError) as info:
        await sink.send(Batch(make_events(2)))
    assert info.value.retry_after == 4
    assert info.value.accepted == 0


async def test_retryable_failure_mid_batch_reports_accepted(server, make_sink):
    """Split batch, 503 on the second request: accepted = the first request's 1000 events."""
    sink = await make_sink(server)
    events = make_events(1500)
    server.fail_next("http", status=503, after=1)
    with pytest.raises(RetryableError) as info:
        await sink.send(Batch(events))
    assert info.value.accepted == MAX_ENTRIES
    await sink.send(Batch(events)[info.value.accepted :])
    assert server.event_ids == ids(events)


async def test_400_is_permanent_for_that_request_only(server, make_sink):
    """400 on the second request: accepted = 1000, rejected = that request's events."""
    sink = await make_sink(server)
    server.fail_next("http", status=400, body='{"errors":["Bad Request"]}', after=1)
    with pytest.raises(PermanentError) as info:
        await sink.send(Batch(make_events(2200)))
    assert (info.value.accepted, info.value.rejected) == (MAX_ENTRIES, MAX_ENTRIES)


async def test_wrong_api_key_is_permanent_and_secret_free(make_sink):
    """403 for a wrong key: PermanentError for the whole batch; no key in messages or reprs."""
    async with DatadogIntakeServer(api_key="the-right-key-0000") as srv:
        sink = await make_sink(srv, api_key=API_KEY)
        with pytest.raises(PermanentError) as info:
            await sink.send(Batch(make_events(3)))
        assert "403" in str(info.value) and "api_key" in str(info.value)
        assert info.value.rejected is None
        for text in (str(info.value), repr(info.value), repr(sink), repr(sink.options)):
            assert API_KEY not in text
        assert srv.logs == []


async def test_server_echoing_the_key_is_scrubbed(server, make_sink):
    """A receiver that echoes the API key in its error body: the key is masked."""
    sink = await make_sink(server)
    server.fail_next("http", status=400, body=f'{{"errors":["bad key {API_KEY}"]}}')
    with pytest.raises(PermanentError) as info:
        await sink.send(Batch(make_events(1)))
    assert API_KEY not in str(info.value)
    assert "***" in str(info.value)


async def test_hanging_server_times_out_retryable(server, make_sink):
    """A server that never answers: RetryableError after the timeout."""
    sink = await make_sink(server, timeout=0.3)
    server.fail_next("hang")
    with pytest.raises(RetryableError, match="timeout"):
        await sink.send(Batch(make_events(2)))
    server.release()


async def test_refused_connection_is_retryable_then_recovers(server, make_sink):
    """Intake down: RetryableError; back up on the same port: the batch goes through."""
    sink = await make_sink(server)
    events = make_events(20)
    await server.stop()
    with pytest.raises(RetryableError, match="cannot connect"):
        await sink.send(Batch(events))
    await server.start()
    await sink.send(Batch(events))
    assert server.event_ids == ids(events)
