"""Stateless portal replicas: tokens and browser sessions live in the store, on each
backend. Two replicas with their own state dirs share only the database: a session and
its CSRF token made on one work on the other, and a revocation made anywhere (a replica,
the token CLI) reaches both at their next request."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from portal_env import make_config

EVENT = {"id": "evt_replica_1", "action": "user.login", "occurred_at": "2026-01-02T03:04:05Z",
         "actor": {"type": "user", "email": "alice@acme.example"}, "organization": {"slug": "acme"}}


@pytest.fixture
async def replicas(tmp_path: Path, portal_database: str) -> AsyncIterator[list[Any]]:
    """Two portal replicas on one database (each backend), each with its own state dir."""
    from auditshipd.portal import start_portal
    from auditshipd.portal.backend import event_store

    store = event_store(portal_database)
    await store.open()
    await store.insert_events([EVENT])
    await store.close()
    servers = []
    try:
        for i in range(2):
            servers.append(await start_portal(make_config(tmp_path / f"replica{i}", portal_database), port=0))
        yield servers
    finally:
        for s in servers:
            await s.close()


async def _page(http, url: str) -> tuple[int, str]:
    async with http.get(url, allow_redirects=False) as r:
        return r.status, await r.text()


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


async def _login(http, form_from: str, post_to: str, token: str) -> None:
    """Take the login form from one replica and post it to another (any may answer)."""
    _, html = await _page(http, f"{form_from}/login")
    async with http.post(f"{post_to}/login", data={"token": token, "csrf": _csrf(html)},
                         allow_redirects=False) as r:
        assert r.status == 303, await r.text()
        assert r.headers["Location"] == "/events"


async def test_session_and_csrf_work_across_replicas(replicas, http) -> None:
    """A session made on replica 1 opens pages on replica 2; the CSRF token replica 1
    rendered for it is accepted by replica 2 (and another one refused); a logout on
    replica 2 ends the session on replica 1 too."""
    one, two = (s.url for s in replicas)
    admin = await replicas[0].tokens.create("ops", "admin")
    await _login(http, two, one, admin)
    status, html_one = await _page(http, f"{one}/events")
    assert status == 200 and "evt_replica_1" in html_one
    status, html_two = await _page(http, f"{two}/events")
    assert status == 200 and "evt_replica_1" in html_two
    csrf = _csrf(html_one)
    assert csrf == _csrf(html_two)  # bound to the session, not to a replica
    async with http.post(f"{two}/logout", data={"csrf": csrf[:-2] + "xx"}, allow_redirects=False) as r:
        assert r.status == 403
    assert (await _page(http, f"{one}/events"))[0] == 200
    async with http.post(f"{two}/logout", data={"csrf": csrf}, allow_redirects=False) as r:
        assert r.status == 303
    assert (await _page(http, f"{one}/events"))[0] == 303
    assert (await _page(http, f"{two}/events"))[0] == 303


async def test_revocation_reaches_every_replica(replicas, http) -> None:
    """A token revoked through replica 2's store stops working on both replicas at their
    next request, as bearer token and as the browser session opened with it; another
    token is unaffected."""
    one, two = (s.url for s in replicas)
    tokens = replicas[0].tokens
    doomed = await tokens.create("doomed", "admin")
    other = await tokens.create("other", "admin")
    await _login(http, one, one, doomed)
    for url in (one, two):
        assert (await _page(http, f"{url}/events"))[0] == 200
        for token in (doomed, other):
            async with http.get(f"{url}/api/events", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
    assert [r.name for r in await replicas[1].tokens.revoke("doomed")] == ["doomed"]
    for url in (one, two):
        status, body = await _page(http, f"{url}/events")
        assert status == 303 and "evt_replica_1" not in body
        async with http.get(f"{url}/api/events", headers={"Authorization": f"Bearer {doomed}"}) as r:
            assert r.status == 401
        async with http.get(f"{url}/api/events", headers={"Authorization": f"Bearer {other}"}) as r:
            assert r.status == 200


async def test_revocation_by_the_cli_reaches_running_replicas(
    replicas, http, tmp_path: Path, portal_database: str
) -> None:
    """`auditshipd token revoke` run against the same database (a store of its own, in
    its own process) ends the token on both running replicas at their next request."""
    one, two = (s.url for s in replicas)
    token = await replicas[0].tokens.create("cli-made", "admin")
    for url in (one, two):
        async with http.get(f"{url}/api/events", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'[journal]\nstate_dir = "{tmp_path}/cli-state"\n[portal]\ndatabase = "{portal_database}"\n')
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("auditshipd")), "token", "revoke", "-c", str(cfg), "cli-made",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"revoked cli-made" in out
    for url in (one, two):
        async with http.get(f"{url}/api/events", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401


async def test_expired_session_is_refused_everywhere(replicas, http) -> None:
    """A session past its expiry (wall clock, shared by replicas) opens nothing on either
    replica; a fresh login works again."""
    from auditshipd.portal.auth_store import session_key

    token = await replicas[0].tokens.create("brief", "admin")
    principal = await replicas[0].tokens.authenticate(token)
    session_id, _ = await replicas[0].tokens.create_session(principal.token_id, ttl=-1)
    assert await replicas[1].tokens.session(session_id) is None
    for s in replicas:
        async with http.get(f"{s.url}/events", cookies={"asd_session": session_id},
                            allow_redirects=False) as r:
            assert r.status == 303
    # What the store holds is the session id's hash, never the cookie's value.
    assert await replicas[1].tokens.session(session_key(session_id)) is None


async def test_sqlite_database_of_version_1_gains_token_tables(tmp_path: Path) -> None:
    """A SQLite portal database written by a version without tokens in the store
    (schema version 1) gets the token and session tables when opened; its events stay."""
    import sqlite3

    from auditshipd.portal.backend import auth_store
    from auditshipd.portal.sql import SCHEMA
    from auditshipd.portal.store_sqlite import SQLiteEventStore

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.close()
    store = SQLiteEventStore(path)
    await store.open()
    try:
        await store.insert_events([EVENT])
        tokens = auth_store(store)
        token = await tokens.create("upgraded", "admin")
        assert (await tokens.authenticate(token)).name == "upgraded"
        assert (await store.get("evt_replica_1"))["id"] == "evt_replica_1"
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
    conn.close()
