"""``http`` sink: a generic webhook.

POSTs each batch as a JSON array (``encoding = "json"``) or newline-delimited JSON
(``"ndjson"``), or, with ``format = "cef"``, one CEF line per event as ``text/plain``
(``encoding = "ndjson"`` or ``"text"``), optionally gzip-compressed, with custom headers, an optional bearer
token and an optional HMAC-SHA256 signature so receivers can authenticate us:

    X-Auditshipd-Timestamp: <unix seconds>
    X-Auditshipd-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

The body signed is the uncompressed JSON (what a receiver's HTTP server hands it after
undoing ``Content-Encoding: gzip``, as most frameworks do). Receivers recompute
the HMAC with the shared secret, compare in constant time and reject timestamps older
than a few minutes (replay protection). ``X-Auditshipd-Batch`` carries
``<first_id>-<last_id>``; each event carries its ``id`` so receivers drop duplicates.
429, 408 and 5xx (and timeouts, refused connections) are retried honouring
Retry-After; a 413 halves the request until the receiver takes it (each part signed and
named for its own events; a single event still refused is dead-lettered alone); other
4xx are permanent. TLS verification is on unless turned off.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

import msgspec

from ..plugin import Batch, ConfigError, SinkContext, SinkOptions, SinkType, hookimpl
from ._checks import header_fields, header_text, http_url, positive_floats, readable_file
from ._http_common import (
    SessionSink,
    classify_status,
    compress,
    post,
    safe_url,
    snippet,
)
from ._request_split import TooLarge, send_batch_halving

__all__ = ["HttpOptions", "HttpSink", "sign"]

_CONTROL = re.compile("[\x00-\x1f\x7f]")


class HttpOptions(SinkOptions):
    url: str
    encoding: str = "json"  # json | ndjson | text (lines as text/plain, e.g. format = "cef")
    gzip: bool = False
    gzip_level: int = 6
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    bearer_token: str | None = None
    hmac_secret: str | None = None
    timeout: float = 30.0
    tls_verify: bool = True
    ca_file: str | None = None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class HttpSink(SessionSink):
    def __init__(self, name: str, options: HttpOptions, context: SinkContext):
        self.name = name
        self.logger = context.logger
        self.resolver = context.resolver
        self.options = options
        self.receiver = safe_url(options.url)
        self.text = options.encoding == "text" or context.format == "cef"

    def __repr__(self) -> str:
        return f"<HttpSink {self.name!r} {self.receiver}>"

    def secrets(self) -> list[str | None]:
        o = self.options
        return [o.bearer_token, o.hmac_secret, *o.headers.values()]

    async def _send(self, batch: Batch) -> None:
        await send_batch_halving(batch, self._post, sink=self.name, receiver=self.receiver,
                                 logger=self.logger)

    async def _post(self, batch: Batch) -> None:
        assert self._session is not None
        o = self.options
        if self.text:
            body, ctype = batch.jsonl(), "text/plain; charset=utf-8"
        elif o.encoding == "ndjson":
            body, ctype = batch.jsonl(), "application/x-ndjson"
        else:
            body, ctype = batch.json_array(), "application/json"
        headers = {"Content-Type": ctype, "User-Agent": "auditshipd",
                   "X-Auditshipd-Batch": _header_safe(f"{batch.first_id}-{batch.last_id}")}
        headers.update(o.headers)
        if o.bearer_token:
            headers["Authorization"] = f"Bearer {o.bearer_token}"
        if o.hmac_secret:
            ts = str(int(time.time()))
            headers["X-Auditshipd-Timestamp"] = ts
            headers["X-Auditshipd-Signature"] = sign(o.hmac_secret, ts, body)
        if o.gzip:
            body = await compress(body, o.gzip_level)
            headers["Content-Encoding"] = "gzip"
        answer = await post(self._session, o.url, body, headers, receiver=self.receiver,
                            timeout=o.timeout)
        if answer.status == 413:
            raise TooLarge
        err = classify_status(answer.status, answer.headers, snippet(answer.body),
                              receiver=self.receiver)
        if err is not None:
            raise err  # scrubbed of our secrets by SessionSink.send


def _header_safe(text: str) -> str:
    """``text`` with its control characters as ``%XX``: ids come from applications, and
    the HTTP client refuses a header holding CR, LF, NUL... (the whole request)."""
    return _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", text)


def _validate(o: HttpOptions) -> None:
    u, host = http_url(o.url)
    if u.scheme not in ("http", "https") or not host:
        raise ConfigError("must be an http:// or https:// URL with a host", key="url")
    if u.raw_user is not None or u.raw_password is not None:
        # aiohttp turns URL credentials into an Authorization header and refuses a second
        # one: every request would fail, so this can never work.
        if o.bearer_token:
            raise ConfigError("a URL with user:password@ cannot be combined with bearer_token:"
                              " keep one of the two", key="bearer_token")
        if any(k.lower() == "authorization" for k in o.headers):
            raise ConfigError("a URL with user:password@ cannot be combined with an"
                              " Authorization header: keep one of the two", key="headers")
    if o.encoding not in ("json", "ndjson", "text"):
        raise ConfigError('must be "json", "ndjson" or "text"', key="encoding")
    if not 1 <= o.gzip_level <= 9:
        raise ConfigError("must be between 1 and 9", key="gzip_level")
    header_fields(o.headers)
    header_text(o.bearer_token, "bearer_token")
    positive_floats(o)
    readable_file(o.ca_file, "ca_file")


@hookimpl
def register_sink_types() -> list[Any]:
    return [SinkType("http", HttpOptions, HttpSink,
                     "Generic webhook: JSON array or NDJSON POST, gzip, bearer, HMAC signature",
                     validate=_validate, secrets=("bearer_token", "hmac_secret", "headers"))]
