"""A sink's allowlist may not name a key that the root policy takes out as an id.

Under ``metadata.*`` (or a free-form ``metadata``) the root policy checks each key's
name: ``metadata.user_id`` goes (or is masked, or hashed). An explicit path is not
checked by name, so a sink listing ``metadata.user_id`` would ship the raw value: such
an override is looser than the root and needs ``allow_looser = true``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from auditshipd.errors import ConfigError
from auditshipd.redaction.redactor import DEFAULT_POLICY, Redactor, compile_policy

LINE = (b'{"id":"ev1","action":"user.invited","occurred_at":"2024-01-01T00:00:00Z","version":1,'
        b'"actor":{"id":"om_42","email":"ada@acme.com"},'
        b'"metadata":{"user_id":48213,"membership_id":"om_7731","role":"admin"}}')


def root(raw: dict) -> Redactor:
    return compile_policy(raw) if raw else DEFAULT_POLICY


@pytest.mark.parametrize(("root_raw", "sink_allow", "bad", "key", "under"), [
    ({}, ["metadata.user_id", "metadata.membership_id"], 0, "user_id", "metadata.*"),
    ({}, ["metadata.role", "metadata.membership_id"], 1, "membership_id", "metadata.*"),
    ({"allow": ["actor.*", "metadata.*"]}, ["actor.id"], 0, "id", "actor.*"),
    ({"allow": ["actor", "metadata"]}, ["actor.email", "actor.id", "metadata.user_id"], 1, "id", "actor"),
    ({"allow": ["metadata"]}, ["metadata.profile.user_id"], 0, "user_id", "metadata"),
    ({"allow": ["metadata.*"]}, ["metadata.user_id.name"], 0, "user_id", "metadata.*"),
    ({"allow": ["*"]}, ["api_token"], 0, "api_token", "*"),
    # A key whose name holds an id (the root drops or rewrites it): not by name either.
    ({}, ["metadata.usr_01HZX8K2M3N4P5Q6R7S8T9V0U9"], 0, "usr_01HZX8K2M3N4P5Q6R7S8T9V0U9", "metadata.*"),
])
def test_an_explicit_id_key_under_a_wildcard_or_free_form_is_rejected(root_raw, sink_allow, bad, key, under):
    base = root(root_raw)
    with pytest.raises(ConfigError) as info:
        compile_policy({"allow": sink_allow}, source="test.toml", base=base)
    err = info.value
    assert err.key == f"redaction.allow[{bad}]"
    assert f"path {sink_allow[bad]!r}" in err.reason and f"key {key!r}" in err.reason
    assert f"under {under!r}" in err.reason and "a sink may only narrow it" in err.reason
    assert "allow_looser = true" in err.reason
    # The explicit opt-in permits it (and then ships what the sink asked for).
    sink = compile_policy({"allow": sink_allow, "allow_looser": True}, base=base)
    for tier in (sink, Redactor(sink.policy, c_tier=False)):
        assert tier.redact_line(LINE) == sink.redact_line(LINE)


@pytest.mark.parametrize(("root_raw", "sink_allow"), [
    ({}, ["metadata.role", "actor.email"]),
    ({"allow": ["actor.*"]}, ["actor.email", "actor.*"]),
    ({"allow": ["actor.id", "actor.*"]}, ["actor.id"]),  # the root lets actor.id out by name
    ({"allow": ["metadata"]}, ["metadata.profile.name", "metadata.tags[]"]),
    ({"allow": ["targets[].*"]}, ["targets[].email"]),
])
def test_narrowing_to_keys_the_root_keeps_is_accepted(root_raw, sink_allow):
    compile_policy({"allow": sink_allow}, base=root(root_raw))


def test_the_root_policy_drops_what_the_rejected_override_would_have_shipped():
    """What made the override looser: the root's output has neither id, in every tier."""
    for tier in (DEFAULT_POLICY, Redactor(DEFAULT_POLICY.policy, c_tier=False)):
        out = tier.redact_line(LINE)
        assert b"48213" not in out and b"om_7731" not in out and b'"role":"admin"' in out


def test_check_config_names_the_sink_and_the_path(tmp_path: Path):
    config = tmp_path / "auditshipd.toml"
    config.write_text(
        f'[journal]\npath = "{tmp_path}/journal.jsonl"\nstate_dir = "{tmp_path}/state"\n\n'
        '[redaction]\nallow = ["actor.email", "metadata.*"]\n\n'
        f'[[sinks]]\nname = "siem"\ntype = "file"\npath = "{tmp_path}/out.jsonl"\n\n'
        '[sinks.redaction]\nallow = ["metadata.role", "metadata.user_id"]\n'
    )
    done = subprocess.run([sys.executable, "-m", "auditshipd.cli", "check-config", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "sinks[0] (siem).redaction.allow[1]: path 'metadata.user_id' names key 'user_id'" in done.stderr
    config.write_text(config.read_text() + "allow_looser = true\n")
    done = subprocess.run([sys.executable, "-m", "auditshipd.cli", "check-config", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
