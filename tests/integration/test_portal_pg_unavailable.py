"""Server conditions a retry outlives, on the real PostgreSQL server: the database turns
read-only (a standby during a failover) or the daemon's role may not log in for a while
(a rotated password, a locked role). The portal sink keeps the batches in the journal and
retries them; nothing is dead-lettered, every event is stored once the condition lifts."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from tests.conftest import Workspace
from tests.servers.postgres import BASE_URL, _psql, create_database, drop_database, with_database

from auditshipd.delivery.deadletters import DeadLetterFile
from auditshipd.journal.writer import AuditJournal
from auditshipd.portal.pg_schema import migrate

pytestmark = pytest.mark.integration


def _host(root: Path, database: str) -> Workspace:
    ws = Workspace(root)
    ws.write_config(f"""
        [[sinks]]
        name = "portal"
        type = "portal"
        database = "{database}"
        retention_days = 0
        [sinks.batch]
        max_events = 50
        timeout = 0.1
        [sinks.retry]
        initial_backoff = 0.1
        max_backoff = 0.5
        attempt_timeout = 10
        """)
    return ws


def _write(ws: Workspace, prefix: str, start: int, stop: int) -> set[str]:
    journal = AuditJournal(ws.journal)
    ids = set()
    for i in range(start, stop):
        eid = f"{prefix}-{i:04d}"
        assert journal.record("user.login", id=eid, actor={"type": "user", "email": "a@acme.example"},
                              occurred_at=f"2026-06-01T00:00:{i % 60:02d}Z")
        ids.add(eid)
    journal.close()
    return ids


def _stored(url: str) -> set[str]:
    async def read() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            return {r[0] for r in await conn.fetch("SELECT id FROM events")}
        finally:
            await conn.close()

    try:
        return asyncio.run(read())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return set()


def _wait(check, timeout: float, what: str, log) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}:\n{log()[-4000:].decode(errors='replace')}"
        time.sleep(0.1)


def _terminate_backends(database: str, role: str | None = None) -> None:
    """Ends the daemon's connections: the pool's next ones see the new condition."""
    who = f"usename = '{role}'" if role else "application_name = 'auditshipd'"
    _psql(BASE_URL, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    f" WHERE datname = '{database}' AND {who}")


def _migrate(url: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
def own_database() -> Iterator[str]:
    """A migrated database of this test's own (its settings change)."""
    url = create_database("auditshipd_unavail")
    try:
        _migrate(url)
        yield url
    finally:
        drop_database(url)


def test_a_read_only_database_delays_batches_without_dead_letters(
    tmp_path: Path, own_database: str
) -> None:
    name = urlsplit(own_database).path.lstrip("/")
    ws = _host(tmp_path, own_database)
    ids = _write(ws, "ro", 0, 50)
    with ws.daemon() as daemon:
        daemon.wait_started()
        _wait(lambda: ids <= _stored(own_database), 60, "first events stored", daemon.log)
        _psql(BASE_URL, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        try:
            _terminate_backends(name)
            ids |= _write(ws, "ro", 50, 200)
            _wait(lambda: b"read-only transaction" in daemon.log(), 60,
                  "the sink meets the read-only database", daemon.log)
            time.sleep(2)  # several retries meet it
        finally:
            _psql(BASE_URL, f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        _terminate_backends(name)
        ids |= _write(ws, "ro", 200, 220)
        _wait(lambda: ids <= _stored(own_database), 90, "every event stored", daemon.log)
    log = daemon.log().decode(errors="replace")
    assert DeadLetterFile(ws.state, "portal").count() == (0, 0), log[-4000:]
    assert "dead-lettered" not in log
    assert "portal database unavailable: ReadOnlySQLTransactionError" in log, log[-4000:]
    assert "refused the batch" not in log


def test_a_role_that_may_not_log_in_delays_batches_without_dead_letters(tmp_path: Path) -> None:
    role = f"auditshipd_writer_{os.getpid()}_{secrets.token_hex(3)}"
    name = f"auditshipd_nologin_{os.getpid()}_{secrets.token_hex(3)}"
    _psql(BASE_URL, f'CREATE ROLE "{role}" LOGIN')
    _psql(BASE_URL, f'CREATE DATABASE "{name}" OWNER "{role}"')
    base = urlsplit(with_database(BASE_URL, name))
    url = urlunsplit((base.scheme, f"{role}@{base.netloc.rpartition('@')[2]}", base.path, "", ""))
    try:
        _migrate(url)
        ws = _host(tmp_path, url)
        ids = _write(ws, "nl", 0, 50)
        with ws.daemon() as daemon:
            daemon.wait_started()
            _wait(lambda: ids <= _stored(url), 60, "first events stored", daemon.log)
            _psql(BASE_URL, f'ALTER ROLE "{role}" NOLOGIN')
            try:
                _terminate_backends(name, role)
                ids |= _write(ws, "nl", 50, 200)
                _wait(lambda: b"is not permitted to log in" in daemon.log(), 60,
                      "the sink meets the refused login", daemon.log)
                time.sleep(2)
            finally:
                _psql(BASE_URL, f'ALTER ROLE "{role}" LOGIN')
            ids |= _write(ws, "nl", 200, 220)
            _wait(lambda: ids <= _stored(url), 90, "every event stored", daemon.log)
        log = daemon.log().decode(errors="replace")
        assert DeadLetterFile(ws.state, "portal").count() == (0, 0), log[-4000:]
        assert "dead-lettered" not in log
        assert "portal database unavailable: InvalidAuthorizationSpecificationError" in log, log[-4000:]
        assert "Traceback" not in log, log[-6000:]
    finally:
        drop_database(with_database(BASE_URL, name))
        _psql(BASE_URL, f'DROP ROLE IF EXISTS "{role}"')
