"""Many hosts, one PostgreSQL portal store, several portal replicas.

Two daemons (own journals, own state) ship into one PostgreSQL store through their
``portal`` sinks; two portal replicas on two ports serve it. The oracle: every event id
written to either journal is stored exactly once and served by each replica, and both
replicas export the same thing. A PostgreSQL restart while both daemons ship costs
retries, never an event or a duplicate row.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from tests.conftest import Workspace
from tests.servers.postgres import PrivatePostgres, migrated_schema

from auditshipd.journal.writer import AuditJournal
from auditshipd.testing import free_port

pytestmark = pytest.mark.integration


def _host(root: Path, database: str) -> Workspace:
    ws = Workspace(root)
    ws.write_config(
        f"""
        [[sinks]]
        name = "portal"
        type = "portal"
        database = "{database}"
        retention_days = 0
        [sinks.batch]
        max_events = 200
        timeout = 0.2
        [sinks.retry]
        initial_backoff = 0.05
        max_backoff = 0.5
        attempt_timeout = 10
        """
    )
    return ws


def _write(journal: Path, prefix: str, n: int, shared: int = 0) -> list[str]:
    """``n`` events ``<prefix>-i`` (plus ``shared`` events whose ids both hosts write)."""
    j = AuditJournal(journal)
    ids = []
    for i in range(n):
        eid = f"{prefix}-{i:05d}"
        assert j.record("user.login", id=eid, actor={"type": "user", "email": f"u{i}@acme.example"},
                        organization={"slug": "acme"}, occurred_at=f"2026-0{1 + i % 3}-02T00:00:{i % 60:02d}Z")
        ids.append(eid)
    for i in range(shared):
        eid = f"shared-{i:05d}"
        assert j.record("user.logout", id=eid, actor={"type": "user", "email": "s@acme.example"},
                        organization={"slug": "acme"}, occurred_at="2026-02-01T00:00:00Z")
        ids.append(eid)
    j.close()
    return ids


async def _stored(url: str) -> tuple[int, set[str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT id FROM events")
    finally:
        await conn.close()
    return len(rows), {r[0] for r in rows}


async def _wait_stored(url: str, want: set[str], timeout: float = 90) -> tuple[int, set[str]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows, ids = await _stored(url)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            rows, ids = -1, set()
        if want <= ids or time.monotonic() > deadline:
            return rows, ids
        await asyncio.sleep(0.2)


def _replica_config(tmp: Path, database: str) -> object:
    from auditshipd.config import parse_config

    text = f"""
[journal]
path = "{tmp}/journal/audit.jsonl"
state_dir = "{tmp}/state"
[portal]
enabled = true
listen = "127.0.0.1:0"
database = "{database}"
"""
    return parse_config(text, str(tmp / "auditshipd.toml"))


async def _export(url: str, token: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(
        f"{url}/api/export?format=jsonl", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        return [json.loads(line) for line in (await resp.text()).splitlines() if line]


async def test_two_daemons_one_store_two_replicas(tmp_path: Path, pg_url: str) -> None:
    """Two hosts with their own journals ship into one PostgreSQL store, 100 events
    shipped by both; two portal replicas on two ports each serve every event once and
    export exactly the same."""
    from auditshipd.portal import start_portal

    a, b = _host(tmp_path / "a", pg_url), _host(tmp_path / "b", pg_url)
    ids = set(_write(a.journal, "a", 3000, shared=100)) | set(_write(b.journal, "b", 3000, shared=100))
    with a.daemon() as da, b.daemon() as db:
        rows, stored = await _wait_stored(pg_url, ids)
        assert stored == ids, (len(ids - stored), da.log()[-2000:], db.log()[-2000:])
        assert rows == len(ids) == 6100
    # Two replicas sharing nothing but the database (and, for now, the token file).
    shared = tmp_path / "replicas"
    servers = [await start_portal(_replica_config(shared, pg_url), port=0) for _ in range(2)]
    try:
        token = await servers[0].tokens.create("fleet-admin", "admin")
        exports = [await _export(s.url, token) for s in servers]
        assert exports[0] == exports[1]
        assert sorted(e["id"] for e in exports[0]) == sorted(ids)
    finally:
        for s in servers:
            await s.close()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this test alone (it is restarted), on a free port."""
    root = Path(tempfile.mkdtemp(prefix="asd-pg-"))
    os.chmod(root, 0o755)
    server = PrivatePostgres(root / "pg", free_port())
    server.init()
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(root, ignore_errors=True)


async def test_postgres_restart_while_two_daemons_ship(tmp_path: Path, private_pg: PrivatePostgres) -> None:
    """The server restarts (and stays down a moment) while two daemons ship: the
    portal sinks retry, then every event is stored exactly once."""
    url = await migrated_schema(private_pg.url)
    a, b = _host(tmp_path / "a", url), _host(tmp_path / "b", url)
    ids = set(_write(a.journal, "a", 2000)) | set(_write(b.journal, "b", 2000))
    with a.daemon() as da, b.daemon() as db:
        # Shipping has begun: some rows are in.
        deadline = time.monotonic() + 60
        while (await _stored(url))[0] == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        private_pg.stop("fast")
        more = set(_write(a.journal, "a2", 1500)) | set(_write(b.journal, "b2", 1500))
        # The daemons meet the dead server and say so (then retry).
        deadline = time.monotonic() + 60
        while b"portal database" not in da.log() + db.log():
            assert time.monotonic() < deadline, da.log()[-3000:]
            await asyncio.sleep(0.05)
        private_pg.start()
        private_pg.wait_ready()
        rows, stored = await _wait_stored(url, ids | more)
        assert stored == ids | more, (len((ids | more) - stored), da.log()[-3000:])
        # No event stored twice: the key is (id, occurred_at), so a redelivery whose
        # stored time differed (another path to the row) would add a row.
        assert rows == len(ids | more)


async def test_a_replica_answers_503_while_its_database_is_down(
        tmp_path: Path, private_pg: PrivatePostgres, caplog: pytest.LogCaptureFixture) -> None:
    """The server stops under a running portal replica: the API and the pages answer
    503 with Retry-After (a load balancer retries or takes the replica out), the log says
    so once, and the replica serves again as soon as the server is back."""
    from tests.portal.portal_env import make_config

    from auditshipd.portal import start_portal

    url = await migrated_schema(private_pg.url)
    server = await start_portal(make_config(tmp_path, url), port=0)
    try:
        token = await server.tokens.create("ops", "admin")
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/api/events", headers=headers) as r:
                assert r.status == 200
            private_pg.stop("fast")
            for _ in range(3):
                async with http.get(f"{server.url}/api/events", headers=headers) as r:
                    assert r.status == 503, await r.text()
                    assert r.headers["Retry-After"] == "5"
                    assert "cannot be reached" in (await r.json())["error"]
            async with http.get(f"{server.url}/events", headers=headers) as r:
                assert r.status == 503
                assert "Audit log unavailable" in await r.text()
                assert r.headers["Content-Security-Policy"]
            private_pg.start()
            private_pg.wait_ready()
            deadline = time.monotonic() + 30
            while True:
                async with http.get(f"{server.url}/api/events", headers=headers) as r:
                    if r.status == 200:
                        break
                assert time.monotonic() < deadline, r.status
                await asyncio.sleep(0.2)
    finally:
        await server.close()
    outage = [r.getMessage() for r in caplog.records if "portal store" in r.getMessage()]
    assert len([m for m in outage if "unavailable" in m]) <= 2, outage  # not once a request
    assert any("reachable again" in m for m in outage), outage
    assert not [r for r in caplog.records if r.name.startswith(("auditshipd", "aiohttp"))
                and r.exc_info], "a traceback logged for an outage"
