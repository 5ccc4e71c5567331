"""Self-service streams picked up live by running daemons from the portal's store.

An organization's admin creates an HTTP stream through the daemon's own portal; the
daemon starts it within a poll, ships that organization's events (and no other's) to a
real receiver, stops on pause, resumes without losing an event, stops for good on
delete. Without a secrets key the daemon says why and keeps its other sinks running.
Two daemons with their own journals on one PostgreSQL store both ship to the stream and
both report their state.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.conftest import Workspace

from auditshipd.journal.writer import AuditJournal
from auditshipd.testing import WebhookReceiver, free_port, wait_for

pytestmark = pytest.mark.integration

KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
RX_TOKEN = "rx-bearer-7f3a9c2e51d8"


def _config(ws: Workspace, database: str = "", portal: bool = True) -> int:
    port = free_port()
    ws.write_config(
        f"""
        [[sinks]]
        name = "all"
        type = "file"
        path = "{ws.out}"
        [sinks.batch]
        timeout = 0.1
        """,
        extra=f"""
        [portal]
        enabled = {"true" if portal else "false"}
        listen = "127.0.0.1:{port}"
        {f'database = "{database}"' if database else ""}
        stream_allow_hosts = ["127.0.0.1"]
        stream_poll_interval = 0.3
        """,
    )
    return port


def _token(ws: Workspace, org: str) -> str:
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "token", "create", "-c",
                          str(ws.config), "--name", f"admin-{org}", "--role", "admin",
                          "--organization", org], capture_output=True, text=True, check=True)
    found = re.search(r"asd_[A-Za-z0-9_-]+", out.stdout + out.stderr)
    assert found is not None
    return found.group(0)


def _write(journal: Path, org: str, prefix: str, n: int) -> list[str]:
    j = AuditJournal(journal)
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    for eid in ids:
        assert j.record("user.login", id=eid, actor={"type": "user", "email": f"{eid}@{org}.example"},
                        organization={"slug": org})
    j.close()
    return ids


async def _api(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
            method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None)


def _stream_row(port: int, token: str, stream_id: str) -> dict[str, Any] | None:
    status, body = asyncio.run(_api("GET", f"http://127.0.0.1:{port}/api/streams", token))
    assert status == 200, body
    return next((r for r in body["data"] if r.get("id") == stream_id), None)


def test_daemon_runs_a_stream_created_in_the_portal(ws: Workspace) -> None:
    """Create -> the daemon ships acme's events only; pause holds them; resume delivers
    them all; delete stops the stream. The stream's state reaches the portal; the bearer
    token appears nowhere in clear (log, status, journal, database). `auditshipd status`
lists the stream while it exists (disabled while paused)."""
    port = _config(ws)
    acme, globex = _token(ws, "acme"), _token(ws, "globex")
    base = f"http://127.0.0.1:{port}"
    with WebhookReceiver(bearer_token=RX_TOKEN) as rx, \
            ws.daemon(env={"AUDITSHIPD_SECRETS_KEY": KEY}) as daemon:
        daemon.wait_started()
        status, body = asyncio.run(_api("POST", f"{base}/api/streams", acme, {
            "name": "siem", "type": "http",
            "options": {"url": rx.url, "bearer_token": RX_TOKEN, "encoding": "ndjson"}}))
        assert status == 201, body
        sid = body["data"]["id"]
        wait_for(lambda: b"acme.siem" in daemon.log(), 20, message="stream started")
        mine = _write(ws.journal, "acme", "a", 30)
        others = _write(ws.journal, "globex", "g", 30)
        wait_for(lambda: set(mine) <= set(rx.ids()), 30, message="acme events at the stream")
        # The stream's state, reported by the daemon into the store, reaches the portal.
        wait_for(lambda: (_stream_row(port, acme, sid) or {}).get("state") == "active"
                 and _stream_row(port, acme, sid)["last_synced_at"], 20, message="state")
        assert _stream_row(port, globex, sid) is None
        # `auditshipd status` lists the stream beside the configured sink, from the same
        # state-dir files, without reading its secrets (no key in its environment).
        listed = _status_rows(ws)
        assert listed["all"]["type"] == "file"
        assert listed["acme.siem"]["type"] == "http"
        assert listed["acme.siem"]["state"] == "active"
        assert listed["acme.siem"]["enabled"] is True and listed["acme.siem"]["delivered"] >= 30

        status, body = asyncio.run(_api("PATCH", f"{base}/api/streams/{sid}", acme, {"paused": True}))
        assert status == 200 and body["data"]["paused"] is True
        wait_for(lambda: re.search(rb"removed \['acme\.siem'\]", daemon.log()), 20,
                 message="stream stopped")
        held = _write(ws.journal, "acme", "held", 10)
        wait_for(lambda: set(held) <= set(ws_ids(ws.out)), 20, message="the other sink goes on")
        paused = _status_rows(ws)["acme.siem"]
        assert paused["enabled"] is False and paused["state"] == "inactive"
        assert not set(held) & set(rx.ids()), "a paused stream delivered"
        status, _ = asyncio.run(_api("PATCH", f"{base}/api/streams/{sid}", acme, {"paused": False}))
        assert status == 200
        wait_for(lambda: set(held) <= set(rx.ids()), 30, message="held events after resume")

        status, _ = asyncio.run(_api("DELETE", f"{base}/api/streams/{sid}", acme))
        assert status == 204
        wait_for(lambda: len(re.findall(rb"removed \['acme\.siem'\]", daemon.log())) == 2, 20,
                 message="stream deleted")
        # Oracle: every acme id at the stream, no globex event ever, each event acme's.
        got = rx.ids()
        assert set(mine) | set(held) <= set(got)
        assert not set(others) & set(got)
        assert {e.get("organization", {}).get("slug") for e in rx.events} == {"acme"}
        assert rx.rejected_auth == 0
        log = daemon.log()
        assert "acme.siem" not in _status_rows(ws)
        table = subprocess.run([sys.executable, "-m", "auditshipd.cli", "status", "-c",
                                str(ws.config)], capture_output=True, text=True, check=True)
        assert "acme.siem" not in table.stdout and RX_TOKEN not in table.stdout + table.stderr
    for path in [ws.journal, *ws.state.rglob("*")]:
        if path.is_file():
            assert RX_TOKEN.encode() not in path.read_bytes(), path
    assert RX_TOKEN.encode() not in log


def test_a_stream_url_holding_credentials_is_encrypted_at_rest_and_used_whole(
        ws: Workspace) -> None:
    """A URL with a token in its path and another in its query: the daemon delivers to
    the URL as given, while the portal's store (and every other file) holds neither
    token in the clear, and the API shows the URL masked."""
    path_token, code = "Zq7VnC4dhaV3kN9xQ2pLw8", "QUERYCODE4417"
    port = _config(ws)
    acme = _token(ws, "acme")
    base = f"http://127.0.0.1:{port}"
    with WebhookReceiver() as rx, ws.daemon(env={"AUDITSHIPD_SECRETS_KEY": KEY}) as daemon:
        daemon.wait_started()
        url = f"{rx.url}/{path_token}?code={code}"
        status, body = asyncio.run(_api("POST", f"{base}/api/streams", acme, {
            "name": "siem", "type": "http", "options": {"url": url}}))
        assert status == 201, body
        assert body["data"]["options"]["url"] == f"{rx.url}/***?code=***"
        assert body["data"]["secrets"] == {"url": "set"}
        wait_for(lambda: b"acme.siem" in daemon.log(), 20, message="stream started")
        mine = _write(ws.journal, "acme", "a", 5)
        wait_for(lambda: set(mine) <= set(rx.ids()), 30, message="acme events at the stream")
        assert set(rx.paths) == {f"/ingest/{path_token}?code={code}"}
        assert daemon.terminate() == 0
    files = [p for p in ws.root.rglob("*") if p.is_file()]  # store, journal, state, log
    assert any(p.name.startswith("portal.sqlite3") for p in files)
    for path in files:
        data = path.read_bytes()
        assert path_token.encode() not in data and code.encode() not in data, path


def _status_rows(ws: Workspace) -> dict[str, dict[str, Any]]:
    """``auditshipd status --json``, by sink name (the secrets key not given to it)."""
    env = {k: v for k, v in os.environ.items() if k != "AUDITSHIPD_SECRETS_KEY"}
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "status", "--json", "-c",
                          str(ws.config)], capture_output=True, text=True, check=True, env=env)
    assert RX_TOKEN not in out.stdout + out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)["sinks"]}


def ws_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line]


def test_without_secrets_key_the_daemon_says_so_and_runs_the_rest(ws: Workspace) -> None:
    """A stream exists in the store but this daemon has no secrets key: it logs why, the
    stream shows the error on the portal, and the daemon's own sink keeps delivering."""
    port = _config(ws)
    acme = _token(ws, "acme")
    with WebhookReceiver() as rx:
        with ws.daemon(env={"AUDITSHIPD_SECRETS_KEY": KEY}) as daemon:
            daemon.wait_started()
            status, body = asyncio.run(_api("POST", f"http://127.0.0.1:{port}/api/streams", acme, {
                "name": "siem", "type": "http", "options": {"url": rx.url, "hmac_secret": "k" * 32}}))
            assert status == 201, body
            sid = body["data"]["id"]
        with ws.daemon(env={"AUDITSHIPD_SECRETS_KEY": ""}) as daemon:
            daemon.wait_started()
            ids = _write(ws.journal, "acme", "nokey", 10)
            wait_for(lambda: set(ids) <= set(ws_ids(ws.out)), 20, message="the file sink")
            assert b"self-service streams not started on this host: no secrets key" in daemon.log()
            wait_for(lambda: "secrets key" in str((_stream_row(port, acme, sid) or {}).get("last_error")),
                     20, message="the error on the portal")
            assert _stream_row(port, acme, sid)["state"] == "error"
            assert not set(ids) & set(rx.ids())


def test_two_daemons_on_postgresql_both_ship_to_the_stream(tmp_path: Path, pg_url: str) -> None:
    """Two hosts (own journals, own state) share one PostgreSQL store; the stream created
    through host A's portal is run by both; each ships its own journal's acme events; the
    portal shows the stream as reported by two hosts."""
    a, b = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")
    port = _config(a, pg_url)
    _config(b, pg_url, portal=False)
    acme = _token(a, "acme")
    env = {"AUDITSHIPD_SECRETS_KEY": KEY}
    with WebhookReceiver() as rx, a.daemon(env=env) as da, b.daemon(env=env) as db:
        da.wait_started()
        db.wait_started()
        status, body = asyncio.run(_api("POST", f"http://127.0.0.1:{port}/api/streams", acme, {
            "name": "siem", "type": "http", "options": {"url": rx.url}}))
        assert status == 201, body
        sid = body["data"]["id"]
        wait_for(lambda: b"acme.siem" in da.log() and b"acme.siem" in db.log(), 20,
                 message="both daemons start the stream")
        from_a = _write(a.journal, "acme", "host-a", 25)
        from_b = _write(b.journal, "acme", "host-b", 25)
        _write(b.journal, "globex", "host-b-globex", 10)
        wait_for(lambda: set(from_a) | set(from_b) <= set(rx.ids()), 30, message="both hosts")
        rows: list[Any] = []

        def both_report_active() -> bool:
            rows.append(_stream_row(port, acme, sid) or {})
            hosts = rows[-1].get("hosts", [])
            return len(hosts) == 2 and {h["state"] for h in hosts} == {"active"}

        try:
            wait_for(both_report_active, 30, message="two hosts report the stream active")
        except Exception:
            raise AssertionError(f"last rows: {rows[-3:]}") from None
        assert rows[-1]["state"] == "active" and rows[-1]["last_synced_at"]
        assert {e["organization"]["slug"] for e in rx.events} == {"acme"}
