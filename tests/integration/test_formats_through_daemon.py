"""Sinks with a ``format``, driven by the real daemon (subprocess) against real servers:
CEF text bodies over http, OCSF lines in a file, ECS events in Splunk HEC."""

from __future__ import annotations

import functools
import json

import pytest
from aiohttp import web
from tests.fakes.splunk_hec_server import SplunkHecServer
from tests.integration.test_sinks_through_daemon import assert_redacted, write_events
from tests.unit.test_formats import assert_valid_ocsf, parse_cef

from auditshipd.testing import free_port, wait_for_async

pytestmark = pytest.mark.integration


class TextReceiver:
    """A real HTTP server that keeps each request's raw body and content type, answering
    503 to the first request (so the CEF batch is also retried)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.content_types: set[str] = set()
        self.requests = 0
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if self.requests == 1:
            return web.Response(status=503, headers={"Retry-After": "0"})
        self.bodies.append(body)
        self.content_types.add(request.headers.get("Content-Type", ""))
        return web.Response(status=200)

    async def __aenter__(self) -> TextReceiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/ingest", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def cef_lines(self) -> list[str]:
        return [line for body in self.bodies for line in body.decode().splitlines()]


wait_until = functools.partial(wait_for_async, timeout=60.0, interval=0.05)


async def test_formats_end_to_end_through_daemon(ws):
    """One journal, three sinks in three formats: the http receiver gets CEF lines as
    text/plain (after a 503), the file sink writes schema-valid OCSF lines, Splunk HEC
    gets ECS events under sourcetype auditshipd:ecs; every id reaches every sink and no
    internal id reaches any of them."""
    async with TextReceiver() as rx, SplunkHecServer(token="hec-token-123") as hec:
        ocsf_file = ws.root / "out" / "ocsf.jsonl"
        ws.write_config(f"""
[[sinks]]
name = "siem-cef"
type = "http"
url = "{rx.url}"
encoding = "ndjson"
format = "cef"
[sinks.batch]
max_events = 300
timeout = 0.05
[sinks.retry]
initial_backoff = 0.05
max_backoff = 0.2

[[sinks]]
name = "lake"
type = "file"
path = "{ocsf_file}"
format = "ocsf"

[[sinks]]
name = "splunk"
type = "splunk_hec"
url = "{hec.url}"
token = "hec-token-123"
format = "ecs"
""")
        ids = write_events(ws.journal, 1000)
        d = ws.daemon().start()
        try:
            def cef_ids():
                return {parse_cef(x)["ext"]["externalId"] for x in rx.cef_lines()}

            def ocsf_lines():
                return ocsf_file.read_text().splitlines() if ocsf_file.exists() else []

            await wait_until(lambda: cef_ids() >= set(ids), message="every id over http (CEF)")
            await wait_until(lambda: len(ocsf_lines()) >= len(ids), message="OCSF lines")
            await wait_until(lambda: set(hec.event_ids) >= set(ids), message="ECS events in HEC")
            assert d.terminate() == 0
        finally:
            if d.poll() is None:
                d.kill()
    assert rx.content_types == {"text/plain; charset=utf-8"}
    cef = [parse_cef(x) for x in rx.cef_lines()]
    assert {c["signature"] for c in cef} == {"user.provisioned"}
    assert {c["ext"]["duser"] for c in cef} >= {"u0@acme.test", "u999@acme.test"}
    raw_cef = b"".join(rx.bodies)
    assert_redacted(raw_cef)

    docs = [json.loads(x) for x in ocsf_lines()]
    assert {doc["metadata"]["uid"] for doc in docs} == set(ids)
    for doc in docs[:50]:
        assert_valid_ocsf(doc)
    assert docs[0]["class_uid"] == 3001 and docs[0]["user"]["email_addr"] == "u0@acme.test"
    assert_redacted(ocsf_file.read_bytes())

    assert {e["sourcetype"] for e in hec.events} == {"auditshipd:ecs"}
    assert {e["event"]["event"]["id"] for e in hec.events} == set(ids)
    assert all(e["event"]["event"]["category"] == ["iam"] for e in hec.events)
    assert_redacted(json.dumps(hec.events).encode())
