"""Unit tests of the otlp sink: options, URL, the LogRecord mapping of odd values."""

from __future__ import annotations

from typing import Any

import pytest

from auditshipd.errors import ConfigError
from auditshipd.plugin import Batch
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.sinks.otlp import (
    OtlpOptions,
    _Proto,
    _status_message,
    build_request,
    logs_url,
    validate_options,
)


def config_error(**options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        validate_options(OtlpOptions(**{"url": "http://collector:4318", **options}))
    return err.value


def test_valid_options_pass() -> None:
    """Typical option sets validate."""
    validate_options(OtlpOptions(url="http://collector:4318"))
    validate_options(OtlpOptions(url="https://otlp.example.com/v1/logs", encoding="json",
                                 headers={"api-key": "x"}, gzip=False, severity="WARN"))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": "grpc://collector:4317"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "https://u:p@collector"}, "url"),
        ({"encoding": "grpc"}, "encoding"),
        ({"severity": "LOUD"}, "severity"),
        ({"service_name": ""}, "service_name"),
        ({"timeout": 0}, "timeout"),
        ({"ca_file": "/ca.pem"}, "ca_file"),
    ],
)
def test_invalid_options_name_their_key(options: dict[str, Any], key: str) -> None:
    """Each mistake is reported with the key to fix."""
    assert config_error(**options).key == key


def test_registered_with_headers_secret() -> None:
    """The otlp type is built in; header values are secrets."""
    assert sink_types(build_plugin_manager())["otlp"].secrets == ("headers",)


def test_logs_path_added_only_when_missing() -> None:
    """A bare collector address gets /v1/logs; a full URL is kept."""
    assert logs_url("http://c:4318") == "http://c:4318/v1/logs"
    assert logs_url("http://c:4318/") == "http://c:4318/v1/logs"
    assert logs_url("https://c/custom/logs") == "https://c/custom/logs"


def test_odd_values_map_without_loss() -> None:
    """Huge ints keep their digits (string), no occurred_at leaves time 0, no action no name."""
    proto = _Proto()
    event = {"id": "x", "big": 2**70, "neg": -5, "nested": [[1], {"a": None}]}
    request = build_request(proto, OtlpOptions(url="http://c"), Batch([event]))
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    body = {kv.key: kv.value for kv in record.body.kvlist_value.values}
    assert body["big"].string_value == str(2**70)
    assert body["neg"].int_value == -5
    assert record.time_unix_nano == 0
    assert [kv.key for kv in record.attributes] == ["auditshipd.event_id"]


def test_status_message_read_from_protobuf() -> None:
    """The message of a google.rpc.Status answer, read without its module."""
    body = bytes([0x08, 0x03, 0x12, 0x05]) + b"nope!"
    assert _status_message(body) == "nope!"
    assert _status_message(b"\xff") == ""
