"""``auditshipd portal`` / ``token`` commands and the ``[portal]`` config table."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from auditshipd.config import parse_config
from auditshipd.errors import ConfigError
from auditshipd.portal.cli import add_parser
from auditshipd.portal.config import portal_config
from auditshipd.portal.tokens import TokenStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditshipd")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _config_file(tmp_path: Path, portal: str = "") -> Path:
    path = tmp_path / "auditshipd.toml"
    path.write_text(f'[journal]\npath = "{tmp_path}/j/audit.jsonl"\nstate_dir = "{tmp_path}/state"\n'
                    f"[portal]\n{portal}\n")
    return path


def test_token_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """create prints a token once and stores only its hash; list hides it; revoke disables it."""
    cfg = str(_config_file(tmp_path))
    run = lambda *argv: (lambda a: a.func(a))(_parser().parse_args(list(argv)))  # noqa: E731
    assert run("token", "create", "-c", cfg, "--name", "ops", "--role", "admin") == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("asd_") and len(token) > 40
    stored = (tmp_path / "state" / "portal-tokens.json").read_text()
    assert token not in stored
    assert oct(os.stat(tmp_path / "state" / "portal-tokens.json").st_mode & 0o777) == "0o600"
    assert run("token", "create", "-c", cfg, "--name", "ops", "--role", "viewer") == 1
    assert run("token", "create", "-c", cfg, "--name", "acme", "--role", "viewer", "--organization", "acme") == 0
    capsys.readouterr()
    assert run("token", "list", "-c", cfg) == 0
    listing = capsys.readouterr().out
    assert "ops" in listing and "acme" in listing and token not in listing
    store = TokenStore(tmp_path / "state" / "portal-tokens.json")
    assert store.authenticate(token).name == "ops"
    assert run("token", "revoke", "-c", cfg, "ops") == 0
    assert store.authenticate(token) is None
    assert run("token", "revoke", "-c", cfg, "ops") == 1
    with pytest.raises(SystemExit):
        _parser().parse_args(["token", "create", "--name", "x", "--role", "root"])


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_portal_command_serves_until_sigterm(tmp_path: Path) -> None:
    """`auditshipd portal -c FILE` serves the API and exits 0 on SIGTERM."""
    port = _free_port()
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
