"""A Datadog logs intake (API v2) that enforces the documented limits, for tests.

``POST /api/v2/logs`` with ``DD-API-KEY``; the body (gzip, deflate or plain) is a JSON
array of log objects (or one object). Answers 202 ``{}``. A payload above
``max_payload_bytes`` (uncompressed) or with more than ``max_entries`` logs gets 413;
a log above ``max_log_bytes`` is truncated and counted in ``truncated_by_server`` (as
Datadog does), so a test can assert the sink never relied on that. A missing key gets
401, a wrong one 403, malformed JSON 400.

Failure kinds for :meth:`~tests.fakes.FakeServer.fail_next`: ``http`` (``status=``,
optional ``body=``, ``headers=``), ``rate_limited`` (429 with ``X-RateLimit-*``
headers, ``reset=`` seconds), ``too_large`` (413), ``hang``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

from aiohttp import web

from . import FakeServer, RecordedRequest

__all__ = ["DatadogIntakeServer"]


def _errors(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errors": [message]}, status=status, headers=headers)


class DatadogIntakeServer(FakeServer):
    """The intake on ``url``; every accepted log object is in ``logs``, in arrival order."""

    def __init__(
        self,
        api_key: str = "0123456789abcdef0123456789abcdef",
        *,
        max_payload_bytes: int = 5_000_000,
        max_entries: int = 1000,
        max_log_bytes: int = 1_000_000,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.max_payload_bytes = max_payload_bytes
        self.max_entries = max_entries
        self.max_log_bytes = max_log_bytes
        self.logs: list[dict[str, Any]] = []
        self.truncated_by_server = 0

    @property
    def url(self) -> str:
        """The full intake URL, as a sink's ``url`` option takes it."""
        return self.base_url + "/api/v2/logs"

    @property
    def event_ids(self) -> list[str]:
        return [str(log.get("event_id")) for log in self.logs]

    async def wait_for_logs(self, count: int, timeout: float = 10.0) -> None:
        await self.wait_until(lambda: len(self.logs) >= count, timeout)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v2/logs", self._logs)]

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        encoding = request.headers.get("Content-Encoding", "").lower()
        record = RecordedRequest(
            path=request.path,
            headers={k: v for k, v in request.headers.items() if k.lower() != "dd-api-key"},
            wire_bytes=len(raw), body_bytes=0, gzip=encoding == "gzip", events=0, status=0,
        )
        self.requests.append(record)
        response = await self._handle(request, raw, encoding, record)
        record.status = response.status
        self._notify()
        return response

    async def _handle(
        self, request: web.Request, raw: bytes, encoding: str, record: RecordedRequest
    ) -> web.StreamResponse:
        key = request.headers.get("DD-API-KEY")
        if not key:
            return _errors(401, "Unauthorized")
        if key != self.api_key:
            return _errors(403, "Forbidden")
        failure = self._next_failure()
        if failure is not None:
            kind, p = failure.kind, failure.params
            if kind == "hang":
                await self._hang()
                return _errors(503, "Service Unavailable")
            if kind == "rate_limited":
                return _errors(429, "Too Many Requests", {
                    "X-RateLimit-Limit": "100",
                    "X-RateLimit-Period": "60",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(p.get("reset", 5)),
                    "X-RateLimit-Name": "logs_intake",
                })
            if kind == "too_large":
                return _errors(413, "Payload too large")
            if kind == "http":
                return web.Response(
                    status=p["status"], text=p.get("body", "{}"), headers=p.get("headers")
                )
        try:
            if encoding == "gzip":
                body = gzip.decompress(raw)
            elif encoding == "deflate":
                body = zlib.decompress(raw)
            elif encoding in ("", "identity"):
                body = raw
            else:
                return _errors(415, f"Unsupported Content-Encoding {encoding}")
        except (OSError, EOFError, zlib.error):
            return _errors(400, "Bad Request: cannot decode body")
        record.body_bytes = len(body)
        if len(body) > self.max_payload_bytes:
            return _errors(413, "Payload too large")
        try:
            data = json.loads(body)
        except ValueError:
            return _errors(400, "Bad Request: invalid JSON")
        logs = data if isinstance(data, list) else [data]
        if len(logs) > self.max_entries:
            return _errors(413, "Payload too large: too many logs")
        if not all(isinstance(log, dict) for log in logs):
            return _errors(400, "Bad Request: logs must be objects")
        for log in logs:
            if len(json.dumps(log, separators=(",", ":"), ensure_ascii=False).encode()) > self.max_log_bytes:
                self.truncated_by_server += 1
                log["message"] = str(log.get("message", ""))[: self.max_log_bytes // 2]
        self.logs.extend(logs)
        record.events = len(logs)
        return web.json_response({}, status=202)
