"""Which config a command uses without -c, and the refusal to make a second ./var."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from auditshipd.config.locate import LocatedConfig, check_relative_dirs, locate_config
from auditshipd.errors import ConfigError


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUDITSHIPD_CONFIG", raising=False)
    return tmp_path


def test_order_is_c_then_env_then_etc_then_checkout_then_default(elsewhere, monkeypatch):
    """-c wins over $AUDITSHIPD_CONFIG, which wins over /etc, then ./config, then the default."""
    system = elsewhere / "etc.toml"
    assert locate_config(None, system_config=system) == LocatedConfig(None, "default")
    (elsewhere / "config").mkdir()
    (elsewhere / "config" / "auditshipd.toml").write_text("")
    assert locate_config(None, system_config=system).origin == "checkout"
    system.write_text("")
    assert locate_config(None, system_config=system) == LocatedConfig(str(system), "system")
    monkeypatch.setenv("AUDITSHIPD_CONFIG", "/x/env.toml")
    assert locate_config(None, system_config=system).path == "/x/env.toml"
    assert locate_config("/x/c.toml", system_config=system) == LocatedConfig("/x/c.toml", "-c")


def _config(state_dir: str, journal: str) -> SimpleNamespace:
    return SimpleNamespace(journal=SimpleNamespace(state_dir=state_dir, path=journal))


def test_a_relative_dir_that_does_not_exist_is_refused_unless_the_user_chose_the_config(elsewhere):
    """From another directory the embedded default (./var/...) would create a second,
    empty state dir: refused, with what to do; with -c it is the user's call."""
    cfg = _config("var/state", "var/journal/audit.jsonl")
    with pytest.raises(ConfigError, match="second state or journal directory.*-c FILE"):
        check_relative_dirs(LocatedConfig(None, "default"), cfg)
    check_relative_dirs(LocatedConfig("x.toml", "-c"), cfg)
    (elsewhere / "var" / "state").mkdir(parents=True)
    (elsewhere / "var" / "journal").mkdir()
    check_relative_dirs(LocatedConfig(None, "default"), cfg)
    check_relative_dirs(LocatedConfig("/etc/a.toml", "system"), _config("/abs", "/abs/j.jsonl"))
