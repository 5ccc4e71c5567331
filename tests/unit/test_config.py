"""Config validation: each mistake gets a message naming file, key and problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from auditshipd.config import default_config_text, load_config, parse_config
from auditshipd.errors import ConfigError
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.service.loading import load_runtime

REPO = Path(__file__).resolve().parents[2]
TYPES = sink_types(build_plugin_manager())

SINK = """
[[sinks]]
name = "out"
type = "file"
path = "/tmp/x.jsonl"
"""


def err(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.toml", TYPES)
    return info.value


def test_embedded_default_is_the_shipped_config_file():
    """config/auditshipd.toml is the embedded default, byte for byte."""
    assert (REPO / "config" / "auditshipd.toml").read_text() == default_config_text()
    cfg = load_config(None, TYPES)
    assert [s.type for s in cfg.sinks][:1] == ["file"]


def test_unknown_top_level_key():
    """A misspelled top-level key is an error naming it, its line and the key meant."""
    e = err("plugin_dir = []\n" + SINK)
    assert str(e) == "cfg.toml:1: plugin_dir: unknown key (did you mean 'plugin_dirs'?)"


def test_unknown_nested_key():
    """A misspelled key in [journal] names journal.<key>."""
    e = err("[journal]\nmax_line_byte = 10\n" + SINK)
    assert (e.file, e.key, e.reason) == ("cfg.toml", "journal.max_line_byte",
                                      "unknown key (did you mean 'max_line_bytes'?)")


def test_wrong_type():
    """A string where a number is expected says so, with the key."""
    e = err('[journal]\nmax_line_bytes = "big"\n' + SINK)
    assert e.key == "journal.max_line_bytes" and "expected int, got str" in e.reason


def test_unknown_sink_type_lists_known():
    """An unknown sink type names the sink and lists the known types."""
    e = err('[[sinks]]\nname = "x"\ntype = "carrier_pigeon"\n')
    assert e.key == "sinks[0] (x).type"
    assert "unknown sink type 'carrier_pigeon'" in e.reason and "http" in e.reason


def test_duplicate_sink_name():
    """Two sinks with the same name are rejected at the second one."""
    e = err(SINK + SINK)
    assert e.key == "sinks[1] (out).name" and "duplicate sink name 'out'" in e.reason


def test_unknown_sink_option():
    """A type-specific key the sink type does not know is an error."""
    e = err(SINK + 'colour = "blue"\n')
    assert e.key == "sinks[0] (out).colour" and e.reason == "unknown key"


def test_missing_required_sink_option():
    """A sink type's required key (http url) missing is named."""
    e = err('[[sinks]]\nname = "w"\ntype = "http"\n')
    assert e.key == "sinks[0] (w).url" and e.reason == "missing required key"


def test_sink_specific_validation():
    """The sink type's own validation (a bad URL) reports its key."""
    e = err('[[sinks]]\nname = "w"\ntype = "http"\nurl = "ftp://x"\n')
    assert e.key == "sinks[0] (w).url" and "http://" in e.reason


def test_batch_key_range_and_type():
    """Nested sink tables ([sinks.batch]) are checked too."""
    e = err(SINK + "[sinks.batch]\nmax_events = 0\n")
    assert e.key == "sinks[0] (out).batch.max_events"
    e = err(SINK + "[sinks.retry]\nbackof = 1\n")
    assert e.key == "sinks[0] (out).retry.backof" and e.reason.startswith("unknown key")


def test_invalid_toml_has_line():
    """A TOML syntax error reports the line."""
    e = err('[journal\npaths = ["x"]\n')
    assert e.file == "cfg.toml" and e.line == 1 and str(e).startswith("cfg.toml:1: invalid TOML")


def test_env_interpolation_and_missing_variable(monkeypatch):
    """${VAR} is replaced; a missing variable names the key, never a value."""
    monkeypatch.setenv("AUDIT_OUT", "/tmp/from-env.jsonl")
    cfg = parse_config(SINK.replace('"/tmp/x.jsonl"', '"${AUDIT_OUT}"'), "c", TYPES)
    assert cfg.sinks[0].options.path == "/tmp/from-env.jsonl"
    cfg = parse_config(SINK.replace('"/tmp/x.jsonl"', '"${NOPE_X:-/tmp/d.jsonl}"'), "c", TYPES)
    assert cfg.sinks[0].options.path == "/tmp/d.jsonl"
    monkeypatch.delenv("NOPE_Y", raising=False)
    e = err(SINK.replace('"/tmp/x.jsonl"', '"${NOPE_Y}"'))
    assert e.key == "sinks[0] (out).path" and "NOPE_Y is not set" in e.reason


def test_secret_value_never_in_error(monkeypatch):
    """A wrong-typed secret is reported by key, and its value is not echoed."""
    e = err('[[sinks]]\nname = "w"\ntype = "http"\nurl = "https://h"\nbearer_token = 12345678\n')
    assert "12345678" not in str(e) and e.key == "sinks[0] (w).bearer_token"


def test_start_at_values():
    """start_at accepts beginning, end or an RFC 3339 time, nothing else."""
    parse_config(SINK + 'start_at = "2026-01-01T00:00:00Z"\n', "c", TYPES)
    e = err(SINK + 'start_at = "yesterday"\n')
    assert e.key == "sinks[0] (out).start_at"


def test_missing_file():
    """A config path that does not exist says so."""
    with pytest.raises(ConfigError, match="nope.toml: file not found"):
        load_config("/nonexistent/nope.toml")


def test_missing_plugin_dir(tmp_path):
    """A plugin dir that does not exist is a config error."""
    p = tmp_path / "c.toml"
    p.write_text(f'plugin_dirs = ["{tmp_path}/nope"]\n' + SINK)
    with pytest.raises(ConfigError, match="plugin directory"):
        load_runtime(p)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus = 1\n", "bogus: unknown key"),
        ('[[sinks]]\nname = "a"\ntype = "nope"\n', "unknown sink type 'nope'"),
        (SINK + SINK, "duplicate sink name"),
        ('[journal]\nmax_line_bytes = "x"\n', "journal.max_line_bytes: wrong type"),
    ],
)
def test_check_config_cli_exit_code_and_message(tmp_path, text, needle):
    """`auditshipd check-config` exits non-zero and prints file: key: problem."""
    p = tmp_path / "bad.toml"
    p.write_text(text)
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "check-config", "-c", str(p)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert str(p) in out.stderr and needle in out.stderr


def test_check_config_cli_ok():
    """The shipped default and the example configs pass check-config."""
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "check-config", "-c",
                          str(REPO / "config" / "auditshipd.toml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


@pytest.mark.parametrize(("table", "key"), [
    ("[journal]\nrotate_wait = -1\n", "journal.rotate_wait"),
    ("[journal]\npoll_interval = 0\n", "journal.poll_interval"),
    ("[portal]\nlisten = \"nowhere\"\n", "portal.listen"),
    ("[portal]\ncolour = 1\n", "portal.colour"),
    ("[metrics]\nlisten = 42\n", "metrics.listen"),
])
def test_portal_and_metrics_tables_are_validated_with_the_config(tmp_path, table, key):
    """Bad [journal] values, [portal] / [metrics] tables fail check-config (and so a reload), naming the key."""
    p = tmp_path / "c.toml"
    p.write_text(SINK + table)
    with pytest.raises(ConfigError) as info:
        load_runtime(p)
    assert info.value.key == key


def test_journal_paths_follow_the_path_given_and_must_match_it(tmp_path):
    """Only journal.path given: the reader follows that file and its rotated segments.
    Globs that miss journal.path, or a state_dir that is a file, are errors naming the key."""
    config = parse_config(f'[journal]\npath = "{tmp_path}/app/audit.jsonl"\n', "x.toml")
    assert config.journal.paths == [f"{tmp_path}/app/audit.jsonl*"]
    with pytest.raises(ConfigError, match=r"x.toml:3: journal.paths: no glob matches journal.path"):
        parse_config(f'[journal]\npath = "{tmp_path}/app/audit.jsonl"\npaths = ["/other/*"]\n', "x.toml")
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"journal.state_dir: .* exists and is not a directory"):
        parse_config(f'[journal]\nstate_dir = "{tmp_path / "state"}"\n', "x.toml")


def test_a_portal_database_url_with_a_bad_port_names_the_key(tmp_path):
    path = tmp_path / "auditshipd.toml"
    path.write_text('[portal]\ndatabase = "postgresql://postgres@127.0.0.1:notaport/x"\n')
    with pytest.raises(ConfigError, match=r"portal.database: not a valid PostgreSQL URL"):
        load_runtime(path)
