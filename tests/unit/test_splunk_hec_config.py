"""splunk_hec options: schema, validation through the config loader, secrets, encoding."""

from __future__ import annotations

import logging
from pathlib import Path

import pluggy
import pytest

from auditshipd.config import parse_config
from auditshipd.errors import ConfigError
from auditshipd.plugin import SinkContext
from auditshipd.plugins import hookspecs
from auditshipd.plugins.manager import sink_types
from auditshipd.sinks import BUILTIN_SINK_MODULES, splunk_hec
from auditshipd.sinks.splunk_hec import SplunkHecOptions, SplunkHecSink, event_time

TOKEN = "9a3b0f2e-secret-hec-token"


@pytest.fixture
def types():
    pm = pluggy.PluginManager("auditshipd")
    pm.add_hookspecs(hookspecs)
    pm.register(splunk_hec, name="auditshipd.sinks.splunk_hec")
    return sink_types(pm)


def sink_toml(**keys: object) -> str:
    lines = ['[[sinks]]', 'name = "splunk"', 'type = "splunk_hec"']
    for k, v in keys.items():
        lines.append(f"{k} = {v!r}".replace("'", '"') if not isinstance(v, bool) else f"{k} = {str(v).lower()}")
    return "\n".join(lines) + "\n"


def test_registered_as_builtin_plugin(types):
    """The module is a built-in plugin contributing splunk_hec with token as a secret."""
    assert "auditshipd.sinks.splunk_hec" in BUILTIN_SINK_MODULES
    st = types["splunk_hec"]
    assert st.secrets == ("token",)
    assert st.plugin == "auditshipd.sinks.splunk_hec"


def test_defaults(types, monkeypatch):
    """A minimal table gets the documented defaults; the token comes from ${ENV}."""
    monkeypatch.setenv("HEC_TOKEN", TOKEN)
    cfg = parse_config(sink_toml(url="https://splunk.example.com:8088", token="${HEC_TOKEN}"), "t.toml", types)
    o = cfg.sinks[0].options
    assert isinstance(o, SplunkHecOptions)
    assert o.token == TOKEN
    assert (o.sourcetype, o.acks, o.gzip, o.tls_verify) == ("auditshipd:audit", False, False, True)
    assert o.max_request_bytes == 1_000_000
    assert o.index is None and o.source is None and o.host is None


@pytest.mark.parametrize(
    ("keys", "key", "words"),
    [
        ({"url": "splunk.example.com:8088", "token": TOKEN}, "url", "base URL"),
        ({"url": "ftp://splunk.example.com", "token": TOKEN}, "url", "base URL"),
        ({"url": "https://u:p@splunk.example.com", "token": TOKEN}, "url", "credentials"),
        ({"url": "https://splunk.example.com:8088"}, "token", "missing HEC token"),
        ({"url": "https://splunk.example.com:8088", "token": ""}, "token", "missing"),
        ({"url": "https://s.example.com", "token": TOKEN, "max_request_bytes": 10}, "max_request_bytes", "at least"),
        ({"url": "https://s.example.com", "token": TOKEN, "ack_timeout": 0.0}, "ack_timeout", "positive"),
        ({"url": "https://s.example.com", "token": TOKEN, "ca_file": "/nonexistent/ca.pem"}, "ca_file", "not found"),
        ({"url": "https://s.example.com", "token": TOKEN, "acks": "yes"}, "acks", "wrong type"),
        ({"url": "https://s.example.com", "token": TOKEN, "colour": "red"}, "colour", "unknown key"),
    ],
)
def test_invalid_options_name_the_key(types, keys, key, words):
    """Bad url / missing token / out-of-range values: ConfigError naming file and key."""
    with pytest.raises(ConfigError) as info:
        parse_config(sink_toml(**keys), "t.toml", types)
    assert info.value.key == f"sinks[0] (splunk).{key}"
    assert words in str(info.value)
    assert TOKEN not in str(info.value)


def test_bad_token_message_does_not_echo_it(types):
    """A token with whitespace is refused without being shown."""
    with pytest.raises(ConfigError) as info:
        parse_config(sink_toml(url="https://s.example.com", token="abc def-secret"), "t.toml", types)
    assert "abc def-secret" not in str(info.value)


def test_repr_hides_token(tmp_path: Path):
    """Neither the options nor the sink show the token in repr."""
    o = SplunkHecOptions(url="https://s.example.com:8088", token=TOKEN)
    sink = SplunkHecSink("s", o, SinkContext("s", tmp_path, logging.getLogger("t")))
    assert TOKEN not in repr(o) and "token='***'" not in repr(o) and "token=***" in repr(o)
    assert TOKEN not in repr(sink)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://s.example.com:8088", "https://s.example.com:8088/services/collector/event"),
        ("https://s.example.com:8088/", "https://s.example.com:8088/services/collector/event"),
        ("https://s.example.com/services/collector/event", "https://s.example.com/services/collector/event"),
        ("https://proxy.example.com/splunk", "https://proxy.example.com/splunk/services/collector/event"),
        ("https://s.example.com:8088/services/collector", "https://s.example.com:8088/services/collector/event"),
        ("https://s.example.com:8088/services/collector/event/1.0",
         "https://s.example.com:8088/services/collector/event"),
        ("https://s.example.com:8088/services/collector/raw",
         "https://s.example.com:8088/services/collector/event"),
        ("https://proxy.example.com/splunk/services/collector/raw/1.0/",
         "https://proxy.example.com/splunk/services/collector/event"),
        ("https://proxy.example.com/services/collectors",
         "https://proxy.example.com/services/collectors/services/collector/event"),
    ],
)
def test_endpoint_from_base_url(tmp_path: Path, url: str, endpoint: str):
    """url is the collector's base; a pasted endpoint is accepted too: what follows
    /services/collector is dropped."""
    o = SplunkHecOptions(url=url, token=TOKEN)
    sink = SplunkHecSink("s", o, SinkContext("s", tmp_path, logging.getLogger("t")))
    assert sink._event_url == endpoint


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [
        ("2024-05-01T12:00:00.123Z", "1714564800.123"),
        ("2024-05-01T12:00:00Z", "1714564800.000"),
        ("2024-05-01T14:00:00.5+02:00", "1714564800.500"),
        ("2024-05-01T12:00:00.123456Z", "1714564800.123"),
        ("yesterday", None),
        (None, None),
        (12, None),
    ],
)
def test_event_time_from_occurred_at(occurred_at, expected):
    """HEC time is epoch seconds with milliseconds, exact (no float rounding)."""
    assert event_time(occurred_at) == expected


ROOT = Path(__file__).resolve().parents[2]


def _example_table(type_name: str) -> str:
    text = (ROOT / "config" / "sinks-example.toml").read_text("utf-8")
    tables = text.split("[[sinks]]")
    return next(t for t in tables if f'type = "{type_name}"' in t)


def test_every_key_documented_in_example_and_docs():
    """Each option appears in config/sinks-example.toml and in docs/sinks.md."""
    table = _example_table("splunk_hec")
    docs = (ROOT / "docs" / "sinks.md").read_text("utf-8")
    section = docs.split("## `splunk_hec`")[1].split("\n## ")[0]
    for key in SplunkHecOptions.__struct_fields__:
        assert f"\n{key} = " in table or f"\n# {key} = " in table, key
        assert f"| `{key}` |" in section, key


def test_example_table_is_valid(types, monkeypatch):
    """The example splunk_hec table passes the loader's checks."""
    monkeypatch.setenv("SPLUNK_HEC_TOKEN", TOKEN)
    cfg = parse_config("[[sinks]]" + _example_table("splunk_hec"), "example", types)
    assert cfg.sinks[0].options.acks is True
