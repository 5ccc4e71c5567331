"""``auditshipd portal`` / ``token`` commands and the ``[portal]`` config table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditshipd.config import parse_config
from auditshipd.errors import ConfigError
from auditshipd.portal.backend import auth_store, event_store
from auditshipd.portal.cli import add_parser
from auditshipd.portal.config import portal_config
from auditshipd.portal.tokens import Principal, TokenRecord, token_hash
from auditshipd.testing import free_port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditshipd")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _config_file(tmp_path: Path, portal: str = "") -> Path:
    path = tmp_path / "auditshipd.toml"
    path.write_text(f'[journal]\npath = "{tmp_path}/j/audit.jsonl"\nstate_dir = "{tmp_path}/state"\n'
                    f"[portal]\n{portal}\n")
    return path


def _stored_tokens(database: str) -> list[TokenRecord]:
    async def read() -> list[TokenRecord]:
        store = event_store(database)
        await store.open()
        try:
            return await auth_store(store).list()
        finally:
            await store.close()

    return asyncio.run(read())


def _authenticate(database: str, token: str) -> Principal | None:
    async def check() -> Principal | None:
        store = event_store(database)
        await store.open()
        try:
            return await auth_store(store).authenticate(token)
        finally:
            await store.close()

    return asyncio.run(check())


def test_token_create_list_revoke(
    tmp_path: Path, portal_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On each backend: create prints a token once and the store keeps only its hash (no
    token file); list hides it; revoke disables it; a second active token of a name and
    an unknown role are refused."""
    cfg = str(_config_file(tmp_path, f'database = "{portal_database}"'))
    run = lambda *argv: (lambda a: a.func(a))(_parser().parse_args(list(argv)))  # noqa: E731
    assert run("token", "create", "-c", cfg, "--name", "ops", "--role", "admin") == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("asd_") and len(token) > 40
    assert not (tmp_path / "state" / "portal-tokens.json").exists()
    records = _stored_tokens(portal_database)
    assert [r.name for r in records] == ["ops"]
    assert token not in repr(records) and records[0].hash == token_hash(token)
    if not portal_database.startswith("postgresql://"):
        assert token.encode() not in Path(portal_database).read_bytes()
    assert run("token", "create", "-c", cfg, "--name", "ops", "--role", "viewer") == 1
    assert "active token named 'ops'" in capsys.readouterr().err
    assert run("token", "create", "-c", cfg, "--name", "acme", "--role", "viewer", "--organization", "acme") == 0
    capsys.readouterr()
    assert run("token", "list", "-c", cfg) == 0
    listing = capsys.readouterr().out
    assert "ops" in listing and "acme" in listing and token not in listing
    assert _authenticate(portal_database, token).name == "ops"
    assert run("token", "revoke", "-c", cfg, "ops") == 0
    assert _authenticate(portal_database, token) is None
    assert run("token", "revoke", "-c", cfg, "ops") == 1
    assert run("token", "list", "-c", cfg) == 0
    assert "revoked" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _parser().parse_args(["token", "create", "--name", "x", "--role", "root"])
    # Each creation and revocation is an audit event (never the token), an organization's
    # token in that organization's log; refused commands record nothing.
    records = [json.loads(line) for line in (tmp_path / "j" / "audit.jsonl").read_text().splitlines()]
    assert [(r["action"], r["targets"], r.get("organization"), r["metadata"]) for r in records] == [
        ("portal_token.created", [{"type": "portal_token", "name": "ops"}], None,
         {"role": "admin", "organization": "*"}),
        ("portal_token.created", [{"type": "portal_token", "name": "acme"}], {"slug": "acme"},
         {"role": "viewer", "organization": "acme"}),
        ("portal_token.revoked", [{"type": "portal_token", "name": "ops"}], None,
         {"role": "admin", "organization": "*"}),
    ]
    assert all(r["actor"]["type"] == "os_user" and r["actor"]["name"] for r in records)
    assert token not in repr(records) and token_hash(token) not in repr(records)


def test_a_token_change_is_kept_when_its_record_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal that cannot be written does not undo or fail the token command: it says
    that the record is missing and where."""
    database = tmp_path / "portal.sqlite3"
    cfg = str(_config_file(tmp_path, f'database = "{database}"'))
    (tmp_path / "j").write_text("a file where the journal's directory should be")
    run = lambda *argv: (lambda a: a.func(a))(_parser().parse_args(list(argv)))  # noqa: E731
    assert run("token", "create", "-c", cfg, "--name", "ops", "--role", "admin") == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("asd_")
    assert "token 'ops' created, but its audit record could not be written to" in out.err
    assert [r.name for r in _stored_tokens(str(database))] == ["ops"]


@pytest.mark.parametrize("command", [
    ["token", "create", "--name", "ops", "--role", "admin"],
    ["emit", "user.invited", "--actor-email", "a@acme.test"],
])
def test_commands_create_a_shared_journal_group_writable(tmp_path: Path, command: list[str]) -> None:
    """In a group-shared (setgid) journal directory, a command that creates the journal
    file makes it group-writable, as the daemon does: a 0o640 file would lock the
    application out of its own journal."""
    from auditshipd.cli import main

    cfg = str(_config_file(tmp_path, f'database = "{tmp_path / "portal.sqlite3"}"'))
    (tmp_path / "j").mkdir()
    os.chmod(tmp_path / "j", 0o2770)
    assert main([*command, "-c", cfg]) == 0
    assert (tmp_path / "j" / "audit.jsonl").stat().st_mode & 0o777 == 0o660


def _legacy_file(path: Path, tokens: dict[str, tuple[str, str | None]]) -> None:
    """A token file as earlier versions wrote it: {name: (token, revoked_at)}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [
        {"id": f"legacy{i:06d}", "name": name, "role": "admin", "organization": "*",
         "hash": token_hash(token), "created_at": "2025-01-01T00:00:00Z", "revoked_at": revoked}
        for i, (name, (token, revoked)) in enumerate(tokens.items())
    ]
    path.write_text(json.dumps({"version": 1, "tokens": records}))
    path.chmod(0o600)


def test_token_file_imported_once(
    tmp_path: Path, portal_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On each backend: an existing portal-tokens.json is imported into the store the
    first time a token command (or the portal) opens it, then renamed *.imported: its
    active tokens keep working, revoked ones stay revoked, and revoking one afterwards
    is not undone by a second import."""
    cfg = str(_config_file(tmp_path, f'database = "{portal_database}"'))
    legacy = tmp_path / "state" / "portal-tokens.json"
    _legacy_file(legacy, {"alice": ("asd_alice-secret", None), "old": ("asd_old", "2025-02-01T00:00:00Z")})
    run = lambda *argv: (lambda a: a.func(a))(_parser().parse_args(list(argv)))  # noqa: E731
    assert run("token", "list", "-c", cfg) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "old" in listing
    assert not legacy.exists() and legacy.with_name("portal-tokens.json.imported").exists()
    assert _authenticate(portal_database, "asd_alice-secret").name == "alice"
    assert _authenticate(portal_database, "asd_old") is None
    assert run("token", "revoke", "-c", cfg, "alice") == 0
    legacy.with_name("portal-tokens.json.imported").rename(legacy)  # as if it came back
    assert run("token", "list", "-c", cfg) == 0
    assert _authenticate(portal_database, "asd_alice-secret") is None
    assert len(_stored_tokens(portal_database)) == 2


@pytest.mark.parametrize(
    "table, key",
    [('colour = "blue"', "portal.colour"), ("retention_days = \"ten\"", "portal.retention_days"),
     ('listen = "localhost"', "portal.listen"), ('listen = "1.2.3.4:99999"', "portal.listen"),
     ('tls_cert = "/etc/hostname"', "portal.tls_key"), ("retention_days = -1", "portal.retention_days"),
     ("session_ttl = 0", "portal.session_ttl")],
)
def test_portal_config_errors_name_the_key(tmp_path: Path, table: str, key: str) -> None:
    """Bad [portal] keys and values raise ConfigError naming the file and portal.<key>
    (keys and types when the file loads, values when the table is checked)."""
    with pytest.raises(ConfigError) as info:
        portal_config(parse_config(f"[portal]\n{table}\n", "x.toml"))
    assert info.value.key == key and info.value.file == "x.toml"


def test_portal_config_defaults() -> None:
    """Defaults: disabled, 127.0.0.1:8750, database in the state dir, 365 days."""
    pc = portal_config(parse_config('[journal]\nstate_dir = "/srv/state"\n', "x.toml"))
    assert (pc.enabled, pc.host, pc.port, pc.retention_days) == (False, "127.0.0.1", 8750, 365)
    assert pc.database == "/srv/state/portal.sqlite3"


def test_portal_command_serves_until_sigterm(tmp_path: Path) -> None:
    """`auditshipd portal -c FILE` serves the API and exits 0 on SIGTERM."""
    port = free_port()
    cfg = _config_file(tmp_path, f'listen = "127.0.0.1:{port}"')
    code = ("import argparse, sys; from auditshipd.portal.cli import add_parser\n"
            "p = argparse.ArgumentParser(); add_parser(p.add_subparsers(dest='c'))\n"
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    proc = subprocess.Popen([sys.executable, "-c", code, "portal", "-c", str(cfg)],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}" in line, line
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/openapi.json", timeout=10) as r:
            assert json.load(r)["openapi"].startswith("3.")
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_token_commands_name_the_store_they_cannot_open(tmp_path: Path) -> None:
    """PostgreSQL down (nothing listens on the port): the token commands say which portal
    store they could not open (no password), exit 1, no traceback."""
    config = _config_file(tmp_path, f'database = "postgresql://postgres:pw-9f1@127.0.0.1:{free_port()}/x"\n')
    for args in (["token", "list"], ["token", "revoke", "nobody"],
                 ["token", "create", "--name", "a", "--role", "admin"]):
        out = subprocess.run([sys.executable, "-m", "auditshipd.cli", *args, "-c", str(config)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, out.stderr
        assert "cannot open the portal store postgresql://127.0.0.1:" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and "pw-9f1" not in out.stderr
