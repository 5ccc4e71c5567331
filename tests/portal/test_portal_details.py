"""Portal details: private database files, links to any event id, Host header checks."""

from __future__ import annotations

import html
import json
import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urljoin

import pytest
from portal_env import PortalEnv, make_config
from yarl import URL

from auditshipd.portal.pages import event_url
from auditshipd.portal.store_sqlite import SQLiteEventStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_database_wal_and_shm_are_created_0600(tmp_path: Path) -> None:
    """With a permissive umask, the database, -wal and -shm files are still 0600."""
    old = os.umask(0o002)
    try:
        path = tmp_path / "portal.sqlite3"
        store = SQLiteEventStore(path)
        await store.open()
        await store.insert_events([{"id": "e1", "occurred_at": "2026-01-01T00:00:00Z"}])
        await store.count()
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        await store.close()
    finally:
        os.umask(old)


async def test_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    """A database left 0644 (and its -wal) by an earlier version becomes 0600 when opened."""
    path = tmp_path / "portal.sqlite3"
    store = SQLiteEventStore(path)
    await store.open()
    await store.close()
    path.chmod(0o644)
    wal = path.with_name(path.name + "-wal")
    wal.write_bytes(b"")
    wal.chmod(0o644)
    store = SQLiteEventStore(path)
    await store.open()
    try:
        assert _mode(path) == 0o600
        assert not wal.exists() or _mode(wal) == 0o600
    finally:
        await store.close()


ODD_IDS = ["a/b", "../etc", "x/../y", "..", ".", "50%", "sp ace?q=1#f", "ev_ok"]


@pytest.fixture
async def odd_portal(tmp_path: Path) -> AsyncIterator[PortalEnv]:
    """A portal whose events have ids with slashes, dots and URL syntax."""
    from auditshipd.portal import start_portal

    database = tmp_path / "odd.sqlite3"
    store = SQLiteEventStore(database)
    await store.open()
    await store.insert_events([
        {"id": eid, "occurred_at": f"2026-01-01T00:00:{i:02d}Z", "action": "user.login",
         "actor": {"type": "user", "email": "a@example.com"}}
        for i, eid in enumerate(ODD_IDS)
    ])
    await store.close()
    server = await start_portal(make_config(tmp_path, database), port=0)
    try:
        yield await PortalEnv.start(server, tmp_path / "journal" / "audit.jsonl")
    finally:
        await server.close()


async def test_event_links_reach_ids_with_slashes_and_dots(odd_portal, http) -> None:
    """Every link of the event list opens its own event, as a browser resolves the link
    (dot segments removed, %2E%2E included): ids with '/', '..', '%', '?' and '#' too."""
    auth = odd_portal.auth(odd_portal.admin)
    async with http.get(f"{odd_portal.url}/events", headers=auth) as r:
        assert r.status == 200
        page = await r.text()
    links = [html.unescape(h) for h in re.findall(r'<td class="col-time"><a href="([^"]*)"', page)]
    assert len(links) == len(ODD_IDS)
    for link in links:
        # What a browser requests: the WHATWG URL parser removes "." and ".." segments,
        # also percent-encoded ones (urljoin does the plain ones; none may be left).
        path = urljoin(odd_portal.url + "/", link)
        assert not re.search(r"/(\.|%2e){1,2}(/|$|\?)", path, re.I), link
        async with http.get(URL(path, encoded=True), headers=auth) as r:
            assert r.status == 200, (link, await r.text())
            body = html.unescape(await r.text())
        found = re.search(r'"id": "(.*)"', body)
        assert found is not None, link
        opened = json.loads(f'"{found.group(1)}"')
        assert event_url(opened) == link


async def test_api_event_by_id_with_a_slash(odd_portal, http) -> None:
    """/api/events/<id> with the id encoded as one segment finds ids holding '/'."""
    auth = odd_portal.auth(odd_portal.admin)
    for eid in ("a/b", "../etc", "x/../y"):
        url = URL(f"{odd_portal.url}/api/events/{quote(eid, safe='')}", encoded=True)
        async with http.get(url, headers=auth) as r:
            assert r.status == 200, (eid, await r.text())
            assert (await r.json())["data"]["id"] == eid


async def _status(url: str, host: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url, headers={"Host": host},
                                                        allow_redirects=False) as r:
        return r.status


@pytest.mark.parametrize("allowed", [[], ["portal.example"]])
async def test_portal_refuses_foreign_host(tmp_path: Path, allowed: list[str]) -> None:
    """Every portal path answers 421 to a foreign Host; ours get the normal answers."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "portal"))
    from portal_env import make_config

    from auditshipd.portal import start_portal

    extra = f"allowed_hosts = {allowed!r}\n".replace("'", '"') if allowed else ""
    server = await start_portal(make_config(tmp_path, tmp_path / "p.sqlite3", extra), port=0)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        for path in ("/login", "/api/events", "/static/portal.css", "/api/openapi.json"):
            assert await _status(server.url + path, f"rebind.attacker.example:{port}") == 421
        for host in allowed or ["127.0.0.1", "localhost"]:
            assert await _status(server.url + "/login", f"{host}:{port}") == 200
            assert await _status(server.url + "/api/events", host) == 401
        if allowed:
            assert await _status(server.url + "/login", f"localhost:{port}") == 421
    finally:
        await server.close()
