"""A receiver's answer that arrives in several pieces (through a proxy, over a real
network) is read whole before the sink decides what it means."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from auditshipd.delivery.batch import Batch
from auditshipd.errors import PermanentError
from auditshipd.plugin import SinkContext
from auditshipd.sinks.otlp import OtlpOptions, OtlpSink, validate_options
from auditshipd.sinks.splunk_hec import SplunkHecOptions, SplunkHecSink, validate
from auditshipd.testing import free_port

pytestmark = pytest.mark.integration


def events(n: int) -> list[dict[str, object]]:
    return [{"id": f"ev{i}", "action": "user.login", "occurred_at": "2024-05-01T12:00:00Z",
             "organization": {"slug": "acme"}} for i in range(n)]


@contextlib.asynccontextmanager
async def in_two_writes(url_path: str, status: int, ctype: str, body: bytes
                        ) -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=status, headers={"Content-Type": ctype,
                                                          "Content-Length": str(len(body))})
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        # Let the client's loop take the first piece alone before the rest is written.
        for _ in range(50):
            await asyncio.sleep(0)
        try:
            await resp.write(body[len(body) // 2:])
            await resp.write_eof()
        except ConnectionError:
            pass  # the client stopped reading after the first piece
        return resp

    app = web.Application()
    app.router.add_post(url_path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def context(tmp_path: Path) -> SinkContext:
    return SinkContext(name="t", state_dir=tmp_path, logger=logging.getLogger("test.pieces"))


async def test_hec_invalid_event_number_in_two_pieces(tmp_path: Path) -> None:
    """HEC's 400 naming the invalid event: the events before it count as indexed."""
    body = json.dumps({"text": "Invalid data format", "code": 6,
                       "invalid-event-number": 3}).encode()
    async with in_two_writes("/services/collector/event", 400, "application/json", body) as url:
        opts = SplunkHecOptions(url=url, token="0b4f1c2a-1111-2222-3333-444455556666")
        validate(opts)
        sink = SplunkHecSink("t", opts, context(tmp_path))
        try:
            with pytest.raises(PermanentError) as info:
                await sink.send(Batch(events(10)))
        finally:
            await sink.close()
        assert (info.value.accepted, info.value.rejected) == (3, 1)


async def test_otlp_partial_success_in_two_pieces(tmp_path: Path) -> None:
    """OTLP's partial_success with rejected records is not taken as delivered."""
    answer = logs_service_pb2.ExportLogsServiceResponse()
    answer.partial_success.rejected_log_records = 7
    answer.partial_success.error_message = "7 records dropped: too old"
    body = answer.SerializeToString()
    async with in_two_writes("/v1/logs", 200, "application/x-protobuf", body) as url:
        opts = OtlpOptions(url=url)
        validate_options(opts)
        sink = OtlpSink("t", opts, context(tmp_path))
        try:
            with pytest.raises(PermanentError, match="rejected 7 of 10"):
                await sink.send(Batch(events(10)))
        finally:
            await sink.close()
