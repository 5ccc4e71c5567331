"""[integrity] and `integrity = true` in the config: errors name the file and the key."""

from __future__ import annotations

import pytest

from auditshipd.config import parse_config
from auditshipd.errors import ConfigError
from auditshipd.integrity.keys import generate_key

SINK = """
[[sinks]]
name = "siem"
type = "stdout"
integrity = true
"""


def test_integrity_sink_without_a_key_is_refused():
    """A sink with integrity = true and no [integrity] signing_key: error on that key."""
    with pytest.raises(ConfigError) as err:
        parse_config(SINK, "main.toml")
    assert "main.toml: integrity.signing_key" in str(err.value) and "siem" in str(err.value)


def test_unreadable_key_file_is_named_without_its_content(tmp_path):
    """A key path that does not exist, or a file that is not a PEM key: the error names
    the file and the key, never the bytes."""
    with pytest.raises(ConfigError) as err:
        parse_config(f'[integrity]\nsigning_key = "{tmp_path}/nope"\n' + SINK, "main.toml")
    assert "integrity.signing_key" in str(err.value)
    (tmp_path / "bad").write_text("SECRET-NOT-A-KEY")
    with pytest.raises(ConfigError) as err:
        parse_config(f'[integrity]\nsigning_key = "{tmp_path}/bad"\n' + SINK, "main.toml")
    assert f"{tmp_path}/bad" in str(err.value) and "SECRET" not in str(err.value)


def test_key_from_environment_and_digest_settings(tmp_path, monkeypatch):
    """signing_key = "${ENV}" holding the PEM is accepted; digest settings are checked."""
    key = generate_key(tmp_path / "k")
    monkeypatch.setenv("AUDITSHIPD_TEST_SIGNING_KEY", (tmp_path / "k").read_text())
    config = parse_config('[integrity]\nsigning_key = "${AUDITSHIPD_TEST_SIGNING_KEY}"\n'
                          'digest_interval = 60\ndigest_events = 500\n' + SINK, "main.toml")
    assert config.integrity.key.key_id == key.key_id
    assert config.sinks[0].integrity is True
    assert config.integrity.policy().events == 500
    with pytest.raises(ConfigError) as err:
        parse_config('[integrity]\nsigning_key = "${AUDITSHIPD_TEST_SIGNING_KEY}"\n'
                     'digest_interval = 0\n' + SINK, "main.toml")
    assert "integrity.digest_interval" in str(err.value)


def test_cef_sink_cannot_have_integrity(tmp_path):
    """CEF lines are text, not JSON objects: a CEF sink with integrity = true is refused
    on its format key; OCSF and ECS are accepted."""
    generate_key(tmp_path / "k")
    table = f'[integrity]\nsigning_key = "{tmp_path / "k"}"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(table + SINK + 'format = "cef"\n', "main.toml")
    assert "sinks[0] (siem).format" in str(err.value) and "integrity" in str(err.value)
    for fmt in ("ocsf", "ecs"):
        config = parse_config(table + SINK + f'format = "{fmt}"\n', "main.toml")
        assert config.sinks[0].integrity and config.sinks[0].format == fmt
