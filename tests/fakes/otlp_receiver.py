"""An OTLP/HTTP logs receiver that decodes the real opentelemetry-proto messages, for tests.

``POST /v1/logs`` with an ``ExportLogsServiceRequest`` body, protobuf
(``application/x-protobuf``) or OTLP/JSON (``application/json``), plain or gzip. Answers
200 with an ``ExportLogsServiceResponse`` in the request's encoding, as a collector
does. A wrong ``Authorization`` header (when ``token`` is set) gets 401, an undecodable
body 400 (with a ``google.rpc.Status``-shaped message).

Failure kinds for :meth:`~tests.fakes.FakeServer.fail_next`: ``http`` (``status=``,
optional ``retry_after=``), ``partial`` (``rejected=`` records refused, with
``message=``: the first ``rejected`` records are dropped, the rest stored), ``hang``.
"""

from __future__ import annotations

import gzip
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from . import FakeServer, RecordedRequest

__all__ = ["OtlpLogsReceiver", "any_value", "attributes"]


def any_value(value: Any) -> Any:
    """An ``AnyValue`` as the plain JSON value it holds."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    return getattr(value, kind)


class OtlpLogsReceiver(FakeServer):
    """The receiver on ``url``; every stored LogRecord is in ``records`` with its
    resource attributes in ``resources`` (same index)."""

    def __init__(self, token: str | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 max_body_bytes: int | None = None):
        super().__init__(host=host, port=port)
        self.token = token
        # A body (uncompressed) over this size is answered 413, as a collector's limit would.
        self.max_body_bytes = max_body_bytes
        self.records: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        self.scopes: list[Any] = []

    @property
    def url(self) -> str:
        return self.base_url + "/v1/logs"

    @property
    def event_ids(self) -> list[str]:
        return [attributes(r)["auditshipd.event_id"] for r in self.records]

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/logs", self._logs)]

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        is_gzip = request.headers.get("Content-Encoding", "").lower() == "gzip"
        record = RecordedRequest(
            path=request.path,
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            wire_bytes=len(raw), body_bytes=0, gzip=is_gzip, events=0, status=0,
        )
        self.requests.append(record)
        response = await self._handle(request, raw, is_gzip, record)
        record.status = response.status
        self._notify()
        return response

    async def _handle(
        self, request: web.Request, raw: bytes, is_gzip: bool, record: RecordedRequest
    ) -> web.StreamResponse:
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"code": 16, "message": "unauthenticated"}, status=401)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        failure = self._next_failure()
        if failure is not None and failure.kind == "hang":
            await self._hang()
            return web.Response(status=503)
        if failure is not None and failure.kind == "http":
            p = failure.params
            headers = {"Retry-After": str(p["retry_after"])} if "retry_after" in p else None
            return web.json_response({"code": 14, "message": "unavailable"},
                                     status=p["status"], headers=headers)
        try:
            body = gzip.decompress(raw) if is_gzip else raw
            export = ExportLogsServiceRequest()
            if content_type == "application/x-protobuf":
                export.ParseFromString(body)
            elif content_type == "application/json":
                json_format.Parse(body, export)
            else:
                return web.json_response({"code": 3, "message": "unsupported content type"},
                                         status=415)
        except (OSError, EOFError, DecodeError, json_format.ParseError) as exc:
            return web.json_response({"code": 3, "message": f"cannot decode: {exc}"}, status=400)
        record.body_bytes = len(body)
        if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
            return web.json_response({"code": 8, "message": "request too large"}, status=413)
        rejected = failure.params.get("rejected", 0) if failure is not None else 0
        skip = rejected
        for rl in export.resource_logs:
            resource = {kv.key: any_value(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for log in sl.log_records:
                    if skip:
                        skip -= 1
                        continue
                    self.records.append(log)
                    self.resources.append(resource)
                    self.scopes.append(sl.scope)
                    record.events += 1
        response = ExportLogsServiceResponse()
        if rejected:
            response.partial_success.CopyFrom(ExportLogsPartialSuccess(
                rejected_log_records=rejected,
                error_message=failure.params.get("message", "rejected") if failure else "",
            ))
        if content_type == "application/json":
            return web.Response(body=json_format.MessageToJson(response).encode(),
                                content_type="application/json")
        return web.Response(body=response.SerializeToString(),
                            content_type="application/x-protobuf")


def attributes(record: Any) -> dict[str, Any]:
    """A LogRecord's attributes as a dict."""
    return {kv.key: any_value(kv.value) for kv in record.attributes}
