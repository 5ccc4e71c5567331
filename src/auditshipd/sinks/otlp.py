"""The ``otlp`` sink: OpenTelemetry logs over OTLP/HTTP to a collector.

One batch becomes one ``ExportLogsServiceRequest`` (protobuf by default, OTLP/JSON as
an option; gzip by default) with one LogRecord per event: ``time_unix_nano`` from
``occurred_at``, a severity, the event itself as the body (a key/value list), and the
attributes ``event.name`` (the action), ``auditshipd.event_id`` and
``organization.slug``; the resource carries ``service.name`` and any
``resource_attributes``. The messages come from ``opentelemetry-proto``: the SDK's own
batching is not used, since the core's cursors must see each delivery.

429, 502, 503 and 504 (and other 5xx) are retried, honouring ``Retry-After``; other
answers are permanent. A partial success (``rejected_log_records`` > 0) cannot be
mapped to events (OTLP does not say which records were refused), so the batch goes to
the dead letters with the collector's message; receivers drop the duplicates a replay
brings by ``auditshipd.event_id``. opentelemetry-proto is the optional extra
``auditshipd[otlp]``.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import msgspec
from yarl import URL

from .. import __version__
from ..plugin import (
    Batch,
    ConfigError,
    PermanentError,
    SinkContext,
    SinkOptions,
    SinkType,
    hookimpl,
    module_available,
)
from ._checks import header_fields, http_url, positive_floats, readable_file
from ._http_common import (
    SessionSink,
    classify_status,
    compress,
    post,
    safe_url,
    snippet,
)
from ._request_split import TooLarge, send_batch_halving
from .key_template import occurred_at_ns

__all__ = [
    "SEVERITIES",
    "OtlpOptions",
    "OtlpSink",
    "build_request",
    "register_sink_types",
    "validate_options",
]

_MISSING_EXTRA = "the otlp sink needs the optional extra: pip install 'auditshipd[otlp]'"
#: ``severity`` values and their OTLP SeverityNumber.
SEVERITIES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
_INT64 = (-(2**63), 2**63 - 1)


class OtlpOptions(SinkOptions):
    """Keys of an ``otlp`` ``[[sinks]]`` table."""

    url: str
    encoding: str = "protobuf"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    gzip: bool = True
    service_name: str = "auditshipd"
    resource_attributes: dict[str, str] = msgspec.field(default_factory=dict)
    severity: str = "INFO"
    tls_verify: bool = True
    ca_file: str | None = None
    timeout: float = 10.0


def validate_options(options: OtlpOptions) -> None:
    """Checks msgspec cannot express; raises ConfigError naming the key."""
    url, host = http_url(options.url)
    if url.scheme not in ("http", "https") or not host:
        raise ConfigError(
            "must be an http:// or https:// URL, e.g. https://collector:4318/v1/logs", key="url"
        )
    if url.user or url.password:
        raise ConfigError("put credentials in headers, not in the URL", key="url")
    if options.encoding not in ("protobuf", "json"):
        raise ConfigError('must be "protobuf" or "json"', key="encoding")
    if options.severity not in SEVERITIES:
        raise ConfigError(f"must be one of {', '.join(SEVERITIES)}", key="severity")
    if not options.service_name:
        raise ConfigError("must not be empty", key="service_name")
    header_fields(options.headers)
    positive_floats(options)
    if options.ca_file is not None and url.scheme != "https":
        raise ConfigError("ca_file applies to https:// URLs only", key="ca_file")
    readable_file(options.ca_file, "ca_file")
    if not module_available("opentelemetry.proto"):
        raise ConfigError(_MISSING_EXTRA, key="type")


def logs_url(url: str) -> str:
    """The collector URL with the OTLP logs path when the user gave only host and port."""
    parsed = URL(url)
    return str(parsed.with_path("/v1/logs")) if parsed.path in ("", "/") else url


class _Proto:
    """The opentelemetry-proto message classes, imported when an otlp sink is built."""

    def __init__(self) -> None:
        try:
            common = importlib.import_module("opentelemetry.proto.common.v1.common_pb2")
            logs = importlib.import_module("opentelemetry.proto.logs.v1.logs_pb2")
            resource = importlib.import_module("opentelemetry.proto.resource.v1.resource_pb2")
            service = importlib.import_module(
                "opentelemetry.proto.collector.logs.v1.logs_service_pb2"
            )
            self.json_format = importlib.import_module("google.protobuf.json_format")
        except ImportError:
            raise ConfigError(_MISSING_EXTRA, key="type") from None
        self.AnyValue = common.AnyValue
        self.KeyValue = common.KeyValue
        self.InstrumentationScope = common.InstrumentationScope
        self.Resource = resource.Resource
        self.LogRecord = logs.LogRecord
        self.Request = service.ExportLogsServiceRequest
        self.Response = service.ExportLogsServiceResponse
        # LogRecord.event_name came with OTLP 1.5; older packages lack it.
        self.has_event_name = "event_name" in logs.LogRecord.DESCRIPTOR.fields_by_name


def _set_any(target: Any, value: Any) -> None:
    """Fill the AnyValue ``target`` from a JSON value (None leaves it empty)."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            target.int_value = value
        else:  # beyond int64: keep every digit rather than round it
            target.string_value = str(value)
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, dict):
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        for key, item in value.items():
            kv = kvlist.values.add()
            kv.key = str(key)
            _set_any(kv.value, item)
    elif isinstance(value, list):
        array = target.array_value
        array.SetInParent()
        for item in value:
            _set_any(array.values.add(), item)


def _organization(event: dict[str, Any]) -> str | None:
    org = event.get("organization")
    slug = org.get("slug") if isinstance(org, dict) else None
    return slug if isinstance(slug, str) and slug else None


def build_request(proto: _Proto, options: OtlpOptions, batch: Batch) -> Any:
    """The ``ExportLogsServiceRequest`` for ``batch``: one LogRecord per event, in order."""
    request = proto.Request()
    resource_logs = request.resource_logs.add()
    attributes = {"service.name": options.service_name, **options.resource_attributes}
    for key, value in attributes.items():
        kv = resource_logs.resource.attributes.add()
        kv.key = key
        kv.value.string_value = value
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "auditshipd"
    scope_logs.scope.version = __version__
    observed = time.time_ns()
    severity_number = SEVERITIES[options.severity]
    for event in batch.events:
        record = scope_logs.log_records.add()
        when = occurred_at_ns(event)
        if when is not None and when >= 0:
            record.time_unix_nano = when
        record.observed_time_unix_nano = observed
        record.severity_number = severity_number
        record.severity_text = options.severity
        _set_any(record.body, event)
        for key, value in (
            ("event.name", event.get("action")),
            ("auditshipd.event_id", event.get("id")),
            ("organization.slug", _organization(event)),
        ):
            if isinstance(value, str) and value:
                kv = record.attributes.add()
                kv.key = key
                kv.value.string_value = value
        if proto.has_event_name and isinstance(event.get("action"), str):
            record.event_name = event["action"]
    return request


class OtlpSink(SessionSink):
    """POSTs each batch as one OTLP logs export request to ``url``."""

    def __init__(self, name: str, options: OtlpOptions, context: SinkContext):
        self.name = name
        self.options = options
        self.context = context
        self._proto = _Proto()
        self._url = logs_url(options.url)
        self.receiver = f"OTLP collector {safe_url(self._url)}"

    def secrets(self) -> list[str | None]:
        return list(self.options.headers.values())

    def _encode(self, batch: Batch) -> tuple[bytes, str]:
        request = build_request(self._proto, self.options, batch)
        if self.options.encoding == "json":
            # OTLP/JSON: lowerCamelCase keys, enums as integers (64-bit ints may be strings).
            text = self._proto.json_format.MessageToJson(
                request, use_integers_for_enums=True, indent=None
            )
            return text.encode("utf-8"), "application/json"
        return request.SerializeToString(), "application/x-protobuf"

    async def _send(self, batch: Batch) -> None:
        await send_batch_halving(batch, self._post, sink=self.name, receiver=self.receiver,
                                 logger=self.context.logger, noun=("log record", "log records"))

    async def _post(self, batch: Batch) -> None:
        o = self.options
        body, content_type = self._encode(batch)
        headers = {"Content-Type": content_type, "User-Agent": f"auditshipd/{__version__}"}
        headers.update(o.headers)
        if o.gzip:
            body = await compress(body)
            headers["Content-Encoding"] = "gzip"
        assert self._session is not None
        answer = await post(self._session, self._url, body, headers, receiver=self.receiver,
                            timeout=o.timeout)
        if answer.status == 413:
            raise TooLarge
        error = classify_status(answer.status, answer.headers, self._status_detail(answer),
                                receiver=self.receiver)
        if error is not None:
            raise error
        rejected, message = self._partial_success(answer.body, answer.headers)
        if rejected:
            raise PermanentError(
                f"{self.receiver} rejected {rejected} of {len(batch)} log records"
                f"{': ' + snippet(message) if message else ''}; OTLP does not say which, so"
                " the whole batch is kept in the dead letters (the others were accepted:"
                " a replay duplicates them, with the same auditshipd.event_id)"
            )
        if message:
            self.context.logger.warning("%s: %s", self.receiver, snippet(message))

    def _decode_response(self, body: bytes, headers: Any) -> Any:
        response = self._proto.Response()
        content_type = str(headers.get("Content-Type", "")).split(";")[0].strip().lower()
        if not body:
            return response
        if content_type == "application/json":
            self._proto.json_format.Parse(body, response, ignore_unknown_fields=True)
        else:
            response.ParseFromString(body)
        return response

    def _partial_success(self, body: bytes, headers: Any) -> tuple[int, str]:
        try:
            response = self._decode_response(body, headers)
        except Exception:
            # The export was accepted (2xx); an unreadable body cannot undo that.
            return 0, ""
        if not response.HasField("partial_success"):
            return 0, ""
        partial = response.partial_success
        return int(partial.rejected_log_records), str(partial.error_message)

    def _status_detail(self, answer: Any) -> str:
        # Collectors answer errors with a google.rpc.Status; its message is what helps.
        content_type = str(answer.headers.get("Content-Type", "")).split(";")[0].strip().lower()
        if content_type == "application/x-protobuf":
            return snippet(_status_message(answer.body))
        return snippet(answer.body)


def _status_message(body: bytes) -> str:
    """``message`` (field 2) of a protobuf ``google.rpc.Status``, without its module."""
    # Status is code (1, varint), message (2, string), details (3): read only field 2.
    pos = 0
    try:
        while pos < len(body):
            key, pos = _varint(body, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(body, pos)
            elif wire == 2:
                size, pos = _varint(body, pos)
                if field == 2:
                    return body[pos:pos + size].decode("utf-8", "replace")
                pos += size
            else:
                return ""
    except IndexError:
        return ""
    return ""


def _varint(body: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "otlp",
            OtlpOptions,
            OtlpSink,
            "OpenTelemetry logs over OTLP/HTTP (protobuf or JSON): one LogRecord per event",
            validate=validate_options,
            secrets=("headers",),
        )
    ]
