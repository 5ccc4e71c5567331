"""A first run: the commands the login page and the empty event list suggest work exactly
as shown, pasted into a shell."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from auditshipd.config import load_config

HINT = re.compile(r'<pre class="command"[^>]*><code>(.*?)</code></pre>', re.S)


@pytest.fixture
async def fresh_portal(tmp_path: Path) -> AsyncIterator[Any]:
    """A portal on an empty index, started from a config file on disk (as installed)."""
    from auditshipd.portal import start_portal

    path = tmp_path / "etc" / "auditshipd.toml"
    path.parent.mkdir()
    path.write_text(f"""
[journal]
path = "{tmp_path}/journal/audit.jsonl"
paths = ["{tmp_path}/journal/audit.jsonl*"]
state_dir = "{tmp_path}/state"

[portal]
enabled = true
listen = "127.0.0.1:0"

[[sinks]]
name = "index"
type = "portal"
""")
    server = await start_portal(load_config(path), port=0)
    try:
        yield server
    finally:
        await server.close()


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a suggested command in a shell from another directory, with the system's
    PATH only (the venv's ``bin`` not on it, as in a clone whose venv is not activated)."""
    env = {**os.environ, "USER": "first-admin", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    return subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


async def test_login_hint_and_first_event_hint_work_as_written(fresh_portal, http, tmp_path: Path) -> None:
    """The login page's command creates a token that logs in; the empty list shows the
    emit command, which records an event in the journal the daemon reads; once events
    other than the portal's own access records are indexed, the hint is gone."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    async with http.get(f"{fresh_portal.url}/login") as r:
        command = html.unescape(HINT.search(await r.text()).group(1))
    assert "token create" in command and "-c " in command
    done = _shell(command, elsewhere)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("asd_")
    assert not (elsewhere / "var").exists()
    headers = {"Authorization": f"Bearer {token}"}

    async with http.get(f"{fresh_portal.url}/events", headers=headers) as r:
        assert r.status == 200
        page = await r.text()
    assert 'id="first-run"' in page
    emit = html.unescape(HINT.search(page).group(1))
    assert "auditshipd emit" in emit
    done = _shell(emit, elsewhere)
    assert done.returncode == 0, done.stderr
    journal = tmp_path / "journal" / "audit.jsonl"
    recorded = [json.loads(line) for line in journal.read_text().splitlines()]
    assert any(e["action"] == "user.login" for e in recorded)

    # The portal's own access records do not count as a first event; the emitted one does.
    access = [e for e in recorded if e["action"] == "audit_log.viewed"]
    assert access
    await fresh_portal.store.insert_events(access)
    async with http.get(f"{fresh_portal.url}/events", headers=headers) as r:
        assert 'id="first-run"' in await r.text()
    await fresh_portal.store.insert_events([e for e in recorded if e["action"] == "user.login"])
    async with http.get(f"{fresh_portal.url}/events", headers=headers) as r:
        page = await r.text()
    assert 'id="first-run"' not in page and "user.login" in page


async def test_login_page_shows_host_details_only_to_a_browser_on_the_portal_host(
    fresh_portal, http, tmp_path: Path
) -> None:
    """The login page is open to anyone: through a proxy (a forwarding header) the command
    names no path, directory or account of the host; straight from loopback it does."""
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        async with http.get(f"{fresh_portal.url}/login", headers={header: "203.0.113.9"}) as r:
            page = await r.text()
        command = html.unescape(HINT.search(page).group(1))
        assert command == 'auditshipd token create -c CONFIG --name "$USER" --role admin'
        assert str(tmp_path) not in page
    async with http.get(f"{fresh_portal.url}/login") as r:
        command = html.unescape(HINT.search(await r.text()).group(1))
    assert str(tmp_path / "etc" / "auditshipd.toml") in command


async def test_hints_work_from_elsewhere_when_the_config_paths_are_relative(
    tmp_path: Path, http, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config with relative paths (as in a checkout) means the portal's working directory:
    the suggested commands go there first, so pasted anywhere they use the portal's state
    and journal, never a second ``./var``."""
    from auditshipd.portal import start_portal

    app = tmp_path / "app"
    (app / "config").mkdir(parents=True)
    (app / "config" / "auditshipd.toml").write_text("""
[journal]
path = "var/journal/audit.jsonl"
paths = ["var/journal/audit.jsonl*"]
state_dir = "var/state"

[portal]
enabled = true
listen = "127.0.0.1:0"

[[sinks]]
name = "index"
type = "portal"
""")
    monkeypatch.chdir(app)
    server = await start_portal(load_config(Path("config/auditshipd.toml")), port=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        async with http.get(f"{server.url}/login") as r:
            command = html.unescape(HINT.search(await r.text()).group(1))
        assert command.startswith("cd ")
        done = _shell(command, elsewhere)
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        async with http.get(f"{server.url}/events", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
            emit = html.unescape(HINT.search(await r.text()).group(1))
        done = _shell(emit, elsewhere)
        assert done.returncode == 0, done.stderr
    finally:
        await server.close()
    assert not (elsewhere / "var").exists()
    journal = app / "var" / "journal" / "audit.jsonl"
    assert any(json.loads(line)["action"] == "user.login" for line in journal.read_text().splitlines())


def test_hints_name_auditshipd_when_the_shell_finds_this_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from auditshipd.portal import hints
    from auditshipd.service.scaffold import installed_executable

    own = installed_executable()
    monkeypatch.setattr(hints.shutil, "which", lambda name: own)
    assert hints.emit_command(None).startswith("auditshipd emit ")
    monkeypatch.setattr(hints.shutil, "which", lambda name: "/usr/bin/auditshipd")
    assert hints.emit_command(None).startswith(f"{own} emit ")
