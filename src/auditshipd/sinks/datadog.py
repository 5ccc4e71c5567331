"""The ``datadog`` sink: Datadog Logs intake API v2.

One batch becomes one or more ``POST /api/v2/logs`` requests (gzip by default) holding a
JSON array of log entries, within the intake limits: at most 1000 entries and 5 MB
(uncompressed) per request, 1 MB per log. A log above 1 MB is never sent to be rejected:
with ``oversize = "truncate"`` its message is cut (and ``truncated: true`` set), with
``oversize = "dead_letter"`` (the default) that one event is dead-lettered.

Each entry carries ``ddsource``, ``service``, ``hostname``, ``ddtags``, the event as a
JSON ``message`` (Datadog parses JSON messages into attributes) and, as top-level
attributes, ``event_id`` (to drop duplicates), ``action`` and ``occurred_at``.

408, 429 and 5xx are retried, honouring ``Retry-After`` and ``X-RateLimit-Reset``;
400/401/403 are permanent; 413 halves the request and sends both halves (only a single
event still too large is dead-lettered).
"""

from __future__ import annotations

import os
import socket
from typing import Any, Literal

import msgspec

from ..plugin import (
    Batch,
    ConfigError,
    PermanentError,
    SinkContext,
    SinkOptions,
    SinkType,
    hookimpl,
)
from ._checks import header_text, http_url, positive_floats
from ._http_common import (
    SessionSink,
    classify_status,
    compress,
    post,
    safe_url,
    scrub,
    snippet,
)
from ._request_split import RequestQueue, TooLarge, pack_ranges, send_halving

__all__ = [
    "DATADOG_SITES",
    "MAX_ENTRIES",
    "MAX_LOG_BYTES",
    "MAX_PAYLOAD_BYTES",
    "DatadogOptions",
    "DatadogSink",
    "intake_url",
    "register_sink_types",
    "validate",
]

#: Datadog sites (``site`` values) and their regions.
DATADOG_SITES = {
    "datadoghq.com": "US1",
    "us3.datadoghq.com": "US3",
    "us5.datadoghq.com": "US5",
    "datadoghq.eu": "EU1",
    "ap1.datadoghq.com": "AP1",
    "ap2.datadoghq.com": "AP2",
    "ddog-gov.com": "US1-FED",
}
#: Intake limits (https://docs.datadoghq.com/api/latest/logs/#send-logs).
MAX_ENTRIES = 1000
MAX_PAYLOAD_BYTES = 5_000_000
MAX_LOG_BYTES = 1_000_000

_RECEIVER = "Datadog logs intake"
DEFAULT_DDSOURCE = "auditshipd"
_encode = msgspec.json.Encoder().encode


class DatadogOptions(SinkOptions):
    """Keys of a ``[[sinks]]`` table with ``type = "datadog"``."""

    api_key: str = ""
    site: str = "datadoghq.com"
    url: str | None = None
    service: str | None = None
    ddsource: str = "auditshipd"  # DEFAULT_DDSOURCE; "auditshipd-<format>" with a format
    ddtags: str | list[str] | None = None
    hostname: str | None = None
    gzip: bool = True
    oversize: Literal["truncate", "dead_letter"] = "dead_letter"
    tls_verify: bool = True
    ca_file: str | None = None
    timeout: float = 10.0

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={_shown(name, getattr(self, name))}" for name in self.__struct_fields__
        )
        return f"DatadogOptions({shown})"


def _shown(name: str, value: Any) -> str:
    if name == "api_key" and value:
        return "***"
    if name == "url" and value:
        return repr(safe_url(value))  # a proxy URL may carry the key in its query
    return repr(value)


def intake_url(options: DatadogOptions) -> str:
    """``url`` when set, else the logs intake of ``site``."""
    if options.url:
        return options.url
    return f"https://http-intake.logs.{options.site.lower()}/api/v2/logs"


def validate(options: DatadogOptions) -> None:
    """Checks the options schema cannot express; raises ``ConfigError(key=...)``."""
    if options.site.lower() not in DATADOG_SITES:
        known = ", ".join(DATADOG_SITES)
        raise ConfigError(f"unknown Datadog site {options.site!r} (known: {known})", key="site")
    if options.url is not None:
        u, host = http_url(options.url)
        if u.scheme not in ("http", "https") or not host:
            raise ConfigError(
                "must be a full http(s) intake URL, like https://proxy.example.com/api/v2/logs",
                key="url",
            )
        if u.user or u.password:
            raise ConfigError("must not contain credentials: set api_key instead", key="url")
    if not options.api_key:
        raise ConfigError("missing API key: set api_key = \"${DD_API_KEY}\"", key="api_key")
    if any(ch.isspace() for ch in options.api_key):
        raise ConfigError("api_key must not contain whitespace", key="api_key")
    header_text(options.api_key, "api_key")
    if not options.ddsource:
        raise ConfigError("must not be empty", key="ddsource")
    positive_floats(options)
    if options.ca_file is not None and not os.path.isfile(options.ca_file):
        raise ConfigError(f"CA file {options.ca_file!r} not found", key="ca_file")



class DatadogSink(SessionSink):
    """Sends batches to the Datadog logs intake."""

    def __init__(self, name: str, options: DatadogOptions, context: SinkContext):
        self.name = name
        self.resolver = context.resolver
        self.options = options
        self.logger = context.logger
        self.url = intake_url(options)
        fmt = context.format
        # A sink with a format gets its own ddsource unless one was set explicitly.
        self.ddsource = options.ddsource
        if fmt != "native" and options.ddsource == DEFAULT_DDSOURCE:
            self.ddsource = f"{DEFAULT_DDSOURCE}-{fmt}"
        self._prefix = _entry_prefix(options, ddsource=self.ddsource)
        self._truncated_prefix = _entry_prefix(options, truncated=True, ddsource=self.ddsource)

    def __repr__(self) -> str:
        return f"<DatadogSink {self.name!r} {safe_url(self.url)}>"

    def secrets(self) -> list[str | None]:
        return [self.options.api_key]

    async def _send(self, batch: Batch) -> None:
        entries = [
            self._entry(e, line) for e, line in zip(batch.events, batch.lines, strict=True)
        ]
        sizes = [len(e) for e in entries]
        todo = RequestQueue(pack_ranges(sizes, MAX_PAYLOAD_BYTES, overhead=2, separator=1,
                                        max_items=MAX_ENTRIES,
                                        alone=lambda i: sizes[i] > MAX_LOG_BYTES))

        async def part(start: int, end: int) -> None:
            if end - start == 1 and len(entries[start]) > MAX_LOG_BYTES:
                raise PermanentError(
                    f"event {batch.events[start].get('id', '?')} makes a log of"
                    f" {len(entries[start])} bytes, above Datadog's {MAX_LOG_BYTES}-byte limit"
                    " per log (set oversize = \"truncate\" to send it truncated)",
                    rejected=1,
                )
            await self._post(b"[" + b",".join(entries[start:end]) + b"]", end - start)

        def one_too_large(i: int) -> PermanentError:
            return PermanentError(f"{_RECEIVER} answered HTTP 413 to a single log of"
                                  f" {len(entries[i])} bytes", rejected=1)

        def halving(count: int) -> None:
            self.logger.warning("sink %s: %s answered 413 to %d logs; sending them in two"
                                " halves", self.name, _RECEIVER, count)

        await send_halving(todo, part, one_too_large=one_too_large, halving=halving)

    # -- encoding ---------------------------------------------------------------------

    def _entry(self, event: dict[str, Any], line: bytes) -> bytes:
        attrs = {
            "event_id": str(event.get("id", "")),
            "action": event.get("action"),
            "occurred_at": event.get("occurred_at"),
        }
        head = _encode({k: v for k, v in attrs.items() if v is not None})[1:-1] + b","
        message = _encode(line.decode("utf-8", "replace"))
        entry = b"".join([self._prefix, head, b'"message":', message, b"}"])
        if len(entry) <= MAX_LOG_BYTES or self.options.oversize != "truncate":
            return entry
        fixed = len(self._truncated_prefix) + len(head) + len(b'"message":') + 1
        return b"".join(
            [self._truncated_prefix, head, b'"message":', _truncate(line, MAX_LOG_BYTES - fixed), b"}"]
        )

    # -- requests ---------------------------------------------------------------------

    async def _post(self, body: bytes, count: int) -> None:
        headers = {"DD-API-KEY": self.options.api_key, "Content-Type": "application/json"}
        if self.options.gzip:
            body = await compress(body)
            headers["Content-Encoding"] = "gzip"
        answer = await post(
            self._session, self.url, body, headers,
            receiver=_RECEIVER, timeout=self.options.timeout,
        )
        if answer.status == 413:
            raise TooLarge
        text = scrub(snippet(answer.body), [self.options.api_key])
        err = classify_status(answer.status, answer.headers, text, receiver=_RECEIVER)
        if err is None:
            return
        if answer.status in (401, 403):
            raise PermanentError(f"{err}: check the sink's api_key and site")
        if answer.status == 400:
            # The intake refuses a whole request; only its own events are bad.
            raise PermanentError(str(err), rejected=count)
        raise err


def _entry_prefix(options: DatadogOptions, *, truncated: bool = False,
                  ddsource: str | None = None) -> bytes:
    """The constant start of every log entry, ending with a comma."""
    meta: dict[str, Any] = {
        "ddsource": ddsource or options.ddsource,
        "hostname": options.hostname or socket.gethostname(),
    }
    if options.service:
        meta["service"] = options.service
    tags = options.ddtags
    if isinstance(tags, list):
        tags = ",".join(tags)
    if tags:
        meta["ddtags"] = tags
    if truncated:
        meta["truncated"] = True
    return _encode(meta)[:-1] + b","


def _truncate(line: bytes, budget: int) -> bytes:
    """The JSON string of the longest prefix of ``line`` that encodes within ``budget``."""
    def encoded(n: int) -> bytes:
        return _encode(line[:n].decode("utf-8", "ignore"))

    # Escaping makes the encoded size grow with the prefix, but not linearly: bisect.
    lo, hi = 0, min(len(line), budget)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encoded(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return encoded(lo)



@hookimpl
def register_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "datadog",
            DatadogOptions,
            DatadogSink,
            "Datadog logs intake API v2 (gzip, intake limits respected)",
            validate=validate,
            secrets=("api_key",),
        )
    ]
