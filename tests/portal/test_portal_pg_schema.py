"""The PostgreSQL store's own concerns: migrations, the version check at open, monthly
partitions (created by concurrent writers, dropped by retention), many writers at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from portal_data import make_events
from tests.servers.postgres import create_schema

from auditshipd.portal.pg_schema import MIGRATIONS, SCHEMA_VERSION, SchemaError, migrate
from auditshipd.portal.pg_store import PostgresEventStore
from auditshipd.portal.query import EventFilter


async def _partitions(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass ORDER BY 1"
        )
    finally:
        await conn.close()
    return [r[0] for r in rows]


def _cli(tmp_path: Path, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "auditshipd.toml"
    config.write_text(
        f'[journal]\npath = "{tmp_path}/j/audit.jsonl"\nstate_dir = "{tmp_path}/state"\n'
        f'[portal]\ndatabase = "{database}"\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "auditshipd.cli", *args, "-c", str(config)],
        capture_output=True, text=True, timeout=120,
    )


async def test_open_refuses_a_database_without_the_schema(pg_database: str) -> None:
    """A store never runs on a schema it does not know: none yet -> says to migrate."""
    url = create_schema(pg_database)
    store = PostgresEventStore(url)
    with pytest.raises(SchemaError, match="auditshipd portal migrate"):
        await store.open()


async def test_open_refuses_an_older_and_a_newer_schema(pg_database: str) -> None:
    """The previous version asks for a migration; a newer one asks for an upgrade."""
    url = create_schema(pg_database)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, target=SCHEMA_VERSION - 1)
        with pytest.raises(SchemaError, match="migrate"):
            await PostgresEventStore(url).open()
        await migrate(conn)
        await conn.execute(
            "INSERT INTO schema_migrations(version, description) VALUES ($1, 'future')",
            SCHEMA_VERSION + 1,
        )
        with pytest.raises(SchemaError, match="newer"):
            await PostgresEventStore(url).open()
    finally:
        await conn.close()


def test_migrate_command_from_empty_and_from_the_previous_version(
    pg_database: str, tmp_path: Path
) -> None:
    """`auditshipd portal migrate` builds the schema on an empty database, brings the
    previous version up to date keeping its events, and is a no-op the second time."""
    empty = create_schema(pg_database)
    done = _cli(tmp_path, empty, "portal", "migrate")
    assert done.returncode == 0, done.stderr
    assert "applied migrations " + ", ".join(str(m.version) for m in MIGRATIONS) in done.stdout
    assert "postgres@" not in done.stdout + done.stderr  # no user/password in output
    again = _cli(tmp_path, empty, "portal", "migrate")
    assert again.returncode == 0 and "nothing to do" in again.stdout

    previous = create_schema(pg_database)

    async def at_previous_version() -> None:
        conn = await asyncpg.connect(previous)
        try:
            await migrate(conn, target=SCHEMA_VERSION - 1)
            # An event written by the previous version stays readable after the upgrade.
            await conn.execute(
                "CREATE TABLE events_p202601 PARTITION OF events FOR VALUES"
                " FROM ('2026-01-01T00:00:00Z') TO ('2026-02-01T00:00:00Z')"
            )
            await conn.execute(
                "INSERT INTO events(id, occurred_at, action, actor, search, body) VALUES"
                " ('old-1', '2026-01-05T00:00:00Z', 'user.login', 'a@b', 'old'::tsvector,"
                " '{\"id\":\"old-1\",\"action\":\"user.login\",\"occurred_at\":\"2026-01-05T00:00:00Z\"}')"
            )
        finally:
            await conn.close()

    asyncio.run(at_previous_version())
    done = _cli(tmp_path, previous, "portal", "migrate")
    assert done.returncode == 0, done.stderr
    assert f"applied migrations {SCHEMA_VERSION}" in done.stdout

    async def read_back() -> None:
        store = PostgresEventStore(previous)
        await store.open()
        try:
            assert (await store.get("old-1"))["action"] == "user.login"
            assert await store.count(EventFilter(q="old")) == 1
        finally:
            await store.close()

    asyncio.run(read_back())


async def test_concurrent_migrations_apply_each_step_once(pg_database: str) -> None:
    """Several hosts running migrate at once: every migration applied exactly once."""
    url = create_schema(pg_database)
    conns = [await asyncpg.connect(url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(v for r in results for v in r)
        assert applied == [m.version for m in MIGRATIONS]
    finally:
        for c in conns:
            await c.close()


async def test_many_writers_store_each_event_once(pg_url: str) -> None:
    """Four stores (four hosts) write overlapping batches at once, months created on
    demand by all of them: every event stored exactly once, nothing refused."""
    events = make_events(8000, seed=11, span_days=120)
    stores = [PostgresEventStore(pg_url) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        async def ship(store: PostgresEventStore, offset: int) -> int:
            n = 0
            for i in range(offset * 500, len(events), 400):
                n += await store.insert_events(events[i : i + 400])
            return n

        inserted = await asyncio.gather(*(ship(s, k) for k, s in enumerate(stores)))
        assert sum(inserted) == len(events)
        assert await stores[0].count() == len(events)
        conn = await asyncpg.connect(pg_url)
        try:
            dupes = await conn.fetchval(
                "SELECT count(*) FROM (SELECT id FROM events GROUP BY id HAVING count(*) > 1) d"
            )
        finally:
            await conn.close()
        assert dupes == 0
        assert await _partitions(pg_url) == [
            "events_p202601", "events_p202602", "events_p202603", "events_p202604"
        ]
    finally:
        for s in stores:
            await s.close()


async def test_events_without_a_time_shipped_by_two_hosts_at_once_are_stored_once(pg_url: str) -> None:
    """Events without a usable time are keyed by their arrival: two hosts storing the
    same ones at the same moment still store each once."""
    a, b = PostgresEventStore(pg_url), PostgresEventStore(pg_url)
    await a.open()
    await b.open()
    try:
        for r in range(10):
            batch = [{**e, "id": f"evt_timeless_{r}_{i}"} for i, e in enumerate(make_events(200, seed=r))]
            for e in batch:
                del e["occurred_at"]
            await asyncio.gather(a.insert_events(batch), b.insert_events(batch))
        assert await a.count() == 2000
    finally:
        await a.close()
        await b.close()


async def test_retention_drops_whole_months_and_deletes_the_rest(pg_url: str) -> None:
    """Months entirely before the cutoff are dropped (counts per organization still
    reported); a month that an organization's longer retention still needs stays, and
    only the expired events in it are deleted."""
    events = make_events(3000, seed=12, span_days=90)  # Jan..Mar 2026
    store = PostgresEventStore(pg_url)
    await store.open()
    try:
        await store.insert_events(events)
        assert len(await _partitions(pg_url)) == 3
        cutoff = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
        expected: dict[str, int] = {}
        for e in events:
            if e["occurred_at"] < "2026-03":
                slug = e["organization"]["slug"]
                expected[slug] = expected.get(slug, 0) + 1
        # globex keeps its events forever: every month holds some, so each month stays
        # and only the other organizations' expired events are deleted from it.
        globex_old = expected.pop("globex")
        result = await store.purge_expired(cutoff, {"globex": None})
        assert result.by_organization == expected
        assert len(await _partitions(pg_url)) == 3
        assert await store.count(EventFilter(organization="globex", until=cutoff)) == globex_old
        assert await store.count(EventFilter(until=cutoff)) == globex_old
        # Without overrides, the old months go as whole partitions, counted all the same.
        result = await store.purge_expired(cutoff, {})
        assert result.by_organization == {"globex": globex_old}
        assert await _partitions(pg_url) == ["events_p202603"]
        assert await store.count() == sum(e["occurred_at"] >= "2026-03" for e in events)
    finally:
        await store.close()


async def test_hosts_purging_and_writing_the_same_months(pg_url: str) -> None:
    """Two hosts purge at once: each month is dropped once, neither fails. A host that
    knew a month another host dropped writes into it again (the month is created anew)
    instead of refusing the batch."""
    events = make_events(600, seed=5, span_days=90)  # Jan..Mar 2026
    a, b = PostgresEventStore(pg_url), PostgresEventStore(pg_url)
    await a.open()
    await b.open()
    try:
        await b.insert_events(events)  # b knows the three months
        cutoff = dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc)
        results = await asyncio.gather(a.purge_expired(cutoff, {}), b.purge_expired(cutoff, {}))
        assert sum(r.total for r in results) == 600
        assert await _partitions(pg_url) == []
        await b.insert_events(events[:10])  # b creates (and knows) those months again
        await a.purge_expired(cutoff, {})  # a drops them
        assert await b.insert_events(events[:10]) == 10
        assert await a.count() == 10
    finally:
        await a.close()
        await b.close()
