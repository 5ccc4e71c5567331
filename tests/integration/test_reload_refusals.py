"""A reload whose new config cannot be loaded is refused and the daemon goes on with the
running config: a sink validator that fails with an unexpected exception, a drop-in
plugin pluggy refuses, a broken stream file (which affects only its organization).
``check-config`` lists the same problems (exit 2, no traceback)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.sinks import file_sink

from auditshipd.testing import read_jsonl_ids, write_events

pytestmark = pytest.mark.integration

# A drop-in sink type whose validator fails as urlsplit does on an unclosed IPv6 literal.
FRAGILE_PLUGIN = '''
from urllib.parse import urlsplit

from auditshipd.plugin import SinkOptions, SinkType, hookimpl


class FragileOptions(SinkOptions):
    out: str
    url: str = "tcp://127.0.0.1:1"


def check(options):
    urlsplit(options.url).port


class FragileSink:
    def __init__(self, name, options, context):
        self.options = options

    async def start(self):
        pass

    async def send(self, batch):
        with open(self.options.out, "ab") as f:
            f.write(batch.jsonl())

    async def close(self):
        pass


@hookimpl
def register_sink_types():
    return [SinkType("fragile", FragileOptions, FragileSink, "writes JSON lines", validate=check)]
'''

MISSPELT_HOOK = '''
import pluggy

hookimpl = pluggy.HookimplMarker("auditshipd")


@hookimpl
def register_sink_type():
    return []
'''


def _config(root: Path, tables: str, top: str = "") -> str:
    journal = root / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    return f"""
shutdown_timeout = 3.0
config_watch = false
{top}
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{root / 'state'}"
poll_interval = 0.2

[metrics]
enabled = false
{tables}
"""


def _check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditshipd.cli", "check-config", "-c",
                           str(config)], capture_output=True, text=True, timeout=60)


def test_a_validator_failing_unexpectedly_is_a_config_error_and_the_reload_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "fragile_sink.py").write_text(FRAGILE_PLUGIN)
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    good = _config(tmp_path, file_sink(out, "out", batch="timeout = 0.05"),
                   top=f'plugin_dirs = ["{plugins}"]')
    bad = good + '\n[[sinks]]\nname = "bus"\ntype = "fragile"\nout = "x"\nurl = "mqtt://[fd00::10:1883"\n'
    config.write_text(bad)
    result = _check_config(config)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "sinks[1] (bus): the fragile sink's settings could not be checked: ValueError" \
        in result.stderr
    config.write_text(good)

    async def scenario() -> None:
        async with running_daemon(config) as d:
            config.write_text(bad)
            assert not await d.reload()
            assert set(d.drivers) == {"out"}
            ids = write_events(tmp_path / "journal" / "audit.jsonl", "a", 5)
            await until(lambda: set(ids) <= set(read_jsonl_ids(out)), "the running sink goes on")

    asyncio.run(scenario())
    assert "config reload rejected, the running config stays" in caplog.text
    assert "sinks[1] (bus)" in caplog.text


def test_a_plugin_with_a_misspelt_hook_is_refused_with_its_file_and_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    config.write_text(_config(tmp_path, file_sink(out, "out"), top=f'plugin_dirs = ["{plugins}"]'))

    async def scenario() -> None:
        async with running_daemon(config) as d:
            (plugins / "typo.py").write_text(MISSPELT_HOOK)
            assert not await d.reload()
            assert set(d.drivers) == {"out"}

    asyncio.run(scenario())
    assert f"{config}:4: plugin_dirs: plugin {plugins / 'typo.py'} was refused: unknown hook" \
        in caplog.text
    result = _check_config(config)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "typo.py was refused" in result.stderr


def test_a_broken_stream_file_affects_only_its_organization(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugins, streams = tmp_path / "plugins", tmp_path / "streams"
    plugins.mkdir()
    streams.mkdir()
    (plugins / "fragile_sink.py").write_text(FRAGILE_PLUGIN)
    out, acme = tmp_path / "out.jsonl", tmp_path / "acme.jsonl"
    config = tmp_path / "auditshipd.toml"
    config.write_text(_config(tmp_path, file_sink(out, "out"),
                              top=f'plugin_dirs = ["{plugins}"]\nstreams_dir = "{streams}"'))
    (streams / "acme.toml").write_text(file_sink(acme, "siem"))

    async def scenario() -> None:
        async with running_daemon(config) as d:
            assert set(d.drivers) == {"out", "acme.siem"}
            (streams / "globex.toml").write_text(
                '[[sinks]]\nname = "bus"\ntype = "fragile"\nout = "x"\n'
                'url = "nats://[fd00::10:4222"\n')
            assert await d.reload()
            assert set(d.drivers) == {"out", "acme.siem"}
            assert "globex" in d.config.stream_errors

    asyncio.run(scenario())
    assert "stream file of organization 'globex' rejected" in caplog.text
    assert "globex.toml:1: sinks[0] (globex.bus): the fragile sink's settings could not be" \
        " checked: ValueError" in caplog.text


def test_a_stream_file_made_looser_than_the_redaction_keeps_its_running_sink(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """acme's stream file is edited to let its sink see an id: the reload goes through
    for everything else, acme's running sink keeps its (stricter) policy, and the error
    names the stream file's line."""
    streams = tmp_path / "streams"
    streams.mkdir()
    out, acme = tmp_path / "out.jsonl", tmp_path / "acme.jsonl"
    config = tmp_path / "auditshipd.toml"
    config.write_text(_config(tmp_path, file_sink(out, "out"), top=f'streams_dir = "{streams}"'))
    (streams / "acme.toml").write_text(file_sink(acme, "siem"))

    async def scenario() -> None:
        async with running_daemon(config) as d:
            running = d.drivers["acme.siem"]
            (streams / "acme.toml").write_text(
                file_sink(acme, "siem") + '[sinks.redaction]\nallow = ["metadata.user_id"]\n')
            config.write_text(_config(tmp_path, file_sink(out, "out") + file_sink(
                tmp_path / "new.jsonl", "new"), top=f'streams_dir = "{streams}"'))
            assert await d.reload()
            assert set(d.drivers) == {"out", "new", "acme.siem"}
            assert d.drivers["acme.siem"] is running and "acme" in d.config.stream_errors

    asyncio.run(scenario())
    assert "stream file of organization 'acme' rejected" in caplog.text
    assert f"{streams / 'acme.toml'}:" in caplog.text and "names key 'user_id'" in caplog.text


def test_any_failure_while_loading_a_reload_keeps_the_running_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from auditshipd.service import daemon as daemon_module

    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    config.write_text(_config(tmp_path, file_sink(out, "out", batch="timeout = 0.05")))

    def failing_load(path: object) -> None:
        raise UnicodeError("label too long")

    async def scenario() -> None:
        async with running_daemon(config) as d:
            monkeypatch.setattr(daemon_module, "load_runtime", failing_load)
            assert not await d.reload()
            ids = write_events(tmp_path / "journal" / "audit.jsonl", "a", 5)
            await until(lambda: set(ids) <= set(read_jsonl_ids(out)), "the running sink goes on")

    asyncio.run(scenario())
    assert f"config reload rejected, the running config stays: {config}: UnicodeError: label" \
        in caplog.text


def _named_sink_plugin(sink_type: str) -> str:
    return f'''
from auditshipd.plugin import EmptyOptions, SinkType, hookimpl


class Sink:
    def __init__(self, name, options, context):
        pass

    async def start(self):
        pass

    async def send(self, batch):
        pass

    async def close(self):
        pass


@hookimpl
def register_sink_types():
    return [SinkType("{sink_type}", EmptyOptions, Sink, "accepts everything")]
'''


def test_two_plugin_files_of_the_same_name_are_refused_naming_both(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each drop-in file is the module of its name: a second ver.py in another of the
    plugin_dirs used to be skipped without a word (its sink type unknown). A reload
    adding that directory is refused, and check-config says the same, naming both."""
    first, second = tmp_path / "p1", tmp_path / "p2"
    for directory, sink_type in ((first, "alpha"), (second, "beta")):
        directory.mkdir()
        (directory / "ver.py").write_text(_named_sink_plugin(sink_type))
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    good = _config(tmp_path, file_sink(out, "out"), top=f'plugin_dirs = ["{first}"]')
    bad = _config(tmp_path, file_sink(out, "out") + '\n[[sinks]]\nname = "b"\ntype = "beta"\n',
                  top=f'plugin_dirs = ["{first}", "{second}"]')
    config.write_text(good)

    async def scenario() -> None:
        async with running_daemon(config) as d:
            config.write_text(bad)
            assert not await d.reload()
            assert set(d.drivers) == {"out"}

    asyncio.run(scenario())
    both = f"plugin files {first / 'ver.py'} and {second / 'ver.py'} have the same name"
    assert both in caplog.text
    result = _check_config(config)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert both in result.stderr
