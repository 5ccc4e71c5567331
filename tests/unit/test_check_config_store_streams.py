"""``auditshipd check-config`` and the self-service streams of a real SQLite portal store:
each is read, decrypted and validated as the daemon would start it; the runnable ones
are listed, each other one logged with its reason, paused ones counted; none of them
changes the exit status, except a failed connection with ``--check-connections``."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers.store_streams import (
    KEY,
    OTHER_KEY,
    host_config,
    http_definition,
    save_definitions,
)

from auditshipd.portal.stream_secrets import ENV_VAR
from auditshipd.testing import free_port

TOKEN = "stream-bearer-5c1d0e9f7a"


def _check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, ENV_VAR: KEY}
    return subprocess.run([sys.executable, "-m", "auditshipd.cli", "check-config", "-c",
                           str(config), *extra], capture_output=True, text=True, timeout=60,
                          env=env)


def test_store_streams_are_checked_listed_and_do_not_fail_the_check(tmp_path: Path) -> None:
    database = tmp_path / "state" / "portal.sqlite3"
    database.parent.mkdir(parents=True)
    config = host_config(tmp_path, database)
    closed = free_port()  # nothing listens there
    asyncio.run(save_definitions(database, [
        http_definition("acme", "siem", f"http://127.0.0.1:{closed}/in", TOKEN),
        http_definition("globex", "siem", "https://siem.example/in", TOKEN, OTHER_KEY),
        http_definition("initech", "siem", "https://siem.example/in", TOKEN, paused=True),
        http_definition("umbrella", "siem", "http://169.254.169.254/latest", TOKEN),
    ]))

    result = _check(config)
    assert result.returncode == 0, result.stderr
    assert "OK (1 sink(s): archive (file))" in result.stdout
    assert ("portal store: 4 self-service stream(s): 1 would run here: acme.siem (http);"
            " 2 would not (globex.siem, umbrella.siem: reasons above); 1 paused"
            in result.stdout), result.stdout
    # each refusal logged with its own reason, no secret anywhere
    assert "globex.siem not started" in result.stderr
    assert "do not decrypt" in result.stderr
    assert "umbrella.siem not started" in result.stderr
    assert "169.254.169.254" in result.stderr
    assert TOKEN not in result.stdout + result.stderr

    # --check-connections reaches the runnable stream's destination too: a closed port
    result = _check(config, "--check-connections")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "connection: acme.siem (http): failed" in result.stdout
    assert "connection: archive (file): skipped" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_no_store_yet_is_not_created_and_an_unreadable_one_is_said(tmp_path: Path) -> None:
    database = tmp_path / "state" / "portal.sqlite3"
    config = host_config(tmp_path, database)
    result = _check(config)
    assert result.returncode == 0, result.stderr
    assert "portal store" not in result.stdout
    assert not database.exists()

    database.parent.mkdir(parents=True)
    asyncio.run(save_definitions(database, []))  # a store without streams
    result = _check(config)
    assert result.returncode == 0, result.stderr
    assert "portal store: no self-service streams" in result.stdout

    database.unlink()
    database.write_bytes(b"this is not an SQLite database" * 100)
    result = _check(config)
    assert result.returncode == 0, result.stderr
    assert "self-service streams not checked (the reason is logged above)" in result.stdout
    assert "portal store cannot be" in result.stderr


def test_check_connections_refuses_a_stream_name_resolving_inside(tmp_path: Path) -> None:
    """A stream saved with a host name (checked then) that now resolves to an internal
    address is reported refused by --check-connections, and not connected to."""
    database = tmp_path / "state" / "portal.sqlite3"
    database.parent.mkdir(parents=True)
    config = host_config(tmp_path, database, allow="[]")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        asyncio.run(save_definitions(database, [
            http_definition("acme", "siem", f"http://localhost:{port}/in", TOKEN)]))
        result = _check(config, "--check-connections")
        listener.settimeout(0.5)
        try:
            listener.accept()
            connected = True
        except TimeoutError:
            connected = False
    finally:
        listener.close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "connection: acme.siem (http): failed: BlockedDestination:" in result.stdout, result.stdout
    assert "loopback" in result.stdout
    assert not connected
