"""How the PostgreSQL store writes a batch: binary COPY of binary keyword vectors, the
careful path for batches that meet stored events, and the action list."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from portal_data import make_events

from auditshipd.portal import _tsvector_c, pg_ingest
from auditshipd.portal.pg_schema import SCHEMA_VERSION, migrate
from auditshipd.portal.pg_sql import _lexemes, search_vector
from auditshipd.portal.pg_store import PostgresEventStore
from auditshipd.portal.query import EventFilter


def _text_literal(text: str) -> str:
    """The tsvector literal of the same tokens and positions, for the server's text input."""
    return " ".join(f"'{t.decode()}':{min(i, 16383)}" for i, t in enumerate(_lexemes(text), 1))


VECTOR_TEXTS = [
    "",
    "\n\"evt_1\"\n\"user.login\"\n\"alice.smith@acme.example\"\n\"alice smith\"\n42\n",
    "Zoë Ångström café CAFÉ naïve 東京 Straße ﬁle",
    " ".join(["user"] * 300 + ["admin"] * 3),  # more positions than a lexeme keeps
    " ".join(f"w{i % 50}" for i in range(17000)),  # positions beyond 16383 share the last
    "x" * 300 + " " + "é" * 300 + " short",
    # words longer than a lexeme holds (2,047 bytes): cut at a character, with a hash
    "x" * 2030 + " " + "x" * 2031 + " " + "é" * 1100 + " " + "\U0001d400" * 600 + " short",
    # accents decomposed, the dotted capital I, Hangul, final sigma, private use
    "e\u0301cole \u0130stanbul \ud55c\uad6d \u0391\u0398\u0397\u039d\u0391\u03a3 a\ue000b",
    "UPPER lower MiXeD 0123 a1b2",
]


@pytest.mark.parametrize("text", VECTOR_TEXTS)
async def test_binary_vector_is_what_the_server_makes_of_the_text_form(
    pg_database: str, text: str
) -> None:
    """The vector built by the writer equals the server's parse of the literal listing
    every token at its position: same lexemes, same positions kept."""
    conn = await asyncpg.connect(pg_database)
    try:
        await conn.set_type_codec(
            "tsvector", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary"
        )
        sent = await conn.fetchval("SELECT $1::tsvector::text", search_vector(text))
        parsed = await conn.fetchval("SELECT $1::text::tsvector::text", _text_literal(text))
    finally:
        await conn.close()
    assert sent == parsed
    assert (sent != "") == bool(_lexemes(text))


@pytest.mark.parametrize("text", VECTOR_TEXTS)
async def test_binary_vector_is_already_in_the_servers_order(pg_database: str, text: str) -> None:
    """The server's binary form of the vector it received is the vector sent, byte for
    byte: lexemes in its order, so neither its input nor the keyword index sorts them."""
    conn = await asyncpg.connect(pg_database)
    try:
        await conn.set_type_codec(
            "tsvector", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary"
        )
        vector = search_vector(text)
        assert await conn.fetchval("SELECT tsvectorsend($1::tsvector)", vector) == vector
        lines = [json.dumps(e, separators=(",", ":")).encode() for e in make_events(30, seed=5)]
        for fast in _tsvector_c.vectors(lines):
            assert fast is not None
            assert await conn.fetchval("SELECT tsvectorsend($1::tsvector)", fast) == fast
    finally:
        await conn.close()


def _lines(events: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e).encode() for e in events]


async def _ids(store: PostgresEventStore, **filters: Any) -> list[str]:
    page = await store.query(EventFilter(**filters), None, 500)
    return [e["id"] for e in page.events]


async def test_a_batch_meeting_stored_events_stores_only_the_new_ones(pg_url: str) -> None:
    """A redelivered batch with new events in it stores the new ones in batch order; the
    next batches take the careful path for a while, then COPY again."""
    events = make_events(60, seed=3)
    for i, e in enumerate(events):  # one microsecond: only insertion order tells them apart
        e["occurred_at"] = "2026-01-10T00:00:00.000000Z"
        e["id"] = f"evt_{i:03d}"
    store = PostgresEventStore(pg_url)
    await store.open()
    try:
        assert await store.insert_lines(_lines(events[:20])) == 20
        assert store._writer.careful == 0
        assert await store.insert_lines(_lines(events[10:40])) == 20
        assert store._writer.careful == pg_ingest.CAREFUL_BATCHES
        assert await store.insert_lines(_lines(events[30:50])) == 10
        assert store._writer.careful == pg_ingest.CAREFUL_BATCHES - 1
        store._writer.careful = 0
        assert await store.insert_lines(_lines(events[50:])) == 10
        assert store._writer.careful == 0
        assert await _ids(store) == [e["id"] for e in reversed(events)]
        assert await store.count() == 60
    finally:
        await store.close()


async def test_a_batch_chosen_as_a_deadlocks_victim_is_redone(pg_url: str) -> None:
    """Another host holds event X uncommitted while this writer's COPY of [Y, X] waits on
    it; the other then inserts Y, a deadlock the server breaks by failing this writer's
    COPY. The writer redoes the batch the careful way, which waits for the other host to
    commit: X and Y stored once each, nothing raised."""
    import asyncio

    from auditshipd.portal import pg_store

    events = make_events(2, seed=5)
    for i, e in enumerate(events):
        e["occurred_at"] = "2026-02-03T00:00:00.000000Z"
        e["id"] = f"evt_dl{i}"
    y, x = _lines(events)
    store = PostgresEventStore(pg_url)
    await store.open()
    pool = store._need_pool()
    try:
        async with pool.acquire() as other, pool.acquire() as mine, pool.acquire() as look:
            await other.execute("SET deadlock_timeout = '10s'")
            await mine.execute("SET deadlock_timeout = '100ms'")  # it detects: the victim
            batch = pg_ingest.batch_records([y, x])
            await store._ensure_partitions(mine, pg_store._month_starts(batch.records))

            def records(line: bytes) -> list[tuple[Any, ...]]:
                return pg_ingest.batch_records([line]).records

            held = other.transaction()
            await held.start()
            await pg_ingest.BatchWriter._copy(other, records(x))
            writer = pg_ingest.BatchWriter()
            writing = asyncio.create_task(writer.write(mine, batch))
            pid = mine.get_server_pid()
            for _ in range(500):  # until the writer waits on X
                if await look.fetchval("SELECT wait_event_type FROM pg_stat_activity"
                                       " WHERE pid = $1", pid) == "Lock":
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the writer never waited on the held event")
            crossing = asyncio.create_task(pg_ingest.BatchWriter._copy(other, records(y)))
            for _ in range(500):  # the writer, victim, redoes the batch and waits on Y
                if crossing.done() or writer.careful:
                    break
                await asyncio.sleep(0.01)
            await crossing
            await held.commit()
            assert await writing == 0
            assert writer.careful == pg_ingest.CAREFUL_BATCHES
        assert sorted(await _ids(store)) == ["evt_dl0", "evt_dl1"]
        assert await store.count() == 2
    finally:
        await store.close()


async def test_events_without_a_time_are_stored_once(pg_url: str) -> None:
    """An event without a usable time gets its arrival time: a redelivery, arriving
    later, is still recognised by its id."""
    events = [{"id": "evt_t1", "action": "user.login"},
              {"id": "evt_t2", "action": "user.login", "occurred_at": "not a time"},
              {"id": "evt_t3", "action": "user.login", "occurred_at": "2026-01-02T00:00:00Z"}]
    store = PostgresEventStore(pg_url)
    await store.open()
    try:
        assert await store.insert_lines(_lines(events)) == 3
        assert await store.insert_lines(_lines(events)) == 0
        assert await store.count() == 3
    finally:
        await store.close()


async def test_action_list_is_kept_by_every_path(pg_url: str) -> None:
    """Pairs first seen in a COPY, in a batch that met stored events, and by a second
    writer all reach the action list."""
    base = {"occurred_at": "2026-01-03T00:00:00Z", "organization": {"slug": "acme"}}
    first = [{**base, "id": "a1", "action": "user.login"},
             {**base, "id": "a2", "action": "user.logout", "organization": None}]
    again = [*first, {**base, "id": "a3", "action": "role.granted"}]
    other = [{**base, "id": "a4", "action": "sso.configured", "organization": {"slug": "beta"}}]
    one, two = PostgresEventStore(pg_url), PostgresEventStore(pg_url)
    await one.open()
    await two.open()
    try:
        assert await one.insert_lines(_lines(first)) == 2
        assert await one.insert_lines(_lines(again)) == 1
        assert await two.insert_lines(_lines([*other, *first])) == 1
        assert await one.actions() == ["role.granted", "sso.configured", "user.login", "user.logout"]
        assert await one.actions("acme") == ["role.granted", "user.login"]
        assert await one.actions("beta") == ["sso.configured"]
    finally:
        await one.close()
        await two.close()


async def test_nul_in_a_value_is_stored_as_a_replacement_character(pg_url: str) -> None:
    """PostgreSQL text holds no NUL: the values compared by filters carry U+FFFD, the
    body keeps the event as shipped."""
    event = {"id": "n\u00001", "occurred_at": "2026-01-04T00:00:00Z", "action": "a\u0000b",
             "actor": {"email": "x\u0000y@z"}, "targets": [{"email": "t\u0000@z"}]}
    store = PostgresEventStore(pg_url)
    await store.open()
    try:
        assert await store.insert_lines(_lines([event])) == 1
        assert await _ids(store, actor="x\u0000y@z") == ["n\u00001"]
        assert await _ids(store, target="t\u0000@z") == ["n\u00001"]
        assert await _ids(store, actions=("a\u0000b",)) == ["n\u00001"]
        assert (await store.get("n\u00001"))["action"] == "a\u0000b"
    finally:
        await store.close()


async def test_migration_5_gives_the_compared_columns_byte_order(pg_database: str) -> None:
    """After migration 5 the columns compared by equality use the "C" collation; the
    events stored before it are still found by every filter."""
    from tests.servers.postgres import create_schema

    url = create_schema(pg_database)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, target=4)
        await conn.execute("CREATE TABLE events_p202601 PARTITION OF events FOR VALUES"
                           " FROM ('2026-01-01T00:00:00Z') TO ('2026-02-01T00:00:00Z')")
        body = {"id": "old-1", "action": "user.login", "occurred_at": "2026-01-05T00:00:00Z",
                "organization": {"slug": "acme"}, "actor": {"email": "a@b"}}
        await conn.execute(
            "INSERT INTO events(id, occurred_at, action, actor, organization_slug, targets,"
            " search, body) VALUES ('old-1', '2026-01-05T00:00:00Z', 'user.login', 'a@b',"
            " 'acme', '{t@b}', '''old'':1'::tsvector, $1)", json.dumps(body))
        assert await migrate(conn) == [5] and SCHEMA_VERSION == 5
        collations = await conn.fetch(
            "SELECT a.attname, c.collname FROM pg_attribute a JOIN pg_collation c"
            " ON c.oid = a.attcollation WHERE a.attrelid = 'events_p202601'::regclass"
            " AND a.attname IN ('id', 'action', 'actor', 'organization_slug', 'targets')"
        )
    finally:
        await conn.close()
    assert {r[1] for r in collations} == {"C"} and len(collations) == 5
    store = PostgresEventStore(url)
    await store.open()
    try:
        for filters in ({"actor": "a@b"}, {"target": "t@b"}, {"actions": ("user.login",)},
                        {"organization": "acme"}, {"q": "old"}):
            assert await _ids(store, **filters) == ["old-1"], filters
        assert await store.insert_lines(_lines([body])) == 0
    finally:
        await store.close()
