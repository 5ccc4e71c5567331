"""The ``nats`` sink: publishes each event to NATS JetStream with nats-py.

One message per event, on a subject rendered from a template such as
``audit.{organization.slug}.{action}``. Every message carries ``Nats-Msg-Id`` = the
event id, so the stream drops the duplicates a crash redelivery causes (within its
``duplicate_window``). A batch counts as delivered only when JetStream acknowledged
every message (a ``PubAck``); publishes overlap, up to ``max_in_flight`` at a time.

A lost connection fails the batch in flight with RetryableError; the next send
connects again (nats-py's own background reconnection is off, so a batch never waits
on a connection the sink cannot see). nats-py is the optional extra ``auditshipd[nats]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import ssl
import string
from typing import Any
from urllib.parse import urlsplit

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
    module_available,
)
from ._checks import positive_floats, split_url
from .field_template import FieldTemplate, id_text

__all__ = [
    "DEFAULT_SUBJECT",
    "NatsOptions",
    "NatsSink",
    "SubjectTemplate",
    "classify_nats_error",
    "register_sink_types",
    "validate_options",
]

DEFAULT_SUBJECT = "audit.{organization.slug}.{action}"
_MISSING_EXTRA = "the nats sink needs the optional extra: pip install 'auditshipd[nats]'"
# A value must stay one subject token: no separator, no wildcard, no whitespace.
_UNSAFE = str.maketrans({c: "_" for c in ".*> \t\r\n\0\f\v"})
# The longest subject a publish can carry: nats-server reads the protocol line
# ("HPUB <subject> <reply inbox> <sizes>") up to max_control_line, 4096 bytes by default,
# and closes the connection on a longer one. The reply inbox and sizes take under 128.
_MAX_SUBJECT_BYTES = 4096 - 128

# JetStream API error codes a later attempt can get past (resources freed, leader
# elected, limits with discard=new that consumers will make room under).
_RETRYABLE_ERR_CODES = frozenset({
    10008,  # jetstream not enabled / temporarily unavailable
    10023,  # insufficient resources
    10047,  # insufficient storage resources
    10077,  # maximum messages exceeded
    10078,  # maximum bytes exceeded
})


def _msg_id(event_id: str) -> str:
    """The Nats-Msg-Id of an event: a header value loses its surrounding whitespace and
    its CR/LF on the way (nats-py), so ids that differ only there ("x", "x ") would make
    one id, and JetStream would drop the later events as duplicates of the first."""
    return id_text(event_id, lambda v: v == v.strip() and "\r" not in v and "\n" not in v)


class NatsOptions(SinkOptions):
    """Keys of a ``nats`` ``[[sinks]]`` table."""

    url: str | list[str]
    subject: str = DEFAULT_SUBJECT
    stream: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    credentials_file: str | None = None
    nkey_seed_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_verify: bool = True
    max_in_flight: int = 256
    timeout: float = 10.0


class SubjectTemplate(FieldTemplate):
    """``audit.{organization.slug}.{action}`` rendered against an event.

    A placeholder is a dotted path into the event. A missing, empty or non-scalar value
    renders as ``unknown``; ``.``, ``*``, ``>`` and whitespace inside a value become
    ``_`` so a value can neither add subject tokens nor act as a wildcard.
    """

    __slots__ = ()
    unsafe = _UNSAFE


def _urls(options: NatsOptions) -> list[str]:
    return [options.url] if isinstance(options.url, str) else list(options.url)


def validate_options(options: NatsOptions) -> None:
    """Checks msgspec cannot express; raises ConfigError naming the key."""
    urls = _urls(options)
    if not urls:
        raise ConfigError("needs at least one server URL", key="url")
    for url in urls:
        parts = split_url(url)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ConfigError(
                "must be nats://HOST[:PORT] or tls://HOST[:PORT], e.g. tls://nats.example.com:4222",
                key="url",
            )
        try:
            _ = parts.port
        except ValueError:
            raise ConfigError(f"invalid port in {parts.hostname}", key="url") from None
        if parts.username or parts.password:
            raise ConfigError("put credentials in user/password or token, not in the URL",
                              key="url")
    try:
        SubjectTemplate(options.subject)
    except ValueError as exc:
        raise ConfigError(str(exc), key="subject") from None
    literal = "".join(lit for lit, *_ in string.Formatter().parse(options.subject))
    if any(c in literal for c in "*> \t\r\n\0"):
        raise ConfigError("must be a subject without wildcards (* >) or whitespace",
                          key="subject")
    probe = SubjectTemplate(options.subject)({})
    if not probe or any(not token for token in probe.split(".")):
        raise ConfigError("must be tokens separated by single dots, e.g. audit.{action}",
                          key="subject")
    if options.stream is not None and (
        not options.stream or any(c in options.stream for c in ".*> \t\r\n")
    ):
        raise ConfigError("must be a stream name without . * > or whitespace", key="stream")
    if options.password is not None and options.user is None:
        raise ConfigError("a password needs a user", key="user")
    ways = [k for k in ("user", "token", "credentials_file", "nkey_seed_file")
            if getattr(options, k) is not None]
    if len(ways) > 1:
        raise ConfigError(f"choose one way to authenticate, not {' and '.join(ways)}", key=ways[1])
    for key in ("credentials_file", "nkey_seed_file", "ca_file", "cert_file", "key_file"):
        path = getattr(options, key)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"file {path!r} not found", key=key)
    if (options.cert_file is None) != (options.key_file is None):
        raise ConfigError("cert_file and key_file go together", key="cert_file")
    if not 1 <= options.max_in_flight <= 65535:
        raise ConfigError("must be 1..65535", key="max_in_flight")
    positive_floats(options)
    if not module_available("nats"):
        raise ConfigError(_MISSING_EXTRA, key="type")


def classify_nats_error(exc: BaseException, what: str = "NATS") -> SinkError:
    """Turn what nats-py raised into a retry decision."""
    if isinstance(exc, SinkError):
        return exc
    name = type(exc).__name__
    if name in ("NoStreamResponseError", "NoRespondersError"):
        # Often a stream that is not (yet) there, or JetStream still starting after a
        # restart: hold the cursor until a stream captures the subject.
        return RetryableError(f"{what}: no JetStream stream answered for the subject"
                              " (create a stream that captures it)")
    # A refusal at connect time arrives as a plain nats.errors.Error with the server's text.
    if name == "AuthorizationError" or "authorization violation" in str(exc).lower():
        return PermanentError(f"{what}: authorization failed (check user/password, token,"
                              " credentials_file or nkey_seed_file)")
    if name in ("MaxPayloadError", "BadSubjectError", "BadHeaderError"):
        return PermanentError(f"{what}: {exc}")
    if name in ("APIError", "ServiceUnavailableError", "ServerError", "BadRequestError",
                "NotFoundError"):
        code = getattr(exc, "code", None) or 0
        err_code = getattr(exc, "err_code", None)
        text = f"{what}: JetStream refused the message: {getattr(exc, 'description', '') or exc}"
        if err_code is not None:
            text += f" (err_code {err_code})"
        if code >= 500 or code in (408, 429) or err_code in _RETRYABLE_ERR_CODES:
            return RetryableError(text)
        return PermanentError(text)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return RetryableError(f"{what}: no acknowledgement in time (timeout)")
    if isinstance(exc, ssl.SSLError) or "CERTIFICATE" in str(exc).upper():
        return RetryableError(f"{what}: TLS failed: {exc} (set ca_file to the server's CA)")
    return RetryableError(f"{what}: {name}: {exc}")


def _import_nats() -> Any:
    try:
        return importlib.import_module("nats")
    except ImportError:
        raise ConfigError(_MISSING_EXTRA, key="type") from None


class NatsSink:
    """Publishes every event of a batch to JetStream and awaits every acknowledgement."""

    def __init__(self, name: str, options: NatsOptions, context: SinkContext):
        self.name = name
        self.options = options
        self.context = context
        self._nats = _import_nats()
        self._subject = SubjectTemplate(options.subject)
        self._servers = _urls(options)
        self._where = ", ".join(f"{urlsplit(u).hostname}:{urlsplit(u).port or 4222}"
                                for u in self._servers)
        self._nc: Any = None
        self._js: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        # The connection is opened by the first send: a server that is down at start-up
        # is then an ordinary retryable failure of that batch.
        return None

    def _tls_context(self) -> ssl.SSLContext | None:
        o = self.options
        wants_tls = any(urlsplit(u).scheme == "tls" for u in self._servers)
        if not (wants_tls or o.ca_file or o.cert_file):
            return None
        ctx = ssl.create_default_context(cafile=o.ca_file)
        if o.cert_file and o.key_file:
            ctx.load_cert_chain(o.cert_file, o.key_file)
        if not o.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connect(self) -> Any:
        o = self.options
        try:
            tls = self._tls_context()
        except (OSError, ssl.SSLError) as exc:
            # Checked by validation already; if a file vanished since, hold the batch.
            raise RetryableError(f"nats sink: cannot load the TLS files: {exc}") from None

        errors: list[Exception] = []

        async def quiet(exc: Exception) -> None:
            # nats-py logs connection errors through this callback; the sink reports
            # them itself, once, through the exception of the failed batch.
            errors.append(exc)

        kwargs: dict[str, Any] = {
            "servers": self._servers,
            "allow_reconnect": False,
            "connect_timeout": max(1, int(o.timeout)),
            # nats-py takes 0 for "no limit": a server that refuses the connection was
            # tried again every 2 s until the sink's own timeout, which then reported a
            # timeout instead of the refusal. One attempt each, then the sink's retries.
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0,
            "error_cb": quiet,
            "name": f"auditshipd {self.name}",
            "tls": tls,
            "user": o.user,
            "password": o.password,
            "token": o.token,
            "user_credentials": o.credentials_file,
            "nkeys_seed": o.nkey_seed_file,
        }
        try:
            nc = await asyncio.wait_for(self._nats.connect(**kwargs), o.timeout + 5)
        except Exception as exc:
            # "no servers available" after every address failed: say why the last did.
            why = errors[-1] if errors and type(exc).__name__ == "NoServersError" else exc
            raise classify_nats_error(why, f"NATS connect to {self._where}") from exc
        self._nc = nc
        self._js = nc.jetstream(timeout=o.timeout)
        return self._js

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), self.options.timeout)

    async def send(self, batch: Batch) -> None:
        if not batch.events:
            return
        async with self._lock:
            await self._publish_all(batch)

    async def _publish_all(self, batch: Batch) -> None:
        if self._nc is not None and not self._nc.is_connected:
            await self._disconnect()  # lost between two batches: nothing was in flight
        js = self._js or await self._connect()
        o = self.options
        window = asyncio.Semaphore(o.max_in_flight)

        subjects, unsendable = self._sendable(batch, self._nc.max_payload)

        async def one(event: dict[str, Any], subject: str, line: bytes) -> None:
            async with window:
                event_id = event.get("id")
                headers = {"Nats-Msg-Id": _msg_id(str(event_id))} if event_id else None
                await js.publish(subject, line, timeout=o.timeout,
                                 stream=o.stream, headers=headers)

        loop = asyncio.get_running_loop()
        # Tasks start in order and the window is FIFO: messages leave in batch order.
        # ``subjects`` may stop short of the batch: its events are the ones sent.
        tasks = [loop.create_task(one(e, subject, line))
                 for e, subject, line in zip(batch.events, subjects, batch.lines, strict=False)]
        try:
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
            await self._disconnect()
            raise
        failed = [(i, exc) for i, exc in enumerate(outcomes) if isinstance(exc, BaseException)]
        if not failed:
            if unsendable is not None:  # stopped before an event it cannot publish
                index = len(subjects)
                raise PermanentError(
                    f"event {index} (id {batch.events[index].get('id')}): {unsendable}",
                    accepted=index, rejected=1)
            return
        index, exc = failed[0]
        event_id = batch.events[index].get("id")
        err = classify_nats_error(exc, f"NATS publish to {self._where}")
        # Whatever follows the first failure is sent again (retried, or after the one
        # rejected event); JetStream drops the copies it already stored (same Nats-Msg-Id).
        if isinstance(err, RetryableError):
            if self._nc is None or not self._nc.is_connected:
                await self._disconnect()
            raise RetryableError(f"{err} (event {index}, id {event_id})", accepted=index,
                                 retry_after=getattr(err, "retry_after", None))
        raise PermanentError(f"{err} (event {index}, id {event_id})", accepted=index, rejected=1)

    def _sendable(self, batch: Batch, max_payload: int) -> tuple[list[str], str | None]:
        """The subjects of ``batch``'s events up to the first one a server would refuse by
        closing the connection, and why it would. ``max_payload`` (the server's) counts
        the headers with the payload; nats-py checks the payload alone."""
        subjects: list[str] = []
        stream = self.options.stream
        fixed = len(b"NATS/1.0\r\n\r\n") + (
            len(f"Nats-Expected-Stream: {stream}\r\n".encode()) if stream else 0)
        for event, line in zip(batch.events, batch.lines, strict=True):
            subject = self._subject(event)
            if len(subject.encode("utf-8", "surrogatepass")) > _MAX_SUBJECT_BYTES:
                return subjects, (f"its subject is longer than {_MAX_SUBJECT_BYTES} bytes,"
                                  " more than a NATS server accepts")
            event_id = event.get("id")
            headers = len(f"Nats-Msg-Id: {_msg_id(str(event_id))}\r\n".encode()
                          ) if event_id else 0
            size = len(line) + (fixed + headers if event_id or stream else 0)
            if size > max_payload:
                return subjects, (f"its message of {size} bytes (headers included) is larger"
                                  f" than the server's max_payload ({max_payload} bytes)")
            subjects.append(subject)
        return subjects, None

    async def close(self) -> None:
        async with self._lock:
            await self._disconnect()


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "nats",
            NatsOptions,
            NatsSink,
            "NATS JetStream: one message per event, Nats-Msg-Id = event id, acks awaited",
            validate=validate_options,
            secrets=("password", "token"),
        )
    ]
