"""datadog options: schema, site validation through the config loader, secrets, URL."""

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
from auditshipd.sinks import BUILTIN_SINK_MODULES, datadog
from auditshipd.sinks.datadog import DATADOG_SITES, DatadogOptions, DatadogSink, intake_url

API_KEY = "f00dfacecafe0000secret0000beef00"


@pytest.fixture
def types():
    pm = pluggy.PluginManager("auditshipd")
    pm.add_hookspecs(hookspecs)
    pm.register(datadog, name="auditshipd.sinks.datadog")
    return sink_types(pm)


def sink_toml(**keys: object) -> str:
    lines = ["[[sinks]]", 'name = "dd"', 'type = "datadog"']
    for k, v in keys.items():
        value = str(v).lower() if isinstance(v, bool) else repr(v).replace("'", '"')
        lines.append(f"{k} = {value}")
    return "\n".join(lines) + "\n"


def test_registered_as_builtin_plugin(types):
    """The module is a built-in plugin contributing datadog with api_key as a secret."""
    assert "auditshipd.sinks.datadog" in BUILTIN_SINK_MODULES
    assert types["datadog"].secrets == ("api_key",)


def test_defaults(types, monkeypatch):
    """A minimal table: US1 site, gzip on, dead_letter for oversize logs; key from ${ENV}."""
    monkeypatch.setenv("DD_API_KEY", API_KEY)
    o = parse_config(sink_toml(api_key="${DD_API_KEY}"), "t.toml", types).sinks[0].options
    assert isinstance(o, DatadogOptions)
    assert o.api_key == API_KEY
    assert (o.site, o.gzip, o.oversize, o.ddsource, o.tls_verify) == (
        "datadoghq.com", True, "dead_letter", "auditshipd", True,
    )
    assert intake_url(o) == "https://http-intake.logs.datadoghq.com/api/v2/logs"


@pytest.mark.parametrize("site", sorted(DATADOG_SITES))
def test_every_known_site_has_an_intake(types, site):
    """Each known site is accepted and maps to http-intake.logs.<site>."""
    o = parse_config(sink_toml(api_key=API_KEY, site=site), "t.toml", types).sinks[0].options
    assert intake_url(o) == f"https://http-intake.logs.{site}/api/v2/logs"


def test_url_overrides_site(types):
    """url (a proxy) wins over site."""
    o = parse_config(
        sink_toml(api_key=API_KEY, site="datadoghq.eu", url="http://proxy.local:8080/api/v2/logs"),
        "t.toml", types,
    ).sinks[0].options
    assert intake_url(o) == "http://proxy.local:8080/api/v2/logs"


@pytest.mark.parametrize(
    ("keys", "key", "words"),
    [
        ({"api_key": API_KEY, "site": "datadoghq.org"}, "site", "unknown Datadog site"),
        ({"site": "datadoghq.com"}, "api_key", "missing API key"),
        ({"api_key": API_KEY, "url": "not a url"}, "url", "full http(s) intake URL"),
        ({"api_key": API_KEY, "url": "https://k:s@proxy/api/v2/logs"}, "url", "credentials"),
        ({"api_key": API_KEY, "oversize": "drop"}, "oversize", "Invalid enum value"),
        ({"api_key": API_KEY, "timeout": 0.0}, "timeout", "positive"),
        ({"api_key": API_KEY, "gzip": "yes"}, "gzip", "wrong type"),
        ({"api_key": API_KEY, "apikey": "x"}, "apikey", "unknown key"),
    ],
)
def test_invalid_options_name_the_key(types, keys, key, words):
    """Unknown site / missing api_key / bad url: ConfigError naming file and key."""
    with pytest.raises(ConfigError) as info:
        parse_config(sink_toml(**keys), "t.toml", types)
    assert info.value.key == f"sinks[0] (dd).{key}"
    assert words in str(info.value)
    assert API_KEY not in str(info.value)


def test_ddtags_string_or_list(tmp_path: Path):
    """ddtags accepts "a:b,c:d" or a list of tags."""
    ctx = SinkContext("dd", tmp_path, logging.getLogger("t"))
    for tags in ("env:prod,team:sec", ["env:prod", "team:sec"]):
        sink = DatadogSink("dd", DatadogOptions(api_key=API_KEY, ddtags=tags), ctx)
        assert b'"ddtags":"env:prod,team:sec"' in sink._prefix


def test_repr_hides_api_key(tmp_path: Path):
    """Neither the options nor the sink show the API key."""
    o = DatadogOptions(api_key=API_KEY, url=f"https://proxy.local/api/v2/logs?dd-api-key={API_KEY}")
    sink = DatadogSink("dd", o, SinkContext("dd", tmp_path, logging.getLogger("t")))
    assert "api_key=***" in repr(o)
    assert API_KEY not in repr(o)
    assert API_KEY not in repr(sink)


ROOT = Path(__file__).resolve().parents[2]


def _example_table(type_name: str) -> str:
    text = (ROOT / "config" / "sinks-example.toml").read_text("utf-8")
    return next(t for t in text.split("[[sinks]]") if f'type = "{type_name}"' in t)


def test_every_key_documented_in_example_and_docs():
    """Each option appears in config/sinks-example.toml and in docs/sinks.md; every site too."""
    table = _example_table("datadog")
    docs = (ROOT / "docs" / "sinks.md").read_text("utf-8")
    section = docs.split("## `datadog`")[1].split("\n## ")[0]
    for key in DatadogOptions.__struct_fields__:
        assert f"\n{key} = " in table or f"\n# {key} = " in table, key
        assert f"| `{key}` |" in section, key
    for site in DATADOG_SITES:
        assert site in table and f"`{site}`" in section, site


def test_example_table_is_valid(types, monkeypatch):
    """The example datadog table passes the loader's checks."""
    monkeypatch.setenv("DD_API_KEY", API_KEY)
    cfg = parse_config("[[sinks]]" + _example_table("datadog"), "example", types)
    assert cfg.sinks[0].options.ddtags == ["env:prod", "team:security"]
