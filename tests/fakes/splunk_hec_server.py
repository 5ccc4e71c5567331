"""A Splunk HTTP Event Collector that behaves like the real one, for tests.

Implements ``POST /services/collector/event`` (concatenated JSON event objects,
``Authorization: Splunk <token>``, gzip bodies, ``max_content_length`` -> 413, answer
codes 0-14 with ``invalid-event-number``) and indexer acknowledgement
(``X-Splunk-Request-Channel``, ``ackId``, ``POST /services/collector/ack``).

Failure kinds for :meth:`~tests.fakes.FakeServer.fail_next`:

``busy`` (503 code 9, ``retry_after=`` sets Retry-After), ``internal`` (500 code 8),
``http`` (``status=``, optional ``body=`` and ``headers=``), ``invalid_event``
(``at=N``: events before N are indexed, then 400 code 6 ``invalid-event-number`` N),
``incorrect_index`` (400 code 7), ``token_disabled`` (403 code 1), ``too_large``
(413), ``hang`` (no answer until the server stops or ``release()``).
"""

from __future__ import annotations

import gzip
import json
import uuid
import zlib
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from . import FakeServer, RecordedRequest

__all__ = ["SplunkHecServer"]

_decoder = json.JSONDecoder()

_TEXT = {
    0: "Success",
    1: "Token disabled",
    2: "Token is required",
    3: "Invalid authorization",
    4: "Invalid token",
    5: "No data",
    6: "Invalid data format",
    7: "Incorrect index",
    8: "Internal server error",
    9: "Server is busy",
    10: "Data channel is missing",
    11: "Invalid data channel",
    12: "Event field is required",
    13: "Event field cannot be blank",
    14: "ACK is disabled",
}


def _answer(status: int, code: int, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"text": _TEXT[code], "code": code, **extra}, status=status, headers=headers)


class SplunkHecServer(FakeServer):
    """HEC on ``url``; every indexed event object is in ``events``, in arrival order.

    ``acks``: the token has indexer acknowledgement enabled (a channel is then required).
    ``ack_after_polls``: how many ack queries an ack id needs before it reads true.
    ``lose_acks``: acks never become true (to test ack timeouts).
    ``indexes``: the indexes the token may write to (``None``: any).
    """

    def __init__(
        self,
        token: str = "00000000-0000-0000-0000-000000000000",
        *,
        acks: bool = False,
        ack_after_polls: int = 1,
        max_content_length: int = 1_000_000,
        indexes: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        super().__init__(host=host, port=port)
        self.token = token
        self.acks = acks
        self.ack_after_polls = ack_after_polls
        self.lose_acks = False
        self.max_content_length = max_content_length
        self.indexes = set(indexes) if indexes is not None else None
        self.events: list[dict[str, Any]] = []
        self.ack_queries = 0
        self.channels: set[str] = set()
        self._next_ack: dict[str, int] = {}
        self._unacked: dict[tuple[str, int], int] = {}

    @property
    def url(self) -> str:
        """The base URL, as a sink's ``url`` option takes it."""
        return self.base_url

    @property
    def event_ids(self) -> list[str]:
        return [str(e.get("fields", {}).get("event_id") or e["event"].get("id")) for e in self.events]

    @property
    def pending_acks(self) -> int:
        return len(self._unacked)

    async def wait_for_events(self, count: int, timeout: float = 10.0) -> None:
        await self.wait_until(lambda: len(self.events) >= count, timeout)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/services/collector/event", self._event),
            web.post("/services/collector/event/1.0", self._event),
            web.post("/services/collector", self._event),
            web.post("/services/collector/ack", self._ack),
        ]

    # -- handlers ---------------------------------------------------------------------

    def _auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            return _answer(401, 2)
        scheme, _, value = header.partition(" ")
        if scheme != "Splunk" or not value:
            return _answer(401, 3)
        if value != self.token:
            return _answer(403, 4)
        return None

    def _channel(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        channel = request.headers.get("X-Splunk-Request-Channel") or request.query.get("channel")
        if channel is None:
            return None, (_answer(400, 10) if self.acks else None)
        try:
            uuid.UUID(channel)
        except ValueError:
            return None, _answer(400, 11)
        return channel, None

    async def _event(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        is_gzip = request.headers.get("Content-Encoding", "").lower() == "gzip"
        record = RecordedRequest(
            path=request.path,
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            wire_bytes=len(raw), body_bytes=0, gzip=is_gzip, events=0, status=0,
        )
        self.requests.append(record)
        response = await self._handle_event(request, raw, is_gzip, record)
        record.status = response.status
        self._notify()
        return response

    async def _handle_event(
        self, request: web.Request, raw: bytes, is_gzip: bool, record: RecordedRequest
    ) -> web.StreamResponse:
        denied = self._auth(request)
        if denied is not None:
            return denied
        if len(raw) > self.max_content_length:
            return web.json_response(
                {"text": f"Content-Length of {len(raw)} too large (maximum is"
                 f" {self.max_content_length})", "code": 6},
                status=413,
            )
        failure = self._next_failure()
        if failure is not None:
            kind, p = failure.kind, failure.params
            if kind == "hang":
                await self._hang()
                return _answer(503, 9)
            if kind == "busy":
                headers = {"Retry-After": str(p["retry_after"])} if "retry_after" in p else None
                return _answer(503, 9, headers)
            if kind == "internal":
                return _answer(500, 8)
            if kind == "token_disabled":
                return _answer(403, 1)
            if kind == "too_large":
                return web.Response(status=413, text="Request Entity Too Large")
            if kind == "http":
                return web.Response(
                    status=p["status"], text=p.get("body", ""), headers=p.get("headers")
                )
        channel, bad = self._channel(request)
        if bad is not None:
            return bad
        if is_gzip:
            try:
                body = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error):
                return _answer(400, 6)
        else:
            body = raw
        record.body_bytes = len(body)
        reject_at = None
        reject_code = 6
        if failure is not None and failure.kind == "invalid_event":
            reject_at = failure.params["at"]
        elif failure is not None and failure.kind == "incorrect_index":
            reject_at, reject_code = failure.params.get("at", 0), 7
        text = body.decode("utf-8", "replace")
        pos, number = 0, 0
        parsed: list[dict[str, Any]] = []
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos >= len(text):
                break
            if number == reject_at:
                return self._reject(parsed, record, reject_code, number)
            try:
                obj, pos = _decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                return self._reject(parsed, record, 6, number)
            code = self._check(obj)
            if code:
                return self._reject(parsed, record, code, number)
            parsed.append(obj)
            number += 1
        if not parsed:
            return _answer(400, 5)
        self._index(parsed, record)
        if channel is None:
            return _answer(200, 0)
        ack_id = self._next_ack.get(channel, 0)
        self._next_ack[channel] = ack_id + 1
        self.channels.add(channel)
        if self.acks:
            self._unacked[(channel, ack_id)] = self.ack_after_polls
            return _answer(200, 0, ackId=ack_id)
        return _answer(200, 0)

    def _check(self, obj: Any) -> int:
        if not isinstance(obj, dict):
            return 6
        if "event" not in obj:
            return 12
        if obj["event"] in ("", None, {}):
            return 13
        t = obj.get("time")
        if t is not None:
            try:
                float(t)
            except (TypeError, ValueError):
                return 6
        fields = obj.get("fields")
        if fields is not None and (
            not isinstance(fields, dict)
            or any(isinstance(v, dict) for v in fields.values())
        ):
            return 15
        index = obj.get("index")
        if index is not None and self.indexes is not None and index not in self.indexes:
            return 7
        return 0

    def _reject(
        self, parsed: list[dict[str, Any]], record: RecordedRequest, code: int, number: int
    ) -> web.Response:
        # HEC indexes the events that came before the bad one.
        self._index(parsed, record)
        return _answer(400, code, **{"invalid-event-number": number})

    def _index(self, parsed: list[dict[str, Any]], record: RecordedRequest) -> None:
        self.events.extend(parsed)
        record.events = len(parsed)

    async def _ack(self, request: web.Request) -> web.Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        if not self.acks:
            return _answer(400, 14)
        channel, bad = self._channel(request)
        if bad is not None:
            return bad
        try:
            ids = json.loads(await request.read())["acks"]
        except (ValueError, KeyError, TypeError):
            return _answer(400, 6)
        self.ack_queries += 1
        result: dict[str, bool] = {}
        for ack_id in ids:
            key = (channel, ack_id)
            done = False
            if key in self._unacked and not self.lose_acks:
                self._unacked[key] -= 1
                if self._unacked[key] <= 0:
                    del self._unacked[key]
                    done = True
            result[str(ack_id)] = done
        self._notify()
        return web.json_response({"acks": result})
