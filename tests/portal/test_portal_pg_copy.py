"""The binary COPY input written in C (portal/_pgcopy_c.c) stores exactly what asyncpg's
copy_records_to_table stores for the same records, and a batch through the store is the
same with the extension and without it."""

from __future__ import annotations

import datetime as dt
import json

import asyncpg
import pytest
from auditshipd.portal._pgcopy_c import rows as c_rows
from portal_data import make_events

from auditshipd.portal import pg_ingest
from auditshipd.portal.pg_sql import PG_EPOCH, search_vector
from auditshipd.portal.pg_store import PostgresEventStore, _init_connection

UTC = dt.timezone.utc
_TABLE = """CREATE TEMPORARY TABLE {name} (n serial, id text, occurred_at timestamptz,
    action text, actor text, organization_slug text, targets text[] COLLATE "C",
    search tsvector, body text)"""
RECORDS = [
    ("evt_1", dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "user.login", "ann@x.example",
     "acme", ["bob@x.example", "carol"], search_vector("evt 1 user login"), '{"id":"evt_1"}'),
    ("é東\ufffd", dt.datetime(1, 1, 1, tzinfo=UTC), "", "", None, [], search_vector(""), "{}"),
    ("z", dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "a" * 5000, "x", "",
     ["", "ß", "t" * 3000], search_vector("Zoë café " * 50), '{"note":"' + "w " * 20000 + '"}'),
    ("offset", dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=-5))), "b", "c",
     "org", ["one"], search_vector("x"), "[]"),
]


async def _stored(conn: asyncpg.Connection, table: str) -> list[tuple[object, ...]]:
    rows = await conn.fetch(
        f"SELECT id, occurred_at::text, action, actor, organization_slug, targets::text,"
        f" search::text, body FROM {table} ORDER BY n")
    return [tuple(r) for r in rows]


async def test_c_copy_stores_what_asyncpg_stores(pg_database: str) -> None:
    """Text outside ASCII, empty strings and arrays, a NULL organization, long values, the
    first and last representable instants and a time with an offset: the rows stored
    from the C stream equal those asyncpg's encoder stores, column by column."""
    conn = await asyncpg.connect(pg_database)
    try:
        await _init_connection(conn)
        await conn.execute("SET TIME ZONE 'UTC'")
        for name in ("by_c", "by_asyncpg"):
            await conn.execute(_TABLE.format(name=name))
        columns = pg_ingest.COLUMNS
        data = memoryview(c_rows(list(RECORDS), PG_EPOCH))
        status = await conn.copy_to_table("by_c", source=data, columns=columns, format="binary")
        assert status == f"COPY {len(RECORDS)}"
        await conn.copy_records_to_table("by_asyncpg", records=RECORDS, columns=columns)
        by_c = await _stored(conn, "by_c")
        assert by_c == await _stored(conn, "by_asyncpg")
        assert by_c[1][4] is None and by_c[1][5] == "{}" and by_c[1][1] == "0001-01-01 00:00:00+00"
    finally:
        await conn.close()


async def test_store_batches_are_the_same_with_and_without_the_extension(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same events through the store with the C COPY writer and with asyncpg's
    (AUDITSHIPD_PGCOPY_C=0) are stored alike: every column of every event."""
    events = make_events(300, seed=11)
    lines = [json.dumps(e).encode() for e in events]
    store = PostgresEventStore(pg_url)
    await store.open()
    try:
        assert pg_ingest.copy_c() is not None
        assert await store.insert_lines(lines[:150]) == 150
        monkeypatch.setenv("AUDITSHIPD_PGCOPY_C", "0")
        assert pg_ingest.copy_c() is None
        assert await store.insert_lines(lines[150:]) == 150
        async with store.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, occurred_at, action, actor, organization_slug, targets::text,"
                " search::text, body FROM events")
    finally:
        await store.close()
    got = {r[0]: tuple(r) for r in rows}
    assert len(got) == 300
    # the same event written each way: the stored columns do not depend on the writer
    again = PostgresEventStore(pg_url)
    await again.open()
    try:
        async with again.pool.acquire() as conn:
            await conn.execute("DELETE FROM events")
        monkeypatch.delenv("AUDITSHIPD_PGCOPY_C")
        assert await again.insert_lines(lines[150:]) == 150
        monkeypatch.setenv("AUDITSHIPD_PGCOPY_C", "0")
        assert await again.insert_lines(lines[:150]) == 150
        async with again.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, occurred_at, action, actor, organization_slug, targets::text,"
                " search::text, body FROM events")
    finally:
        await again.close()
    assert {r[0]: tuple(r) for r in rows} == got
