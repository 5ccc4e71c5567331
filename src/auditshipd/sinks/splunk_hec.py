"""The ``splunk_hec`` sink: Splunk HTTP Event Collector, with optional indexer acknowledgement.

One batch becomes one or more ``POST {url}/services/collector/event`` requests whose body
is JSON event objects concatenated (HEC's batch format), each at most
``max_request_bytes`` long (uncompressed). Every event carries its id as the indexed
field ``event_id`` so searches can drop the duplicates at-least-once delivery may cause.

With ``acks = true`` requests carry a channel (``X-Splunk-Request-Channel``, one UUID per
sink instance) and the batch counts as delivered only when
``POST /services/collector/ack`` says every ack id is indexed.

HEC's answer codes decide the retry: 8 (internal error) and 9 (busy, with
``Retry-After``) are retried; 1-4 (token), 7 (index), 10 (channel missing) and the
invalid-data codes are permanent. A 400 naming ``invalid-event-number`` N means the
events before N were indexed: the error says so (``accepted``), and only event N is
dead-lettered. A 413 halves the request and sends both halves.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import re
import socket
import uuid
from typing import Any

import msgspec
from yarl import URL

from ..plugin import (
    Batch,
    ConfigError,
    PermanentError,
    RetryableError,
    SinkContext,
    SinkError,
    SinkOptions,
    SinkType,
    hookimpl,
)
from ..timestamps import parse_rfc3339
from ._checks import header_text, http_url, positive_floats
from ._http_common import (
    SessionSink,
    classify_status,
    compress,
    post,
    retry_hint,
    safe_url,
    scrub,
    snippet,
)
from ._request_split import RequestQueue, TooLarge, pack_ranges

__all__ = [
    "SplunkHecOptions",
    "SplunkHecSink",
    "event_time",
    "register_sink_types",
    "validate",
]

DEFAULT_SOURCETYPE = "auditshipd:audit"
_RECEIVER = "Splunk HEC"
_EVENT_PATH = "/services/collector/event"
_ACK_PATH = "/services/collector/ack"
_COLLECTOR_PATH = re.compile(r"/services/collector(?:/|$)")
_encode = msgspec.json.Encoder().encode
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class SplunkHecOptions(SinkOptions):
    """Keys of a ``[[sinks]]`` table with ``type = "splunk_hec"``."""

    url: str
    token: str = ""
    index: str | None = None
    source: str | None = None
    sourcetype: str = DEFAULT_SOURCETYPE
    host: str | None = None
    acks: bool = False
    gzip: bool = False
    max_request_bytes: int = 1_000_000
    tls_verify: bool = True
    ca_file: str | None = None
    timeout: float = 10.0
    ack_timeout: float = 20.0
    ack_poll_interval: float = 0.5

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={'***' if name == 'token' and value else repr(value)}"
            for name in self.__struct_fields__
            for value in (getattr(self, name),)
        )
        return f"SplunkHecOptions({shown})"


def validate(options: SplunkHecOptions) -> None:
    """Checks the options schema cannot express; raises ``ConfigError(key=...)``."""
    _check_url(options.url)
    if not options.token:
        raise ConfigError("missing HEC token: set token = \"${SPLUNK_HEC_TOKEN}\"", key="token")
    if any(ch.isspace() for ch in options.token):
        raise ConfigError("token must not contain whitespace", key="token")
    header_text(options.token, "token")
    if not options.sourcetype:
        raise ConfigError("must not be empty", key="sourcetype")
    for key in ("index", "source", "host"):
        if getattr(options, key) == "":
            raise ConfigError("must not be empty (leave the key out instead)", key=key)
    if options.max_request_bytes < 1024:
        raise ConfigError("must be at least 1024", key="max_request_bytes")
    positive_floats(options)
    if options.ca_file is not None and not os.path.isfile(options.ca_file):
        raise ConfigError(f"CA file {options.ca_file!r} not found", key="ca_file")


def _check_url(url: str) -> URL:
    u, host = http_url(url)
    if u.scheme not in ("http", "https") or not host:
        raise ConfigError(
            "must be the collector's base URL, like https://splunk.example.com:8088", key="url"
        )
    if u.user or u.password:
        raise ConfigError("must not contain credentials: set token instead", key="url")
    if u.query_string or u.fragment:
        raise ConfigError("must not have a query or fragment", key="url")
    return u


def _base_url(url: str) -> str:
    # Users often paste a full endpoint (.../services/collector/event, .../event/1.0,
    # .../raw): the base is what comes before /services/collector.
    u = URL(url)
    path = u.path.rstrip("/")
    found = _COLLECTOR_PATH.search(path)
    if found is not None:
        path = path[: found.start()]
    return str(u.with_path(path or "/")).rstrip("/")


def event_time(occurred_at: Any) -> str | None:
    """HEC ``time`` (epoch seconds with milliseconds) from an RFC 3339 ``occurred_at``.

    ``None`` when missing or unparseable (Splunk then uses the time of arrival).
    """
    when = parse_rfc3339(occurred_at)
    if when is None:
        return None
    millis = (when - _EPOCH) // _dt.timedelta(milliseconds=1)
    if millis < 0:
        return None
    return f"{millis // 1000}.{millis % 1000:03d}"



class SplunkHecSink(SessionSink):
    """Sends batches to a Splunk HTTP Event Collector."""

    def __init__(self, name: str, options: SplunkHecOptions, context: SinkContext):
        self.name = name
        self.resolver = context.resolver
        self.options = options
        self.logger = context.logger
        base = _base_url(options.url)
        self._event_url = base + _EVENT_PATH
        self._ack_url = base + _ACK_PATH
        self._auth = f"Splunk {options.token}"
        # One channel per sink instance: ack ids are numbered per channel.
        self._channel = str(uuid.uuid4()) if options.acks else None
        fmt = context.format
        # A sink with a format gets its own sourcetype unless one was set explicitly.
        sourcetype = options.sourcetype
        if fmt != "native" and sourcetype == DEFAULT_SOURCETYPE:
            sourcetype = f"auditshipd:{fmt}"
        self.sourcetype = sourcetype
        self._text = fmt == "cef"  # CEF lines are text: HEC's event is then a JSON string
        self._prefix = _envelope_prefix(options, sourcetype)
        self._warned_no_ack = False

    def __repr__(self) -> str:
        return f"<SplunkHecSink {self.name!r} {safe_url(self._event_url)}>"

    @property
    def channel(self) -> str | None:
        """The ``X-Splunk-Request-Channel`` this sink uses (``None`` without acks)."""
        return self._channel

    def secrets(self) -> list[str | None]:
        return [self.options.token]

    async def _send(self, batch: Batch) -> None:
        payloads = [
            self._encode_event(e, line)
            for e, line in zip(batch.events, batch.lines, strict=True)
        ]
        limit = self.options.max_request_bytes
        todo = RequestQueue(pack_ranges([len(p) for p in payloads], limit))
        confirmed = 0  # events known to be indexed, a prefix of the batch
        pending: list[tuple[int | None, int]] = []  # (ack id or None, end) sent, unconfirmed
        while todo:
            start, end = todo.pop()
            try:
                if end - start == 1 and len(payloads[start]) > limit:
                    raise PermanentError(
                        f"event {batch.events[start].get('id', '?')} encodes to"
                        f" {len(payloads[start])} bytes, more than max_request_bytes ({limit})",
                        rejected=1,
                    )
                try:
                    ack_id = await self._post_events(b"".join(payloads[start:end]))
                except TooLarge:
                    if end - start == 1:
                        raise PermanentError(
                            f"{_RECEIVER} answered HTTP 413 to a single event: it is larger"
                            " than the server's max_content_length",
                            rejected=1,
                        ) from None
                    self.logger.warning(
                        "sink %s: %s answered 413 to %d events; sending them in two halves"
                        " (lower max_request_bytes to avoid this)",
                        self.name, _RECEIVER, end - start,
                    )
                    todo.halve(start, end)
                    continue
            except SinkError as err:
                confirmed = await self._settle(pending, confirmed)
                raise _shifted(err, start, confirmed) from None
            if ack_id is None and not pending:
                confirmed = end
            else:
                pending.append((ack_id, end))
        if pending:
            confirmed = await self._settle(pending, confirmed)
            if confirmed < len(batch):
                raise RetryableError(
                    f"{_RECEIVER} did not acknowledge indexing within ack_timeout"
                    f" ({self.options.ack_timeout:g}s)",
                    accepted=confirmed,
                )

    # -- encoding ---------------------------------------------------------------------

    def _encode_event(self, event: dict[str, Any], line: bytes) -> bytes:
        parts = [self._prefix]
        t = event_time(event.get("occurred_at"))
        if t is not None:
            parts.append(b'"time":' + t.encode() + b",")
        event_id = event.get("id")
        if event_id is not None:
            parts.append(b'"fields":' + _encode({"event_id": str(event_id)}) + b",")
        parts.append(b'"event":')
        parts.append(_encode(line.decode("utf-8", "replace")) if self._text else line)
        parts.append(b"}")
        return b"".join(parts)

    # -- requests ---------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        if self._channel is not None:
            headers["X-Splunk-Request-Channel"] = self._channel
        return headers

    async def _post_events(self, body: bytes) -> int | None:
        """POST one request; the ack id (with acks), ``None`` otherwise; raise on failure."""
        headers = self._headers()
        if self.options.gzip:
            body = await compress(body)
            headers["Content-Encoding"] = "gzip"
        answer = await post(
            self._session, self._event_url, body, headers,
            receiver=_RECEIVER, timeout=self.options.timeout,
        )
        if answer.status == 413:
            raise TooLarge
        reply = _reply(answer.body)
        if 200 <= answer.status < 300:
            if self._channel is None:
                return None
            ack_id = reply.get("ackId")
            if isinstance(ack_id, int) and not isinstance(ack_id, bool):
                return ack_id
            if not self._warned_no_ack:
                self._warned_no_ack = True
                self.logger.warning(
                    "sink %s: acks = true but %s returned no ackId: indexer acknowledgement"
                    " is disabled on this token, so deliveries are not confirmed",
                    self.name, _RECEIVER,
                )
            return None
        raise self._failure(answer.status, answer.headers, reply, answer.body)

    def _failure(
        self, status: int, headers: Any, reply: dict[str, Any], body: bytes
    ) -> SinkError:
        code = reply.get("code")
        text = scrub(snippet(str(reply.get("text", ""))), [self.options.token])
        what = f"{_RECEIVER} answered HTTP {status} code {code} ({text})"
        number = reply.get("invalid-event-number")
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            number = None
        if code == 8:
            return RetryableError(what, retry_after=retry_hint(headers))
        if code in (9, 18, 19, 20):
            hint = retry_hint(headers)
            wait = f", retry after {hint:g}s" if hint is not None else ""
            return RetryableError(f"{what}: server busy{wait}", retry_after=hint)
        if code in (1, 2, 3, 4):
            return PermanentError(f"{what}: the HEC token is missing, invalid or disabled;"
                                  " check the sink's token")
        if code == 7:
            index = (f"the index {self.options.index!r}" if self.options.index
                     else "the token's default index")
            return PermanentError(
                f"{what}: {index} does not exist or the token may not write to it;"
                " check index",
                accepted=number or 0,
            )
        if code == 10:
            return PermanentError(
                f"{what}: this HEC token has indexer acknowledgement enabled, which needs a"
                " channel: set acks = true for this sink (or disable indexer"
                " acknowledgement on the token)"
            )
        if code == 14:
            return PermanentError(
                f"{what}: indexer acknowledgement is disabled on this token: enable it on the"
                " token or set acks = false"
            )
        if number is not None:
            return PermanentError(
                f"{what}: event {number} of the request is invalid; the events before it"
                " were indexed",
                accepted=number, rejected=1,
            )
        if code in (5, 6, 11, 12, 13, 15, 16):
            return PermanentError(what)
        err = classify_status(
            status, headers, scrub(snippet(body), [self.options.token]), receiver=_RECEIVER
        )
        return err if err is not None else PermanentError(what)

    async def _query_acks(self, ack_ids: list[int]) -> set[int]:
        answer = await post(
            self._session, self._ack_url, _encode({"acks": ack_ids}), self._headers(),
            receiver=_RECEIVER, timeout=self.options.timeout,
        )
        reply = _reply(answer.body)
        if not 200 <= answer.status < 300:
            raise self._failure(answer.status, answer.headers, reply, answer.body)
        acks = reply.get("acks")
        if not isinstance(acks, dict):
            return set()
        return {int(k) for k, v in acks.items() if v is True and str(k).isdigit()}

    async def _settle(self, pending: list[tuple[int | None, int]], confirmed: int) -> int:
        """Poll the acks of ``pending`` until all are true or ``ack_timeout`` ran out;
        return the end of the confirmed prefix."""
        waiting = {ack for ack, _ in pending if ack is not None}
        done: set[int] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.ack_timeout
        while waiting:
            try:
                acked = await self._query_acks(sorted(waiting))
            except SinkError as err:
                self.logger.warning("sink %s: ack query failed: %s", self.name, err)
                if not err.retryable:
                    break
                acked = set()
            done |= acked
            waiting -= acked
            remaining = deadline - loop.time()
            if not waiting or remaining <= 0:
                break
            await asyncio.sleep(min(self.options.ack_poll_interval, remaining))
        for ack, end in pending:
            if ack is not None and ack not in done:
                break
            confirmed = end
        pending.clear()
        return confirmed


def _envelope_prefix(options: SplunkHecOptions, sourcetype: str | None = None) -> bytes:
    """The constant start of every event object, ending with a comma."""
    meta: dict[str, str] = {"host": options.host or socket.gethostname()}
    if options.source:
        meta["source"] = options.source
    meta["sourcetype"] = sourcetype or options.sourcetype
    if options.index:
        meta["index"] = options.index
    return _encode(meta)[:-1] + b","



def _shifted(err: SinkError, start: int, confirmed: int) -> SinkError:
    """``err`` from the request that began at event ``start``, made relative to the batch."""
    if confirmed >= start:
        err.accepted += start
        return err
    return RetryableError(
        f"{err}; the events before it are not acknowledged yet",
        accepted=confirmed,
        retry_after=getattr(err, "retry_after", None),
    )


def _reply(body: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "splunk_hec",
            SplunkHecOptions,
            SplunkHecSink,
            "Splunk HTTP Event Collector (batched events, optional indexer acknowledgement)",
            validate=validate,
            secrets=("token",),
        )
    ]
