"""Configuration errors name their file and, where the text shows the key, its line:
plugin directories, stream files, a reload that would move the journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditshipd.errors import ConfigError
from auditshipd.service.loading import load_runtime, require_same_journal


def test_a_missing_plugin_directory_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "auditshipd.toml"
    config.write_text('shutdown_timeout = 3.0\nplugin_dirs = ["/nonexistent/plugins-typo"]\n')
    with pytest.raises(ConfigError) as caught:
        load_runtime(config)
    assert str(caught.value) == (f"{config}:2: plugin_dirs: plugin directory"
                                 " '/nonexistent/plugins-typo' does not exist")


def test_stream_file_errors_name_their_line_and_every_sink(tmp_path: Path) -> None:
    streams = tmp_path / "streams"
    streams.mkdir()
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'streams_dir = "{streams}"\n[journal]\nstate_dir = "{tmp_path}/s"\n')
    (streams / "acme.toml").write_text(
        '[[sinks]]\nname = "siem"\ntype = "file"\npath = "x.jsonl"\n\n'
        '[sinks.batch]\nmax_evnts = 5\n\n'
        '[[sinks]]\nname = "other"\ntype = "file"\npath = "y.jsonl"\nconcurrency = 0\n')
    loaded, _pm, _types = load_runtime(config)
    error = loaded.stream_errors["acme"]
    lines = [str(e) for e in getattr(error, "errors", [error])]
    source = streams / "acme.toml"
    assert lines == [
        f"{source}:7: sinks[0] (acme.siem).batch.max_evnts: unknown key (did you mean"
        " 'max_events'?)",
        f"{source}:13: sinks[1] (acme.other).concurrency: value out of range",
    ]


def test_a_duplicate_stream_sink_name_and_integrity_without_a_key_name_their_line(
        tmp_path: Path) -> None:
    streams = tmp_path / "streams"
    streams.mkdir()
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'streams_dir = "{streams}"\n[journal]\nstate_dir = "{tmp_path}/s"\n'
                      '[[sinks]]\nname = "globex.siem"\ntype = "file"\npath = "g.jsonl"\n')
    (streams / "acme.toml").write_text(
        '[[sinks]]\nname = "siem"\ntype = "file"\npath = "x.jsonl"\n\n'
        '[[sinks]]\ntype = "file"\npath = "y.jsonl"\nname = "siem"\n\n'
        '[[sinks]]\nname = "signed"\ntype = "file"\npath = "z.jsonl"\nintegrity = true\n')
    (streams / "globex.toml").write_text('[[sinks]]\nname = "siem"\ntype = "file"\n'
                                         'path = "x.jsonl"\n')
    loaded, _pm, _types = load_runtime(config)
    acme = loaded.stream_errors["acme"]
    source = streams / "acme.toml"
    assert [str(e) for e in getattr(acme, "errors", [acme])] == [
        f"{source}:9: sinks[1] (acme.siem).name: duplicate sink name 'acme.siem'",
        f"{source}:15: sinks[2] (acme.signed).integrity: integrity = true needs [integrity]"
        f" signing_key in {config}",
    ]
    globex = loaded.stream_errors["globex"]
    assert str(globex) == (f"{streams / 'globex.toml'}:2: sinks[0] (globex.siem).name:"
                           " duplicate sink name 'globex.siem'")


def test_a_reload_moving_the_journal_names_the_line_of_journal(tmp_path: Path) -> None:
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\nstate_dir = "{tmp_path}/s"\n')
    running, _pm, _types = load_runtime(config)
    config.write_text(f'shutdown_timeout = 3.0\n\n[journal]\nstate_dir = "{tmp_path}/t"\n')
    new, _pm, _types = load_runtime(config)
    with pytest.raises(ConfigError) as caught:
        require_same_journal(new, running)
    assert str(caught.value) == (f"{config}:3: journal: changing [journal] needs a restart"
                                 " (the running journal settings stay until then)")
