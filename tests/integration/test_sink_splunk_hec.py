"""The splunk_hec sink against a real HTTP server that implements HEC (tests/fakes)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.fakes.splunk_hec_server import SplunkHecServer

from auditshipd.delivery.batch import Batch
from auditshipd.errors import PermanentError, RetryableError
from auditshipd.plugin import SinkContext
from auditshipd.sinks.splunk_hec import SplunkHecOptions, SplunkHecSink, validate

pytestmark = pytest.mark.integration

TOKEN = "5f1c2a44-hec-token-do-not-log"


def make_events(n: int, *, start: int = 0, pad: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"01HZX{i:021d}",
            "action": "user.login",
            "occurred_at": f"2024-05-01T12:00:{i % 60:02d}.{i % 1000:03d}Z",
            "actor": {"type": "user", "email": f"u{i}@example.com"},
            "organization": {"slug": "acme"},
            "metadata": {"pad": "x" * pad},
        }
        for i in range(start, start + n)
    ]


@pytest.fixture
async def server() -> AsyncIterator[SplunkHecServer]:
    async with SplunkHecServer(token=TOKEN) as srv:
        yield srv


@pytest.fixture
async def make_sink(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    sinks: list[SplunkHecSink] = []

    async def factory(srv: SplunkHecServer, **options: Any) -> SplunkHecSink:
        opts = msgspec.convert(
            {"url": srv.url, "token": srv.token, "timeout": 2.0, **options}, SplunkHecOptions
        )
        validate(opts)
        ctx = SinkContext(name="splunk", state_dir=tmp_path, logger=logging.getLogger("test.hec"))
        sink = SplunkHecSink("splunk", opts, ctx)
        await sink.start()
        sinks.append(sink)
        return sink

    yield factory
    for sink in sinks:
        await sink.close()


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


async def test_happy_path_every_event_once(server, make_sink):
    """Three batches arrive: every event id exactly once, in order, with HEC metadata."""
    sink = await make_sink(server, index="audit", source="acme-app", host="shipper-1")
    events = make_events(300)
    for i in range(0, 300, 100):
        await sink.send(Batch(events[i : i + 100]))
    assert server.event_ids == ids(events)
    first = server.events[0]
    assert first["host"] == "shipper-1"
    assert first["source"] == "acme-app"
    assert first["sourcetype"] == "auditshipd:audit"
    assert first["index"] == "audit"
    assert first["fields"] == {"event_id": events[0]["id"]}
    assert first["event"] == events[0]
    assert first["time"] == pytest.approx(1714564800.0)
    assert server.events[7]["time"] == pytest.approx(1714564807.007)
    assert len(server.requests) == 3
    assert all(r.status == 200 and not r.gzip for r in server.requests)


async def test_default_sourcetype_and_no_index(server, make_sink):
    """Without index/source, those keys are left out and sourcetype defaults."""
    sink = await make_sink(server)
    await sink.send(Batch(make_events(2)))
    assert server.events[0]["sourcetype"] == "auditshipd:audit"
    assert "index" not in server.events[0] and "source" not in server.events[0]
    assert server.events[0]["host"]


async def test_gzip_bodies_are_decoded_by_the_server(server, make_sink):
    """With gzip = true the server receives Content-Encoding: gzip and decodes every event."""
    sink = await make_sink(server, gzip=True)
    events = make_events(500, pad=200)
    await sink.send(Batch(events))
    assert server.event_ids == ids(events)
    assert all(r.gzip for r in server.requests)
    assert all(r.wire_bytes < r.body_bytes for r in server.requests)


async def test_acks_batch_counts_only_after_indexer_ack(make_sink):
    """With acks the sink polls /ack until true; the channel is one UUID per sink."""
    async with SplunkHecServer(token=TOKEN, acks=True, ack_after_polls=3) as srv:
        sink = await make_sink(srv, acks=True, ack_poll_interval=0.01)
        events = make_events(50)
        await sink.send(Batch(events[:25]))
        await sink.send(Batch(events[25:]))
        assert srv.event_ids == ids(events)
        assert srv.ack_queries >= 3
        assert srv.pending_acks == 0
        assert srv.channels == {sink.channel}


async def test_acks_with_split_requests_all_confirmed(make_sink):
    """A batch split into several requests waits for every request's ack id."""
    async with SplunkHecServer(token=TOKEN, acks=True, ack_after_polls=2) as srv:
        sink = await make_sink(srv, acks=True, ack_poll_interval=0.01, max_request_bytes=4096)
        events = make_events(100)
        await sink.send(Batch(events))
        assert srv.event_ids == ids(events)
        assert len(srv.requests) > 3
        assert srv.pending_acks == 0


async def test_ack_timeout_is_retryable(make_sink):
    """Acks that never turn true end in RetryableError after ack_timeout, nothing accepted."""
    async with SplunkHecServer(token=TOKEN, acks=True) as srv:
        srv.lose_acks = True
        sink = await make_sink(srv, acks=True, ack_poll_interval=0.01, ack_timeout=0.2)
        with pytest.raises(RetryableError) as info:
            await sink.send(Batch(make_events(5)))
        assert info.value.accepted == 0
        assert "ack_timeout" in str(info.value)


async def test_code_10_tells_user_to_enable_acks(make_sink):
    """A token with indexer acknowledgement and acks = false: code 10, message says acks = true."""
    async with SplunkHecServer(token=TOKEN, acks=True) as srv:
        sink = await make_sink(srv)
        with pytest.raises(PermanentError) as info:
            await sink.send(Batch(make_events(3)))
        assert "code 10" in str(info.value)
        assert "acks = true" in str(info.value)
        assert info.value.rejected is None and info.value.accepted == 0
        assert srv.events == []


async def test_busy_code_9_is_retryable_with_retry_after(server, make_sink):
    """503 code 9 with Retry-After: RetryableError carrying retry_after, then recovery."""
    sink = await make_sink(server)
    server.fail_next("busy", retry_after=7)
    events = make_events(10)
    with pytest.raises(RetryableError) as info:
        await sink.send(Batch(events))
    assert info.value.retry_after == 7
    assert info.value.accepted == 0
    await sink.send(Batch(events))
    assert server.event_ids == ids(events)


async def test_internal_error_code_8_is_retryable(server, make_sink):
    """500 code 8 is retryable, without a hint."""
    sink = await make_sink(server)
    server.fail_next("internal")
    with pytest.raises(RetryableError) as info:
        await sink.send(Batch(make_events(2)))
    assert info.value.retry_after is None
    assert "code 8" in str(info.value)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_plain_http_errors_from_a_proxy_are_retryable(server, make_sink, status):
    """A non-HEC answer (proxy HTML) with 429/5xx is retryable."""
    sink = await make_sink(server)
    server.fail_next("http", status=status, body="<html>gateway</html>", headers={"Retry-After": "3"})
    with pytest.raises(RetryableError) as info:
        await sink.send(Batch(make_events(2)))
    assert info.value.retry_after == 3


async def test_invalid_event_number_dead_letters_only_that_event(server, make_sink):
    """400 invalid-event-number N: events before N indexed, accepted=N, rejected=1; the
    rest is resent by the core and nothing is duplicated."""
    sink = await make_sink(server)
    events = make_events(10)
    server.fail_next("invalid_event", at=4)
    with pytest.raises(PermanentError) as info:
        await sink.send(Batch(events))
    err = info.value
    assert (err.accepted, err.rejected) == (4, 1)
    assert server.event_ids == ids(events[:4])
    # What the core does next: dead-letter event 4, send the events after it.
    await sink.send(Batch(events)[err.accepted + err.rejected :])
    delivered = Counter(server.event_ids)
    assert set(delivered) == set(ids(events)) - {events[4]["id"]}
    assert max(delivered.values()) == 1


async def test_invalid_event_in_a_later_sub_request_counts_earlier_requests(server, make_sink):
    """Split batch, bad event in the third request: accepted counts all earlier events."""
    sink = await make_sink(server, max_request_bytes=2048)
    events = make_events(60)
    await sink.send(Batch(events[:1]))
    per_request = server.requests[0].body_bytes
    server.requests.clear()
    server.events.clear()
    server.fail_next("invalid_event", at=1, after=2)
    with pytest.raises(PermanentError) as info:
        await sink.send(Batch(events))
    first_two = sum(r.events for r in server.requests[:2])
    assert first_two == 2 * (2048 // per_request)
    assert (info.value.accepted, info.value.rejected) == (first_two + 1, 1)
    assert server.event_ids == ids(events[: first_two + 1])


async def test_retryable_failure_in_later_sub_request_reports_accepted(server, make_sink):
    """Split batch, 503 on the second request: RetryableError accepted = first request's events."""
    sink = await make_sink(server, max_request_bytes=2048)
    events = make_events(40)
    server.fail_next("busy", after=1)
    with pytest.raises(RetryableError) as info:
        await sink.send(Batch(events))
    assert info.value.accepted == server.requests[0].events > 0
    await sink.send(Batch(events)[info.value.accepted :])
    assert server.event_ids == ids(events)


async def test_invalid_token_is_permanent_and_secret_free(make_sink):
    """403 code 4: PermanentError for the whole batch; the token is in no message or repr."""
    async with SplunkHecServer(token="the-right-token") as srv:
        sink = await make_sink(srv)
        sink_wrong = await make_sink(srv, token=TOKEN)
        with pytest.raises(PermanentError) as info:
            await sink_wrong.send(Batch(make_events(3)))
        assert "code 4" in str(info.value) and "token" in str(info.value)
        assert info.value.rejected is None
        for text in (str(info.value), repr(info.value), repr(sink_wrong), repr(sink_wrong.options)):
            assert TOKEN not in text
        assert "the-right-token" not in repr(sink.options)
        assert srv.events == []


async def test_token_disabled_is_permanent(server, make_sink):
    """403 code 1 (token disabled) is permanent."""
    sink = await make_sink(server)
    server.fail_next("token_disabled")
    with pytest.raises(PermanentError, match="code 1"):
        await sink.send(Batch(make_events(1)))


async def test_incorrect_index_is_permanent_for_the_rest(make_sink):
    """An index the token may not write to: code 7, all the rest rejected, hint names index."""
    async with SplunkHecServer(token=TOKEN, indexes=["main"]) as srv:
        sink = await make_sink(srv, index="secret")
        with pytest.raises(PermanentError) as info:
            await sink.send(Batch(make_events(5)))
        assert "code 7" in str(info.value) and "the index 'secret'" in str(info.value)
        assert info.value.rejected is None
        assert srv.events == []


async def test_incorrect_default_index_is_named_as_such(server, make_sink):
    """Code 7 for a sink without index: the message speaks of the token's default index."""
    sink = await make_sink(server)
    server.fail_next("incorrect_index")
    with pytest.raises(PermanentError) as info:
        await sink.send(Batch(make_events(2)))
    assert "the token's default index does not exist" in str(info.value)
    assert "None" not in str(info.value)


async def test_splitting_respects_max_request_bytes(make_sink):
    """max_request_bytes splits a batch; the server rejects anything larger with 413."""
    async with SplunkHecServer(token=TOKEN, max_content_length=8192) as srv:
        sink = await make_sink(srv, max_request_bytes=8192)
        events = make_events(400, pad=100)
        await sink.send(Batch(events))
        assert srv.event_ids == ids(events)
        assert len(srv.requests) > 5
        assert all(r.status == 200 and r.wire_bytes <= 8192 for r in srv.requests)


async def test_413_from_server_halves_and_resends(make_sink):
    """Server limit below max_request_bytes: 413 halves the request until it fits; no loss."""
    async with SplunkHecServer(token=TOKEN, max_content_length=5000) as srv:
        sink = await make_sink(srv, max_request_bytes=100_000)
        events = make_events(200)
        await sink.send(Batch(events))
        assert sorted(srv.event_ids) == sorted(ids(events))
        assert Counter(srv.event_ids).most_common(1)[0][1] == 1
        assert any(r.status == 413 for r in srv.requests)


async def test_event_larger_than_max_request_is_dead_lettered_alone(server, make_sink):
    """One event above max_request_bytes: the events before it are sent, then
    PermanentError(accepted=k, rejected=1) for that event only."""
    sink = await make_sink(server, max_request_bytes=4096)
    events = make_events(6)
    events[3]["metadata"]["pad"] = "y" * 10_000
    with pytest.raises(PermanentError) as info:
        await sink.send(Batch(events))
    assert (info.value.accepted, info.value.rejected) == (3, 1)
    assert server.event_ids == ids(events[:3])
    await sink.send(Batch(events)[4:])
    assert server.event_ids == ids(events[:3] + events[4:])


async def test_hanging_server_times_out_retryable(server, make_sink):
    """A server that never answers: RetryableError after the timeout."""
    sink = await make_sink(server, timeout=0.3)
    server.fail_next("hang")
    with pytest.raises(RetryableError, match="timeout"):
        await sink.send(Batch(make_events(2)))
    server.release()


async def test_refused_connection_is_retryable_then_recovers(server, make_sink):
    """Server down: RetryableError; back up on the same port: the batch goes through."""
    sink = await make_sink(server)
    events = make_events(20)
    await server.stop()
    with pytest.raises(RetryableError, match="cannot connect"):
        await sink.send(Batch(events))
    await server.start()
    await sink.send(Batch(events))
    assert server.event_ids == ids(events)


async def test_concurrent_batches_all_arrive(server, make_sink):
    """Several batches in flight on one sink: every id once."""
    sink = await make_sink(server)
    events = make_events(400)
    await asyncio.gather(*(sink.send(Batch(events[i : i + 50])) for i in range(0, 400, 50)))
    await server.wait_for_events(400)
    assert sorted(server.event_ids) == sorted(ids(events))


async def test_failure_after_unacknowledged_requests_accepts_only_confirmed(make_sink):
    """Split batch with acks: the second request fails while the first is still
    unacknowledged: RetryableError with accepted=0 (nothing confirmed, nothing skipped)."""
    async with SplunkHecServer(token=TOKEN, acks=True) as srv:
        srv.lose_acks = True
        sink = await make_sink(
            srv, acks=True, ack_poll_interval=0.01, ack_timeout=0.2, max_request_bytes=2048
        )
        srv.fail_next("invalid_event", at=0, after=1)
        with pytest.raises(RetryableError) as info:
            await sink.send(Batch(make_events(40)))
        assert info.value.accepted == 0
        assert "not acknowledged" in str(info.value)


async def test_acks_on_but_token_without_acks_still_delivers(server, make_sink, caplog):
    """acks = true against a token without indexer acknowledgement: delivered, with a warning."""
    sink = await make_sink(server, acks=True)
    events = make_events(5)
    with caplog.at_level(logging.WARNING, logger="test.hec"):
        await sink.send(Batch(events))
    assert server.event_ids == ids(events)
    assert "no ackId" in caplog.text
    assert TOKEN not in caplog.text


async def test_control_characters_in_hecs_text_are_not_passed_on(server, make_sink):
    """HEC's "text" with a NUL (JSON \\u0000): the error shows \\x00, never the character."""
    sink = await make_sink(server)
    body = json.dumps({"text": "Invalid\x00data", "code": 6})
    server.fail_next("http", status=400, body=body, headers={"Content-Type": "application/json"})
    with pytest.raises(PermanentError) as info:
        await sink.send(Batch(make_events(2)))
    assert "Invalid\\x00data" in str(info.value) and "\x00" not in str(info.value)
