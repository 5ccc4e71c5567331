"""Configuration errors name their file and, where the text shows the key, its line:
plugin directories, stream files, a reload that would move the journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditshipd.errors import ConfigError
from auditshipd.service.loading import load_runtime, require_same_state_dir


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


def test_a_reload_moving_the_state_dir_names_its_line(tmp_path: Path) -> None:
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\nstate_dir = "{tmp_path}/s"\n')
    running, _pm, _types = load_runtime(config)
    config.write_text(f'shutdown_timeout = 3.0\n\n[journal]\nstate_dir = "{tmp_path}/t"\n')
    new, _pm, _types = load_runtime(config)
    with pytest.raises(ConfigError) as caught:
        require_same_state_dir(new, running)
    assert str(caught.value) == (
        f"{config}:4: journal.state_dir: moving journal.state_dir needs a restart (the running"
        " daemon keeps its cursors, dead letters and lock where they are until then)")
    # the rest of [journal] changes on a reload
    config.write_text(f'[journal]\nstate_dir = "{tmp_path}/s"\npoll_interval = 0.5\n'
                      'path = "other/a.jsonl"\npaths = ["other/a.jsonl*"]\n')
    moved, _pm, _types = load_runtime(config)
    require_same_state_dir(moved, running)


SHIPPED = Path(__file__).parents[2] / "config" / "auditshipd.toml"


def _all_errors(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_runtime(config)
    return [str(e) for e in getattr(caught.value, "errors", [caught.value])]


@pytest.mark.parametrize(("old", "new", "line", "error"), [
    ('listen = "127.0.0.1:9750"', 'listen = "127.0.0.1:97500"', 35,
     "metrics.listen: port must be between 0 and 65535"),
    ('listen = "127.0.0.1:8750"', 'listen = "localhost"', 31,
     'portal.listen: must be "host:port" (IPv6 as "[::1]:port")'),
])
def test_a_key_of_the_shipped_config_is_found_in_its_own_table(
        tmp_path: Path, old: str, new: str, line: int, error: str) -> None:
    """The shipped config has `listen` in [portal] and in [metrics]: each error names
    the line of the table's own key; [metrics] and [portal] say the same of an address."""
    config = tmp_path / "auditshipd.toml"
    config.write_text(SHIPPED.read_text().replace(old, new).replace(
        'state_dir = "var/state"', f'state_dir = "{tmp_path}/state"'))
    assert _all_errors(config) == [f"{config}:{line}: {error}"]


def test_a_key_of_a_sink_sub_table_is_found_in_that_table(tmp_path: Path) -> None:
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\nstate_dir = "{tmp_path}/s"\n\n'
                      '[[sinks]]\nname = "out"\ntype = "file"\npath = "o.jsonl"\n'
                      '[sinks.batch]\nmax_bytes = 4096\n'
                      '[sinks.dead_letter]\nmax_bytes = -1\n')
    assert _all_errors(config) == [
        f"{config}:11: sinks[0] (out).dead_letter.max_bytes: value out of range"]


def test_a_missing_sink_key_names_the_line_of_its_sink(tmp_path: Path) -> None:
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\nstate_dir = "{tmp_path}/s"\n\n'
                      '[[sinks]]\nname = "out"\ntype = "file"\npath = "o.jsonl"\n\n'
                      '[[sinks]]\nname = "siem"\ntype = "http"\n[sinks.batch]\nmax_events = 5\n')
    assert _all_errors(config) == [f"{config}:9: sinks[1] (siem).url: missing required key"]


def test_a_journal_path_naming_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "journal").mkdir()
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\npath = "{tmp_path}/journal"\nstate_dir = "{tmp_path}/s"\n')
    assert _all_errors(config) == [
        f"{config}:2: journal.path: {tmp_path}/journal is a directory: name the journal file"
        f" (for example {tmp_path}/journal/audit.jsonl)"]


@pytest.mark.parametrize("value", [
    "https://siem.example.com/ingest/${SIEM-PATH}", "${CFGLOC_UNSET_URL}"])
def test_a_reference_error_is_the_only_error_of_its_key(
        tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The value left in place of a malformed or unset reference is not checked: no
    second error about text the file does not hold."""
    monkeypatch.delenv("CFGLOC_UNSET_URL", raising=False)
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\nstate_dir = "{tmp_path}/s"\n'
                      f'[[sinks]]\nname = "siem"\ntype = "http"\nurl = "{value}"\n'
                      '[sinks.batch]\nmax_events = "${CFGLOC-N}"\n')
    errors = _all_errors(config)
    assert [e.split(": ", 3)[:2] for e in errors] == [
        [f"{config}:6", "sinks[0] (siem).url"], [f"{config}:8", "sinks[0] (siem).batch.max_events"]]
    assert "must be an http" not in "\n".join(errors) and "wrong type" not in "\n".join(errors)
