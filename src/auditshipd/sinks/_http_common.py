"""Small parts shared by the HTTP sinks: a session, retry hints, outcome classification.

Each part has one job and returns a value; a sink decides what to do with it:

* :func:`make_session` -- an ``aiohttp.ClientSession`` with TLS verification on unless
  the user turned it off, an optional private CA file, and a total timeout.
* :func:`parse_retry_after` -- ``Retry-After`` (delta-seconds or HTTP date) as seconds.
* :func:`classify_status` -- an HTTP answer as ``None`` (delivered) or the
  :class:`~auditshipd.errors.SinkError` to raise (retryable or permanent).
* :func:`transport_error` -- a connection error or timeout as a ``RetryableError``.
* :func:`scrub` / :func:`safe_url` -- keep secrets out of messages.

A batch cut into requests within the receiver's limits, and a request refused as too
large (413) halved and sent again: :mod:`auditshipd.sinks._request_split`.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import math
import os
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import aiohttp

from ..plugin import PermanentError, RetryableError, SinkError
from ..scrub import scrub_secrets, url_secrets

__all__ = [
    "tls_context",
    "GZIP_OFFLOAD_BYTES",
    "SessionSink",
    "Answer",
    "RETRYABLE_STATUSES",
    "classify_status",
    "compress",
    "make_session",
    "parse_rate_limit_reset",
    "parse_retry_after",
    "post",
    "retry_hint",
    "safe_url",
    "scrub",
    "scrub_error",
    "snippet",
    "transport_error",
]

#: Statuses worth another attempt: the receiver is overloaded, restarting or slow.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

#: Bodies larger than this are compressed in a worker thread, off the event loop.
GZIP_OFFLOAD_BYTES = 256 * 1024

# An X-RateLimit-Reset above this is an epoch timestamp (GitHub style), not a delay.
_EPOCH_THRESHOLD = 1_000_000_000


_contexts: dict[tuple[str | None, int, int], ssl.SSLContext] = {}


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The verifying TLS context for the system store or ``ca_file``, shared by every
    sink that uses the same one. Each context holds the parsed certificate store (about
    1.5 MB with the system's): a hundred HTTP sinks with a context each took 150 MB. A
    CA file (or the system's bundle) that changed on disk, in size or time, gets a new
    context at the next start of the sinks that use it."""
    bundle = ca_file or ssl.get_default_verify_paths().cafile
    key: tuple[str | None, int, int] = (ca_file, 0, 0)
    if bundle is not None:
        try:
            st = os.stat(bundle)
            key = (ca_file, st.st_mtime_ns, st.st_size)
        except OSError:
            if ca_file is not None:
                return ssl.create_default_context(cafile=ca_file)  # its error names the file
    context = _contexts.get(key)
    if context is None:
        context = _contexts[key] = ssl.create_default_context(cafile=ca_file)
    return context


def make_session(
    tls_verify: bool = True,
    ca_file: str | None = None,
    timeout: float = 30.0,
    *,
    headers: Mapping[str, str] | None = None,
    resolver: Any = None,
    on_status: Callable[[int], None] | None = None,
) -> aiohttp.ClientSession:
    """A client session for one sink. Call it from a running event loop (``start()``).

    TLS certificates are verified against the system store, or against ``ca_file``
    when given; ``tls_verify=False`` disables verification (testing only).
    ``timeout`` bounds each whole request, connection included. ``resolver`` (an
    aiohttp resolver) answers every name lookup of the session's connections.
    ``on_status`` is called with the status of every answer the session receives.
    """
    ssl_arg: ssl.SSLContext | bool = tls_context(ca_file) if tls_verify else False
    connector = aiohttp.TCPConnector(ssl=ssl_arg, resolver=resolver)
    traces = []
    if on_status is not None:
        trace = aiohttp.TraceConfig()

        async def _ended(_session: Any, _ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
            on_status(params.response.status)

        trace.on_request_end.append(_ended)
        traces.append(trace)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers=dict(headers or {}),
        trace_configs=traces or None,
    )


class Answer(NamedTuple):
    """An HTTP answer: status, headers and the start of the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    receiver: str = "receiver",
    timeout: float | None = None,
    max_answer_bytes: int = 64 * 1024,
) -> Answer:
    """POST ``body`` and return the answer, whatever its status.

    Connection errors and timeouts raise :class:`RetryableError` (see
    :func:`transport_error`). Redirects are not followed: a log shipper must not send
    its credentials elsewhere; :func:`classify_status` explains a 3xx instead.
    """
    try:
        async with session.post(url, data=body, headers=dict(headers), allow_redirects=False) as resp:
            data = await _read_answer(resp.content, max_answer_bytes)
            return Answer(resp.status, resp.headers, data)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise transport_error(exc, receiver=receiver, timeout=timeout) from None


async def _read_answer(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to its end or ``limit`` bytes, whichever comes first: one ``read()``
    returns only what has arrived so far, and an answer may come in several pieces."""
    parts: list[bytes] = []
    left = limit
    while left > 0:
        part = await stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or ``None`` when absent or invalid.

    Accepts delta-seconds (``"120"``, also ``"1.5"``) and HTTP dates
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). A date in the past gives ``0.0``.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or math.isinf(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def parse_rate_limit_reset(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from an ``X-RateLimit-Reset`` value, or ``None``.

    Datadog sends the seconds until the window resets; some APIs send an epoch
    timestamp instead, recognised by its size.
    """
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if math.isnan(number) or math.isinf(number):
        return None
    if number > _EPOCH_THRESHOLD:
        current = time.time() if now is None else now
        number -= current
    return max(0.0, number)


def retry_hint(headers: Mapping[str, str]) -> float | None:
    """The receiver's wait hint: ``Retry-After`` first, then ``X-RateLimit-Reset``."""
    hint = parse_retry_after(_header(headers, "Retry-After"))
    if hint is None:
        hint = parse_rate_limit_reset(_header(headers, "X-RateLimit-Reset"))
    return hint


def classify_status(
    status: int,
    headers: Mapping[str, str],
    body_snippet: str = "",
    *,
    receiver: str = "receiver",
) -> SinkError | None:
    """What an HTTP answer means for delivery, as a value.

    ``None``: 2xx, the request was accepted. A :class:`RetryableError` (with
    ``retry_after`` from ``Retry-After`` or ``X-RateLimit-Reset``) for 408, 425, 429
    and 5xx other than 501/505. A :class:`PermanentError` for everything else (other
    4xx, redirects, 501...). ``accepted`` is 0: a sink that split its batch shifts it.
    ``body_snippet`` should already be short and free of secrets (see :func:`snippet`).
    """
    if 200 <= status < 300:
        return None
    detail = f": {body_snippet}" if body_snippet else ""
    if status in RETRYABLE_STATUSES or (status >= 500 and status not in (501, 505)):
        hint = retry_hint(headers)
        wait = f" (retry after {hint:g}s)" if hint is not None else ""
        return RetryableError(f"{receiver} answered HTTP {status}{wait}{detail}", retry_after=hint)
    if 300 <= status < 400:
        location = safe_url(_header(headers, "Location") or "")
        target = f" to {location}" if location else ""
        return PermanentError(
            f"{receiver} answered HTTP {status} (redirect{target}); redirects are not followed:"
            " set the sink's url to the final address"
        )
    return PermanentError(f"{receiver} answered HTTP {status}{detail}")


def transport_error(
    exc: BaseException, *, receiver: str = "receiver", timeout: float | None = None
) -> RetryableError:
    """A connection failure or timeout as a retryable error (the request may or may not
    have arrived: at-least-once delivery accepts the possible duplicate)."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        within = f" within {timeout:g}s" if timeout is not None else ""
        return RetryableError(f"{receiver} did not answer{within} (timeout)")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return RetryableError(
            f"TLS certificate of {receiver} could not be verified ({exc.certificate_error});"
            " set ca_file to the CA that signed it"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return RetryableError(f"cannot connect to {receiver}: {exc.os_error or exc}")
    return RetryableError(f"request to {receiver} failed: {type(exc).__name__}: {exc}")


# Control characters left after whitespace is folded, and lone surrogates: a NUL in an
# error text is refused by PostgreSQL text columns, the others garble a log line.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else "\ufffd"


def snippet(body: bytes | str, limit: int = 300) -> str:
    """The start of a response body, on one line, for an error message. Control
    characters are shown as ``\\xNN`` (a NUL as ``\\x00``), never passed on."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = _UNPRINTABLE.sub(_shown, " ".join(text.split()))
    return text if len(text) <= limit else text[:limit] + "..."


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of a secret value replaced by ``***`` (and what
    :func:`~auditshipd.scrub.scrub_secrets` masks by pattern: one scrubber for all)."""
    return scrub_secrets(text, secrets) or text


def scrub_error(err: SinkError, secrets: Iterable[str | None]) -> SinkError:
    """``err`` with secret values masked in its message (in place; returned for ``raise``)."""
    message = str(err)
    cleaned = scrub(message, secrets)
    if cleaned != message:
        err.args = (cleaned,)
    return err


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment: fit for logs and messages."""
    if not url:
        return ""
    try:
        from yarl import URL

        u = URL(url)
    except (ValueError, TypeError):
        return "<invalid url>"
    if not u.is_absolute():
        return u.path
    return str(u.with_user(None).with_query(None).with_fragment(None))


async def compress(body: bytes, level: int = 6) -> bytes:
    """gzip ``body``; large bodies are compressed in a thread so the loop stays live."""
    if len(body) >= GZIP_OFFLOAD_BYTES:
        return await asyncio.to_thread(gzip.compress, body, level)
    return gzip.compress(body, level)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, val in headers.items():
            if key.lower() == lowered:
                return val
    return value


class SessionSink:
    """What the HTTP sinks share: one client session per sink, opened on ``start()``
    (or the first send) and closed once, and errors scrubbed of the sink's secrets.

    A subclass sets ``options`` (with ``tls_verify``, ``ca_file``, ``timeout``), names its
    secrets in :meth:`secrets` and implements ``_send(batch)``.
    """

    options: Any
    _session: aiohttp.ClientSession | None = None
    # The SinkContext's resolver (self-service streams: netguard.GuardedResolver).
    resolver: Any = None
    # The HTTP status of the receiver's last answer (shown for a stream's test event).
    last_status: int | None = None

    def secrets(self) -> list[str | None]:
        return []

    async def start(self) -> None:
        if self._session is None:
            o = self.options
            self._session = make_session(o.tls_verify, o.ca_file, o.timeout,
                                         resolver=self.resolver, on_status=self._answered)

    def _answered(self, status: int) -> None:
        self.last_status = status

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, batch: Any) -> None:
        if not len(batch):
            return
        await self.start()
        try:
            await self._send(batch)
        except SinkError as err:
            # The URL's own user, password and query values are secrets too: a receiver
            # may echo the URL it was called with (``?code=...``) in its error body.
            url = getattr(self.options, "url", None)
            raise scrub_error(err, [*self.secrets(), *url_secrets(url)]) from None

    async def _send(self, batch: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
