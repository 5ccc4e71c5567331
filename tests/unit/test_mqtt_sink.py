"""Unit tests of the mqtt sink: options, topic templates, message building, classification."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import msgspec
import pytest

from auditshipd.config import parse_config
from auditshipd.delivery.batch import Batch
from auditshipd.errors import ConfigError, PermanentError, RetryableError
from auditshipd.plugin import SinkContext
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.sinks.mqtt import (
    MqttOptions,
    MqttSink,
    TopicTemplate,
    classify_mqtt_error,
    validate_options,
)


def config_error(**options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        validate_options(MqttOptions(**{"url": "mqtt://broker", **options}))
    return err.value


def test_valid_options_pass(tmp_path: Path) -> None:
    """Typical option sets validate, and the validator does look at them: the same sets
    with one key made invalid (qos 3) are rejected naming that key."""
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    for options in (
        MqttOptions(url="mqtt://broker:1883"),
        MqttOptions(
            url="mqtts://broker:8883", topic="org/{organization.slug}", qos=2, username="u",
            password="p", message_per="batch", protocol="v311", ca_file=str(ca),
        ),
    ):
        assert validate_options(options) is None
        with pytest.raises(ConfigError) as err:
            validate_options(msgspec.structs.replace(options, qos=3))
        assert err.value.key == "qos"


def test_missing_ca_file_is_reported() -> None:
    """check-config names ca_file when the file does not exist."""
    assert config_error(url="mqtts://b", ca_file="/nonexistent/ca.pem").key == "ca_file"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": "tcp://broker:1883"}, "url"),
        ({"url": "mqtt://"}, "url"),
        ({"url": "mqtt://broker:99999"}, "url"),
        ({"url": "mqtt://u:p@broker"}, "url"),
        ({"url": "mqtt://broker/audit"}, "url"),
        ({"ca_file": "/ca.pem"}, "url"),
        ({"topic": "audit/+/{action}"}, "topic"),
        ({"topic": "audit/#"}, "topic"),
        ({"topic": ""}, "topic"),
        ({"topic": "audit/{}"}, "topic"),
        ({"topic": "audit/{action!r}"}, "topic"),
        ({"topic": "audit/{a..b}"}, "topic"),
        ({"qos": 3}, "qos"),
        ({"message_per": "topic"}, "message_per"),
        ({"protocol": "v3"}, "protocol"),
        ({"password": "p"}, "username"),
        ({"keepalive": 0}, "keepalive"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_invalid_options_name_their_key(options: dict[str, Any], key: str) -> None:
    """Each invalid option is a ConfigError naming that key."""
    assert config_error(**options).key == key


def test_check_config_reports_the_sink_key_and_password_is_secret() -> None:
    """The loader names file, sink and key; the sink type declares password secret."""
    types = sink_types(build_plugin_manager())
    assert types["mqtt"].secrets == ("password",)
    text = '[[sinks]]\nname = "bus"\ntype = "mqtt"\nurl = "mqtt://b"\nqos = 5\n'
    with pytest.raises(ConfigError, match=r"c\.toml:5: sinks\[0\] \(bus\)\.qos"):
        parse_config(text, "c.toml", types)


def test_topic_template_renders_dotted_fields_and_unknown() -> None:
    """Dotted paths resolve into the event; missing or non-scalar values are 'unknown'."""
    t = TopicTemplate("audit/{organization.slug}/{action}/{actor}")
    event = {"organization": {"slug": "acme"}, "action": "user.login", "actor": {"x": 1}}
    assert t(event) == "audit/acme/user.login/unknown"
    assert t({}) == "audit/unknown/unknown/unknown"
    assert TopicTemplate("n/{a}/{b}")({"a": 3, "b": True}) == "n/3/true"


def test_topic_values_cannot_inject_levels_or_wildcards() -> None:
    """'+', '#', '/' and NUL inside a value are replaced; a leading '$' too."""
    t = TopicTemplate("{a}/{b}")
    assert t({"a": "$SYS", "b": "x/+/#\0y"}) == "_SYS/x_____y"
    assert TopicTemplate("audit/{{literal}}/{a}")({"a": "v"}) == "audit/{literal}/v"


def make_sink(tmp_path: Path, **options: Any) -> MqttSink:
    opts = MqttOptions(url="mqtt://127.0.0.1:1", **options)
    return MqttSink("m", opts, SinkContext("m", tmp_path, logging.getLogger()))


def test_event_mode_builds_one_message_per_event(tmp_path: Path) -> None:
    """message_per = "event": the encoded event, its topic, and the event_id property."""
    sink = make_sink(tmp_path)
    batch = Batch([{"id": "1", "action": "a", "organization": {"slug": "o"}}, {"id": "2", "action": "b"}])
    messages, bad = sink._messages(batch)
    assert bad is None
    assert [m.topic for m in messages] == ["audit/o/a", "audit/unknown/b"]
    assert [m.payload for m in messages] == batch.lines
    assert [m.user_properties for m in messages] == [(("event_id", "1"),), (("event_id", "2"),)]


def test_batch_mode_groups_by_topic_in_order(tmp_path: Path) -> None:
    """message_per = "batch": one JSON Lines message per topic, events in journal order."""
    sink = make_sink(tmp_path, message_per="batch", topic="t/{org}")
    batch = Batch([{"id": str(i), "org": "ab"[i % 2]} for i in range(5)])
    messages, _ = sink._messages(batch)
    assert [m.topic for m in messages] == ["t/a", "t/b"]
    assert messages[0].payload == b"".join(batch.lines[i] + b"\n" for i in (0, 2, 4))
    assert dict(messages[1].user_properties) == {
        "batch_first_id": "1", "batch_last_id": "3", "event_count": "2",
    }


async def test_unsendable_event_is_rejected_alone(tmp_path: Path) -> None:
    """An event whose topic is too long: the events before it are sent, it alone is rejected."""
    sink = make_sink(tmp_path, topic="t/{x}")
    batch = Batch([{"id": "1", "x": "ok"}, {"id": "2", "x": "y" * 70000}, {"id": "3", "x": "ok"}])
    messages, bad = sink._messages(batch)
    assert len(messages) == 1 and bad is not None and bad[0] == 1
    sent: list[str] = []

    async def fake_publish(messages: list[Any]) -> None:
        sent.extend(m.topic for m in messages)

    async def fake_ready() -> Any:
        return types.SimpleNamespace(max_packet_size=None)

    sink._publish_all = fake_publish  # type: ignore[method-assign]
    sink._ready = fake_ready  # type: ignore[method-assign]
    with pytest.raises(PermanentError) as err:
        await sink.send(batch)
    assert (err.value.accepted, err.value.rejected) == (1, 1)
    assert sent == ["t/ok"]


def test_connect_refusals_are_classified() -> None:
    """Bad credentials / not authorized are permanent; server unavailable or busy retryable."""
    import aiomqtt
    from aiomqtt.exceptions import MqttConnectError
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    def refused(value: int) -> Exception:
        return MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=value))

    assert isinstance(classify_mqtt_error(refused(0x86)), PermanentError)
    assert isinstance(classify_mqtt_error(refused(0x87)), PermanentError)
    assert isinstance(classify_mqtt_error(refused(0x88)), RetryableError)
    assert isinstance(classify_mqtt_error(refused(0x89)), RetryableError)
    assert isinstance(classify_mqtt_error(MqttConnectError(4)), PermanentError)
    assert isinstance(classify_mqtt_error(MqttConnectError(3)), RetryableError)
    assert isinstance(classify_mqtt_error(aiomqtt.MqttError("[Errno 111] refused")), RetryableError)
    assert isinstance(classify_mqtt_error(TimeoutError()), RetryableError)


def test_missing_extra_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without aiomqtt, validation and the factory say which extra to install."""
    monkeypatch.setitem(sys.modules, "aiomqtt", None)
    assert "pip install 'auditshipd[mqtt]'" in str(config_error())
    with pytest.raises(ConfigError, match=r"auditshipd\[mqtt\]"):
        make_sink(tmp_path)
