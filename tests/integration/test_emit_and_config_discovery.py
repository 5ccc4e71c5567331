"""`auditshipd emit` and `token create` run from another directory than the daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def cli(*args: str, cwd, env=None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "AUDITSHIPD_CONFIG"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "auditshipd.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=full_env)


def test_emit_prints_the_id_and_writes_every_new_field(ws):
    """emit prints the event id on stdout; the event in the journal has that id, the
    target type, context.location, the given occurred_at in UTC and typed metadata."""
    ws.write_config(f'[[sinks]]\nname = "f"\ntype = "file"\npath = "{ws.out}"\n')
    out = cli("emit", "user.role_changed", "-c", str(ws.config), "--actor-email", "ada@acme.test",
              "--target-email", "eng@acme.test", "--target-type", "team", "--context-ip",
              "203.0.113.7", "--occurred-at", "2026-03-01T12:00:00+01:00",
              "--metadata", "seats:=5", "--metadata", "sso:=true", "--metadata", "to=admin",
              cwd=ws.root)
    assert out.returncode == 0, out.stderr
    (ev,) = [json.loads(x) for x in ws.journal.read_text().splitlines()]
    assert out.stdout == ev["id"] + "\n"
    assert ev["targets"] == [{"type": "team", "email": "eng@acme.test"}]
    assert ev["context"] == {"location": "203.0.113.7"}
    assert ev["occurred_at"] == "2026-03-01T11:00:00.000Z"
    assert ev["metadata"] == {"seats": 5, "sso": True, "to": "admin"}
    assert f"using {ws.config} (given with -c)" in out.stderr and str(ws.state) in out.stderr


def test_bad_action_name_is_refused_and_nothing_written(ws):
    """An action that is not dotted lowercase words exits 2 and writes nothing."""
    ws.write_config("")
    out = cli("emit", "User Invited", "-c", str(ws.config), "--actor-email", "a@b.test",
              cwd=ws.root)
    assert out.returncode == 2 and "e.g. user.invited" in out.stderr
    assert not ws.journal.exists()


def test_commands_from_another_directory_use_auditshipd_config(ws, tmp_path_factory):
    """With $AUDITSHIPD_CONFIG, emit and token create run from elsewhere write the daemon's
    journal and state dir, say so on stderr, and create no ./var where they run."""
    ws.write_config("")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    env = {"AUDITSHIPD_CONFIG": str(ws.config)}
    out = cli("emit", "user.invited", "--actor-email", "a@b.test", cwd=elsewhere, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ws.journal.read_text()
    assert f"using {ws.config} (from $AUDITSHIPD_CONFIG)" in out.stderr
    tok = cli("token", "create", "--name", "me", "--role", "admin", cwd=elsewhere, env=env)
    assert tok.returncode == 0, tok.stderr
    assert str(ws.state) in tok.stderr
    listed = cli("token", "list", cwd=elsewhere, env=env)
    assert listed.returncode == 0 and " me " in listed.stdout, listed.stderr
    assert (ws.state / "portal.sqlite3").is_file()  # tokens live in the portal database
    assert list(elsewhere.iterdir()) == []


def test_no_config_anywhere_refuses_to_make_a_second_var(tmp_path):
    """No -c, no $AUDITSHIPD_CONFIG, no /etc or ./config file: the embedded default's
    relative ./var does not exist here, so emit refuses instead of creating it."""
    if os.path.exists("/etc/auditshipd/auditshipd.toml"):
        pytest.fail("/etc/auditshipd/auditshipd.toml exists on this machine: the test needs a"
                    " host without a system-wide config")
    out = cli("emit", "user.invited", "--actor-email", "a@b.test", cwd=tmp_path)
    assert out.returncode == 2
    assert "second state or journal directory" in out.stderr and "AUDITSHIPD_CONFIG" in out.stderr
    assert list(tmp_path.iterdir()) == []
