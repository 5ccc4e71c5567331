"""The otlp sink against an aiohttp OTLP/HTTP receiver that decodes the real protobuf
(and OTLP/JSON) messages of opentelemetry-proto."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from tests.fakes.otlp_receiver import OtlpLogsReceiver, any_value, attributes
from ulid import ULID

from auditshipd.errors import PermanentError, RetryableError
from auditshipd.plugin import Batch, SinkContext
from auditshipd.sinks.otlp import OtlpOptions, OtlpSink, validate_options

pytestmark = pytest.mark.integration

TOKEN = "otlp-secret-token-1"


@contextlib.asynccontextmanager
async def otlp_sink(tmp_path: Path, url: str, **options: Any) -> AsyncIterator[OtlpSink]:
    options.setdefault("headers", {"Authorization": f"Bearer {TOKEN}"})
    opts = OtlpOptions(url=url, timeout=5.0, **options)
    validate_options(opts)
    ctx = SinkContext(name="otlp-test", state_dir=tmp_path, logger=logging.getLogger("test.otlp"))
    sink = OtlpSink("otlp-test", opts, ctx)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


def make_events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": str(ULID()),
            "action": "user.login" if i % 3 else "role.grant",
            "occurred_at": f"2024-05-17T13:59:{i % 60:02d}.123456Z",
            "organization": {"slug": ("acme", "globex")[i % 2]},
            "actor": {"email": f"u{i}@acme.test", "name": "Ada"},
            "targets": [{"type": "user", "email": "t@acme.test"}],
            "metadata": {"n": i, "ok": True, "ratio": 0.5, "none": None},
        }
        for i in range(n)
    ]


def check_records(rx: OtlpLogsReceiver, events: list[dict[str, Any]]) -> None:
    """The oracle: one LogRecord per event, in order, with every field the sink promises."""
    assert rx.event_ids == [e["id"] for e in events]
    for record, resource, scope, event in zip(rx.records, rx.resources, rx.scopes, events,
                                              strict=True):
        assert any_value(record.body) == event
        assert attributes(record) == {
            "event.name": event["action"],
            "auditshipd.event_id": event["id"],
            "organization.slug": event["organization"]["slug"],
        }
        seconds = int(event["occurred_at"][17:19])
        assert record.time_unix_nano == (1715954340 + seconds) * 10**9 + 123_456_000
        assert record.observed_time_unix_nano > record.time_unix_nano
        assert record.severity_number == SeverityNumber.SEVERITY_NUMBER_INFO
        assert record.severity_text == "INFO"
        assert resource["service.name"] == "audit-shipper"
        assert resource["deployment.environment"] == "test"
        assert scope.name == "auditshipd"


@pytest.mark.parametrize(("encoding", "gzip"), [("protobuf", True), ("json", False)])
async def test_every_event_is_one_log_record(tmp_path: Path, encoding: str, gzip: bool) -> None:
    """Protobuf+gzip and OTLP/JSON: each event is a LogRecord with time, severity, the
    event as body, attributes and resource attributes; the auth header is sent."""
    events = make_events(250)
    async with OtlpLogsReceiver(token=TOKEN) as rx, otlp_sink(
        tmp_path, rx.base_url, encoding=encoding, gzip=gzip, service_name="audit-shipper",
        resource_attributes={"deployment.environment": "test"},
    ) as sink:
        await sink.send(Batch(events[:200]))
        await sink.send(Batch(events[200:]))
        check_records(rx, events)
        assert {r.gzip for r in rx.requests} == {gzip}
        ctype = "application/x-protobuf" if encoding == "protobuf" else "application/json"
        assert {r.headers["Content-Type"] for r in rx.requests} == {ctype}


async def test_503_and_429_are_retried_with_retry_after(tmp_path: Path) -> None:
    """503 with Retry-After and 429 are retryable (with the hint); the resend is stored."""
    batch = Batch(make_events(10))
    async with OtlpLogsReceiver(token=TOKEN) as rx, otlp_sink(tmp_path, rx.url) as sink:
        rx.fail_next("http", status=503, retry_after=7)
        rx.fail_next("http", status=429, retry_after=1)
        with pytest.raises(RetryableError, match="503") as first:
            await sink.send(batch)
        assert first.value.retry_after == 7
        with pytest.raises(RetryableError, match="429") as second:
            await sink.send(batch)
        assert second.value.retry_after == 1
        await sink.send(batch)
        assert rx.event_ids == batch.ids


async def test_partial_success_goes_to_the_dead_letters(tmp_path: Path) -> None:
    """rejected_log_records > 0: PermanentError with the collector's message (the batch is
    dead-lettered whole: OTLP does not say which records); protobuf and JSON answers."""
    for encoding in ("protobuf", "json"):
        async with OtlpLogsReceiver(token=TOKEN) as rx, otlp_sink(
            tmp_path, rx.url, encoding=encoding
        ) as sink:
            rx.fail_next("partial", rejected=2, message="log record too old")
            with pytest.raises(PermanentError, match="rejected 2 of 5 log records: log record too old") as err:
                await sink.send(Batch(make_events(5)))
            assert err.value.rejected is None and err.value.accepted == 0
            assert len(rx.records) == 3


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_413_halves_the_request_until_the_collector_takes_it(tmp_path: Path, encoding: str) -> None:
    """A collector that takes at most 4 KB a request: the batch goes in halves, every
    record once, in order; a single record over the limit is refused alone, the records
    before it delivered."""
    async with OtlpLogsReceiver(token=TOKEN, max_body_bytes=4_000) as rx, otlp_sink(
        tmp_path, rx.url, encoding=encoding
    ) as sink:
        batch = Batch(make_events(40))
        await sink.send(batch)
        assert rx.event_ids == batch.ids
        assert any(r.status == 413 for r in rx.requests)
        events = make_events(6)
        events[3]["metadata"] = {"pad": "x" * 6_000}
        with pytest.raises(PermanentError, match="413 to a single log record") as err:
            await sink.send(Batch(events))
        assert (err.value.accepted, err.value.rejected) == (3, 1)
        assert rx.event_ids[40:] == [e["id"] for e in events[:3]]


async def test_bad_token_is_permanent_and_not_echoed(tmp_path: Path) -> None:
    """401 is permanent; the header value never appears in the error."""
    async with OtlpLogsReceiver(token="the-right-one") as rx, otlp_sink(tmp_path, rx.url) as sink:
        with pytest.raises(PermanentError, match="401") as err:
            await sink.send(Batch(make_events(1)))
        assert TOKEN not in str(err.value)


async def test_receiver_down_then_back_loses_nothing(tmp_path: Path) -> None:
    """Connection refused while the receiver is down is retryable; after it is back the
    same batch is stored."""
    batch = Batch(make_events(20))
    async with OtlpLogsReceiver(token=TOKEN) as rx, otlp_sink(tmp_path, rx.url) as sink:
        await rx.stop()
        with pytest.raises(RetryableError, match="cannot connect"):
            await sink.send(batch)
        await rx.start()
        await sink.send(batch)
        assert rx.event_ids == batch.ids
