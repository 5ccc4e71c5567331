"""The redactor is required wherever a line is shipped; building one fails closed."""

from __future__ import annotations

import pytest

from auditshipd.config import parse_config
from auditshipd.delivery.lines import LineProcessor
from auditshipd.errors import ConfigError
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.redaction import redactor as redact
from auditshipd.service.loading import build_redactors

TYPES = sink_types(build_plugin_manager())
CONFIG = """
[[sinks]]
name = "a"
type = "stdout"

[[sinks]]
name = "b"
type = "stdout"
[sinks.redaction]
action = "drop"
allow = ["actor.email", "action", "occurred_at"]
"""


def test_line_processor_refuses_no_redactor():
    """A LineProcessor cannot be built without a redactor (None is not 'no redaction')."""
    with pytest.raises(TypeError, match="never shipped unredacted"):
        LineProcessor(None, max_line_bytes=1024)  # type: ignore[arg-type]


def test_every_sink_gets_a_redactor():
    """build_redactors gives each sink a real redactor, the root one or its override."""
    config = parse_config(CONFIG, "cfg.toml", TYPES)
    out = build_redactors(config)
    assert set(out) == {"a", "b"}
    assert all(isinstance(r, redact.Redactor) for r in out.values())


def test_policy_compile_crash_is_a_config_error(monkeypatch):
    """An unexpected failure while compiling a policy is a ConfigError naming the sink,
    not a sink that runs without redaction."""
    config = parse_config(CONFIG, "cfg.toml", TYPES)
    real = redact.compile_policy

    def broken(raw, *, source, base=None, may_loosen=True):
        if base is not None and raw:
            raise RuntimeError("boom")
        return real(raw, source=source, base=base, may_loosen=may_loosen)

    monkeypatch.setattr(redact, "compile_policy", broken)
    with pytest.raises(ConfigError) as info:
        build_redactors(config)
    assert info.value.key == "sinks[1] (b)"
    assert "could not be compiled: RuntimeError: boom" in str(info.value)


def test_redaction_unimportable_is_a_config_error(monkeypatch):
    """Redaction that cannot be imported stops start-up with a clear error."""
    import sys

    config = parse_config(CONFIG, "cfg.toml", TYPES)
    monkeypatch.setitem(sys.modules, "auditshipd.redaction.redactor", None)
    with pytest.raises(ConfigError, match="redaction is unavailable"):
        build_redactors(config)
