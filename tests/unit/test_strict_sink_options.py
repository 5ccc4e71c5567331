"""A misspelled key in any sink's options is a check-config error naming the key, even
when a plugin's options Struct (or a nested one) forgot forbid_unknown_fields."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from auditshipd.errors import ConfigError
from auditshipd.service.loading import load_runtime

LAX_PLUGIN = '''
import msgspec
from auditshipd import hookimpl
from auditshipd.plugin import SinkType


class Tls(msgspec.Struct):
    ca_file: str = ""


class Route(msgspec.Struct, kw_only=True):
    topic: str


class LaxOptions(msgspec.Struct, kw_only=True):  # no forbid_unknown_fields, on purpose
    path: str
    level: int = 1
    tls: Tls | None = None
    routes: list[Route] = []
    by_org: dict[str, Route] = {}


class LaxSink:
    def __init__(self, name, options, context):
        self.options = options
    async def start(self): ...
    async def send(self, batch): ...
    async def close(self): ...


@hookimpl
def register_sink_types():
    return [SinkType("lax", LaxOptions, LaxSink, "a plugin with a lax options Struct")]
'''


def _config(tmp_path: Path, sink: str) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "lax_sink.py").write_text(LAX_PLUGIN)
    path = tmp_path / "auditshipd.toml"
    path.write_text(textwrap.dedent(f"""
        plugin_dirs = ["{plugins}"]
        [journal]
        path = "{tmp_path}/audit.jsonl"
        state_dir = "{tmp_path}/state"
        [[sinks]]
        name = "s"
    """) + textwrap.dedent(sink))
    return path


@pytest.mark.parametrize(("sink", "key"), [
    ('type = "lax"\npath = "x"\nlevle = 2\n', "levle"),
    ('type = "lax"\npath = "x"\n[sinks.tls]\nca_fle = "/ca.pem"\n', "tls.ca_fle"),
    ('type = "lax"\npath = "x"\n[[sinks.routes]]\ntopic = "a"\n[[sinks.routes]]\ntopc = "b"\n',
     "routes[1].topc"),
    ('type = "lax"\npath = "x"\n[sinks.by_org.acme]\ntopik = "a"\n', "by_org.acme.topik"),
    ('type = "file"\npath = "/tmp/x"\nfsnyc = true\n', "fsnyc"),
])
def test_typo_in_sink_options_is_an_error_naming_the_key(tmp_path, sink, key):
    """A misspelled key, top-level or nested, in a drop-in or a built-in sink: rejected."""
    with pytest.raises(ConfigError) as info:
        load_runtime(_config(tmp_path, sink))
    assert info.value.key == f"sinks[0] (s).{key}"
    assert info.value.reason.startswith("unknown key")


def test_correct_lax_options_still_load(tmp_path):
    """The check rejects only unknown keys: a correct table of a lax plugin loads."""
    config, _pm, _types = load_runtime(_config(tmp_path, """
        type = "lax"
        path = "x"
        level = 3
        [sinks.tls]
        ca_file = "/ca.pem"
        [[sinks.routes]]
        topic = "a"
        [sinks.by_org.acme]
        topic = "b"
    """))
    options = config.sink("s").options
    assert (options.level, options.tls.ca_file, options.routes[0].topic) == (3, "/ca.pem", "a")
    assert options.by_org["acme"].topic == "b"


def test_check_config_reports_the_misspelled_key(tmp_path):
    """`auditshipd check-config` exits 2 and names file and key of the typo."""
    path = _config(tmp_path, 'type = "lax"\npath = "x"\nlevle = 2\n')
    r = subprocess.run([sys.executable, "-m", "auditshipd.cli", "check-config", "-c", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{path}:10: sinks[0] (s).levle: unknown key (did you mean 'level'?)" in r.stderr


@pytest.mark.parametrize(("extra", "concurrency", "max_events"), [
    ("", 2, 5000),
    ("concurrency = 1\n[sinks.batch]\nmax_events = 100\n", 1, 100),
])
def test_a_sink_type_gives_its_defaults_where_the_table_is_silent(tmp_path, extra, concurrency,
                                                                  max_events):
    """The portal sink's own defaults (two batches in flight, 5,000 events a batch) apply
    where its table leaves the keys out, and only there; other types keep the core's."""
    config, _pm, _types = load_runtime(_config(tmp_path, f'type = "portal"\n{extra}'))
    assert (config.sinks[0].concurrency, config.sinks[0].batch.max_events) == (
        concurrency, max_events)
    config, _pm, _types = load_runtime(_config(tmp_path, 'type = "lax"\npath = "x"\n'))
    assert (config.sinks[0].concurrency, config.sinks[0].batch.max_events) == (1, 1000)


def test_a_drop_in_sink_type_keeps_every_field_it_gave(tmp_path):
    """The plugin manager records which plugin gave a sink type and keeps the rest as
    given: its connection check, batch defaults and concurrency."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "checked_sink.py").write_text(LAX_PLUGIN.replace(
        'return [SinkType("lax", LaxOptions, LaxSink, "a plugin with a lax options Struct")]',
        'return [SinkType("lax", LaxOptions, LaxSink, "checked", check_connection=check,'
        ' batch_defaults={"max_events": 7}, concurrency=3)]',
    ) + "\n\nasync def check(options):\n    return 'reached ' + options.path\n")
    from auditshipd.plugins.manager import build_plugin_manager, sink_types

    lax = sink_types(build_plugin_manager([str(plugins)]))["lax"]
    assert "checked_sink" in lax.plugin
    assert lax.batch_defaults == {"max_events": 7} and lax.concurrency == 3
    assert lax.check_connection is not None
    assert asyncio.run(lax.check_connection(LaxOptionsLike("x"))) == "reached x"


class LaxOptionsLike:
    def __init__(self, path: str) -> None:
        self.path = path
