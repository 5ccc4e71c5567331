"""The ``mqtt`` sink: publishes events to an MQTT broker with aiomqtt.

One message per event (or per batch and topic), on a topic rendered from a template
such as ``audit/{organization.slug}/{action}``. With QoS 1 or 2 a batch counts as
delivered only when the broker acknowledged every message (aiomqtt's ``publish``
awaits the PUBACK/PUBCOMP). With MQTT v5 each message carries the event id as a user
property, so subscribers can drop the duplicates a resend causes; a negative reason
code in a PUBACK (e.g. "not authorized") fails the batch instead of passing unseen.

A lost connection fails the batch in flight with RetryableError; the next send
connects again. aiomqtt is the optional extra ``auditshipd[mqtt]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import ssl
import string
from collections.abc import Callable
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
from .mqtt_messages import Message, MessageBuilder

__all__ = [
    "DEFAULT_TOPIC",
    "MqttOptions",
    "MqttSink",
    "TopicTemplate",
    "classify_mqtt_error",
    "register_sink_types",
    "validate_options",
]

DEFAULT_TOPIC = "audit/{organization.slug}/{action}"
_MISSING_EXTRA = "the mqtt sink needs the optional extra: pip install 'auditshipd[mqtt]'"
# What a broker refuses in a topic or a user property: it drops the connection on the
# whole packet (Mosquitto: "malformed packet"). MQTT strings are UTF-8 without NUL, and
# brokers also refuse the control characters and the Unicode noncharacters.
_NOT_IN_MQTT_STRINGS = [*range(0x20), *range(0x7F, 0xA0), *range(0xFDD0, 0xFDF0),
                        *(plane + last for plane in range(0, 0x110000, 0x10000)
                          for last in (0xFFFE, 0xFFFF))]
_MQTT_STRING = str.maketrans(dict.fromkeys(_NOT_IN_MQTT_STRINGS, "_"))
_UNSAFE = {**_MQTT_STRING, **str.maketrans({"+": "_", "#": "_", "/": "_"})}


def _fits_mqtt(value: str) -> bool:
    return value.translate(_MQTT_STRING) == value
# How many QoS>0 messages wait for their acknowledgement at once. paho ignores the
# broker's v5 Receive Maximum, so stay at the common default (Mosquitto's is 20).
_WINDOW = 20

# MQTT v5 reason codes (CONNACK / PUBACK) that a later attempt can get past; every
# other failure code (bad credentials, not authorized, topic invalid...) is permanent.
_RETRYABLE_REASONS = frozenset({
    0x80,  # unspecified error
    0x83,  # implementation specific error
    0x88,  # server unavailable
    0x89,  # server busy
    0x8B,  # server shutting down
    0x91,  # packet identifier in use
    0x97,  # quota exceeded
    0x9C,  # use another server
    0x9D,  # server moved
    0x9F,  # connection rate exceeded
})
# paho MQTT_ERR_* results of a publish call that will not go away by retrying.
_PERMANENT_PAHO_RC = frozenset({3, 9, 10})  # INVAL, PAYLOAD_SIZE, NOT_SUPPORTED


class MqttOptions(SinkOptions):
    """Keys of an ``mqtt`` ``[[sinks]]`` table."""

    url: str
    topic: str = DEFAULT_TOPIC
    qos: int = 1
    username: str | None = None
    password: str | None = None
    message_per: str = "event"
    client_id: str | None = None
    keepalive: int = 60
    timeout: float = 10.0
    protocol: str = "v5"
    ca_file: str | None = None
    tls_verify: bool = True


class TopicTemplate(FieldTemplate):
    """``audit/{organization.slug}/{action}`` rendered against an event.

    A placeholder is a dotted path into the event. A missing, empty or non-scalar value
    renders as ``unknown``; ``+``, ``#``, ``/`` inside a value become ``_`` so a value
    can neither add topic levels nor act as a wildcard, and so do the characters a
    broker refuses in a topic (NUL and other control characters, noncharacters).
    """

    __slots__ = ()
    unsafe = _UNSAFE

    def __call__(self, event: dict[str, Any]) -> str:
        topic = super().__call__(event)
        # Topics starting with '$' are reserved for the broker ($SYS...).
        return "_" + topic[1:] if topic.startswith("$") else topic


def validate_options(options: MqttOptions) -> None:
    """Checks msgspec cannot express; raises ConfigError naming the key."""
    parts = split_url(options.url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(
            "must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], e.g. mqtts://broker:8883",
            key="url",
        )
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError("invalid port", key="url") from None
    if parts.username or parts.password:
        raise ConfigError("put credentials in username/password, not in the URL", key="url")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("must not have a path or query (the topic goes in topic)", key="url")
    try:
        TopicTemplate(options.topic)
    except ValueError as exc:
        raise ConfigError(str(exc), key="topic") from None
    literal = "".join(lit for lit, *_ in string.Formatter().parse(options.topic))
    if not options.topic or any(c in literal for c in "+#") or (
            not _fits_mqtt(literal)):
        raise ConfigError("must be a non-empty topic name without + #, control characters"
                          " or noncharacters", key="topic")
    if options.qos not in (0, 1, 2):
        raise ConfigError("must be 0, 1 or 2", key="qos")
    if options.message_per not in ("event", "batch"):
        raise ConfigError('must be "event" or "batch"', key="message_per")
    if options.protocol not in ("v5", "v311"):
        raise ConfigError('must be "v5" or "v311"', key="protocol")
    if options.password is not None and options.username is None:
        raise ConfigError("a password needs a username", key="username")
    if not 0 < options.keepalive <= 65535:
        raise ConfigError("must be 1..65535 seconds", key="keepalive")
    positive_floats(options)
    if parts.scheme == "mqtt" and (options.ca_file or not options.tls_verify):
        raise ConfigError("ca_file and tls_verify apply to mqtts:// URLs only", key="url")
    if options.ca_file is not None and not os.path.isfile(options.ca_file):
        raise ConfigError(f"file {options.ca_file!r} not found", key="ca_file")
    if not module_available("aiomqtt"):
        raise ConfigError(_MISSING_EXTRA, key="type")


def _reason_value(rc: Any) -> int | None:
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


def classify_mqtt_error(exc: BaseException, what: str = "MQTT") -> SinkError:
    """Turn what aiomqtt/paho raised into a retry decision."""
    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return RetryableError(f"{what}: timed out")
    rc = getattr(exc, "rc", None)
    if type(exc).__name__ == "MqttConnectError" and rc is not None:
        code = _reason_value(rc)
        # MQTT 3.1.1 CONNACK codes: only 3 (server unavailable) is transient.
        retry = code == 3 if code is not None and code < 0x80 else code in _RETRYABLE_REASONS
        cls = RetryableError if retry else PermanentError
        return cls(f"{what}: broker refused the connection: {exc}")
    if type(exc).__name__ == "MqttCodeError" and _reason_value(rc) in _PERMANENT_PAHO_RC:
        return PermanentError(f"{what}: {exc}")
    if isinstance(exc, ValueError):  # paho: topic too long, payload too large
        return PermanentError(f"{what}: {exc}")
    return RetryableError(f"{what}: {type(exc).__name__}: {exc}")


def _import_aiomqtt() -> Any:
    try:
        return importlib.import_module("aiomqtt")
    except ImportError:
        raise ConfigError(_MISSING_EXTRA, key="type") from None


def _tracking_client_class(aiomqtt: Any) -> type:
    class _AckTrackingClient(aiomqtt.Client):  # type: ignore[misc,name-defined]
        """aiomqtt's Client, keeping the failure reason codes of PUBACK/PUBREC.

        aiomqtt resolves ``publish`` on any acknowledgement, success or not. The
        broker's Maximum Packet Size from the CONNACK is kept too.
        """

        refused: list[Any]
        max_packet_size: int | None = None  # the broker's Maximum Packet Size (v5)

        def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                        properties: Any = None) -> None:
            size = getattr(properties, "MaximumPacketSize", None)
            self.max_packet_size = size if isinstance(size, int) else None
            super()._on_connect(client, userdata, flags, reason_code, properties)

        def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any,
                        properties: Any) -> None:
            if getattr(reason_code, "is_failure", False):
                self.refused.append(reason_code)
            super()._on_publish(client, userdata, mid, reason_code, properties)

    return _AckTrackingClient


class MqttSink:
    """Publishes every event (or every batch, one message per topic) to ``url``."""

    def __init__(self, name: str, options: MqttOptions, context: SinkContext):
        self.name = name
        self.options = options
        self.context = context
        # CEF lines are text; every other format is JSON (one document, or lines of them).
        self._text = context.format == "cef"
        self._aiomqtt = _import_aiomqtt()
        self._client_cls = _tracking_client_class(self._aiomqtt)
        # paho is aiomqtt's own dependency: present whenever aiomqtt is.
        self._properties_cls = importlib.import_module("paho.mqtt.properties").Properties
        self._publish_packet = importlib.import_module("paho.mqtt.packettypes").PacketTypes.PUBLISH
        self._topic = TopicTemplate(options.topic)
        url = urlsplit(options.url)
        self._tls = url.scheme == "mqtts"
        self._host = url.hostname or ""
        self._port = url.port or (8883 if self._tls else 1883)
        self._v5 = options.protocol == "v5"
        self._builder = MessageBuilder(self._topic, per_batch=options.message_per == "batch",
                                       text=self._text, qos=options.qos,
                                       properties=self._properties)
        self._client: Any = None
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        # The connection is opened by the first send: a broker that is down at start-up
        # is then an ordinary retryable failure of that batch.
        return None

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self._tls:
            return None
        ctx = ssl.create_default_context(cafile=self.options.ca_file)
        if not self.options.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connect(self) -> Any:
        o = self.options
        aiomqtt = self._aiomqtt
        try:
            tls_context = self._tls_context()
        except (OSError, ssl.SSLError) as exc:
            # Checked by validation already; if it vanished since, hold the batch.
            raise RetryableError(f"mqtt sink: cannot load ca_file: {exc}") from None
        client = self._client_cls(
            self._host,
            self._port,
            username=o.username,
            password=o.password,
            identifier=o.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if self._v5 else aiomqtt.ProtocolVersion.V311,
            keepalive=o.keepalive,
            timeout=o.timeout,
            tls_context=tls_context,
            tls_insecure=True if self._tls and not o.tls_verify else None,
            max_inflight_messages=_WINDOW,
        )
        client.refused = []
        # aiomqtt warns ("There are N pending publish calls.") above 10 calls in flight;
        # a full window is this sink's normal pace: warn only beyond it.
        client.pending_calls_threshold = _WINDOW
        try:
            # aiomqtt bounds the CONNACK wait with ``timeout``; this is a safety net.
            await asyncio.wait_for(client.__aenter__(), o.timeout + 5)
        except Exception as exc:
            raise classify_mqtt_error(exc, f"MQTT connect to {self._host}:{self._port}") from exc
        self._client = client
        self._watcher = asyncio.get_running_loop().create_task(self._watch(client))
        return client

    @staticmethod
    async def _watch(client: Any) -> None:
        # aiomqtt's public way to learn about a lost connection: the message iterator
        # raises. We never subscribe, so it yields nothing until then.
        with contextlib.suppress(Exception):
            async for _ in client.messages:
                pass

    async def _disconnect(self) -> None:
        client, watcher = self._client, self._watcher
        self._client = self._watcher = None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.__aexit__(None, None, None), self.options.timeout)

    async def send(self, batch: Batch) -> None:
        if not batch.events:
            return
        async with self._lock:
            client = await self._ready()
            messages, bad = self._messages(batch, client.max_packet_size)
            if messages:
                await self._publish_all(messages)
        if bad is not None:
            index, reason = bad
            raise PermanentError(
                f"event {index} (id {batch.events[index].get('id')}): {reason}",
                accepted=index, rejected=1,
            )

    def _messages(self, batch: Batch, max_packet: int | None = None
                  ) -> tuple[list[Message], tuple[int, str] | None]:
        """The messages for ``batch``; stops before the first event that cannot be sent."""
        return self._builder.build(batch, max_packet)

    def _properties(self, message: Message) -> Any:
        if not self._v5:
            return None
        props = self._properties_cls(self._publish_packet)
        # An id may hold what MQTT strings cannot: it is then sent percent-encoded behind
        # "%" (distinct ids stay distinct for subscribers that drop duplicates by it).
        props.UserProperty = [(k, id_text(v, _fits_mqtt)) for k, v in message.user_properties]
        props.ContentType = message.content_type
        props.PayloadFormatIndicator = 1  # UTF-8
        return props

    async def _ready(self) -> Any:
        """The connected client, connecting (again) when needed."""
        if self._watcher is not None and self._watcher.done():
            await self._disconnect()  # lost between two batches: nothing was in flight
        return self._client or await self._connect()

    async def _publish_all(self, messages: list[Message]) -> None:
        client = await self._ready()
        watcher = self._watcher
        assert watcher is not None
        client.refused = []
        window = asyncio.Semaphore(_WINDOW)
        publish: Callable[..., Any] = client.publish

        async def one(message: Message) -> None:
            async with window:
                await publish(
                    message.topic, message.payload, qos=self.options.qos,
                    properties=self._properties(message), timeout=self.options.timeout,
                )

        loop = asyncio.get_running_loop()
        # Tasks are created in order and the window is FIFO: messages leave in batch order.
        tasks = [loop.create_task(one(m)) for m in messages]
        everything = asyncio.gather(*tasks)
        try:
            await asyncio.wait({everything, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not everything.done():
                raise RetryableError(
                    f"MQTT connection to {self._host}:{self._port} lost;"
                    " the batch will be sent again"
                )
            exc = everything.exception()
            if exc is not None:
                raise classify_mqtt_error(exc, f"MQTT publish to {self._host}:{self._port}")
        except BaseException:
            # Lost, failed or cancelled mid-batch: start from a clean connection next time.
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await everything
            await self._disconnect()
            raise
        if client.refused:
            codes = sorted({f"{_reason_value(rc):#04x} {rc}" for rc in client.refused})
            retry = all(_reason_value(rc) in _RETRYABLE_REASONS for rc in client.refused)
            text = (
                f"MQTT broker {self._host}:{self._port} refused {len(client.refused)}"
                f" message(s) in its acknowledgements: {', '.join(codes)}"
            )
            raise RetryableError(text) if retry else PermanentError(text)

    async def close(self) -> None:
        async with self._lock:
            await self._disconnect()


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "mqtt",
            MqttOptions,
            MqttSink,
            "MQTT broker (v5 or 3.1.1): one message per event or per batch, QoS 1 by default",
            validate=validate_options,
            secrets=("password",),
        )
    ]
