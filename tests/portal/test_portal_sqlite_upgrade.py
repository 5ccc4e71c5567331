"""An SQLite store written by version 3 (id, actor and targets in B-trees keyed by their
values) opened by this version: migrated to version 4 with its events, which every
filter, get(), idempotent inserts and the purge then find as before. A new store is
created with larger pages than SQLite's default; an existing one keeps its own."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import msgspec
from portal_data import Oracle, make_events

from auditshipd.portal.event_rows import event_row
from auditshipd.portal.query import EventFilter, seq_base
from auditshipd.portal.sql import SCHEMA, SCHEMA_V2, SCHEMA_V3
from auditshipd.portal.sqlite_keys import actor_match, id_match, target_match
from auditshipd.portal.sqlite_schema import FTS5_AUTOMERGE, FTS5_LEAF_SLACK
from auditshipd.portal.store_sqlite import PAGE_SIZE, WAL_CHECKPOINT_BYTES, SQLiteEventStore


def _write_version_3(path: Path, lines: list[bytes]) -> None:
    """The tables and rows the version 3 store wrote for these lines."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA + SCHEMA_V2 + SCHEMA_V3)
    following: dict[int, int] = {}
    for r in map(event_row, lines):
        base = seq_base(r.when)
        seq = following.get(base, base)
        following[base] = seq + 1
        conn.execute(
            "INSERT INTO events(seq, id, occurred_at, action, actor, organization_slug, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, r.id, r.occurred_at, r.action, r.actor, r.organization, r.body),
        )
        conn.execute("INSERT INTO events_fts(rowid, text) VALUES (?, ?)", (seq, r.text))
        conn.executemany("INSERT INTO event_targets(target, seq) VALUES (?, ?)",
                         [(t, seq) for t in r.targets])
        conn.execute("INSERT OR IGNORE INTO event_actions(organization_slug, action) VALUES (?, ?)",
                     (r.organization or "", r.action))
    conn.commit()
    conn.close()


async def _all(store: SQLiteEventStore, f: EventFilter) -> list[str]:
    ids: list[str] = []
    async for events in store.iter_export(f, 500):
        ids.extend(e["id"] for e in events)
    return ids


async def test_version_3_store_is_migrated_with_its_events(tmp_path: Path) -> None:
    """2,000 events stored by version 3 are found after the upgrade by every filter
    (actor, target, keyword, both keys at once), by id, not stored again when delivered
    again, and purged from every index; the old key tables are gone."""
    events = make_events(2000, seed=11)
    path = tmp_path / "v3.sqlite3"
    _write_version_3(path, [msgspec.json.encode(e) for e in events])
    oracle = Oracle(events)
    some = events[1234]
    actor = some["actor"].get("email") or some["actor"]["name"]
    target = next(t["email"] for e in events for t in e["targets"])
    store = SQLiteEventStore(path)
    await store.open()
    try:
        for kwargs in ({}, {"actor": actor}, {"target": target}, {"q": "alice"},
                       {"q": "alice", "target": target}, {"actor": actor, "target": target},
                       {"actor": actor.upper(), "actions": (some["action"],)}):
            assert await _all(store, EventFilter(**kwargs)) == oracle(**kwargs), kwargs
        assert (await store.get(some["id"]))["id"] == some["id"]
        assert await store.insert_events(events[:700]) == 0
        new = make_events(10, seed=12, start=5000)
        assert await store.insert_events(new) == 10
        assert await store.purge(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)) == 2010
        assert await _all(store, EventFilter(target=target)) == []
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
        # An existing store keeps the pages it was created with.
        assert conn.execute("PRAGMA page_size").fetchone() == (4096,)
        # Its new key index writes leaves that fit those pages; the keyword index was
        # created with FTS5's own default, which does too.
        assert conn.execute("SELECT v FROM events_keys_config WHERE k = 'pgsz'").fetchone() == (4050,)
        assert conn.execute("SELECT v FROM events_fts_config WHERE k = 'pgsz'").fetchone() is None
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "event_targets" not in tables and "events_actor" not in tables
        # The purge gave back every key it had indexed: none is left to match.
        for match in (id_match(some["id"]), actor_match(actor.lower()), target_match(target.lower())):
            assert conn.execute("SELECT rowid FROM events_keys WHERE events_keys MATCH ?",
                                (match,)).fetchall() == [], match
    finally:
        conn.close()


async def test_opener_waits_for_another_openers_upgrade(tmp_path: Path) -> None:
    """A version 3 store held by another opener's upgrade (a write lock on it) for longer
    than the busy timeout: opening it waits for the upgrade instead of failing, then
    finds the store usable."""
    import asyncio
    import threading

    events = make_events(20, seed=13)
    path = tmp_path / "v3.sqlite3"
    _write_version_3(path, [msgspec.json.encode(e) for e in events])
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.5, lambda: holder.execute("ROLLBACK"))
    release.start()
    store = SQLiteEventStore(path, busy_timeout=0.3)
    try:
        await asyncio.wait_for(store.open(), 30)
        assert await _all(store, EventFilter()) == Oracle(events)()
    finally:
        release.join()
        holder.close()
        await store.close()


async def test_new_store_gets_large_pages_and_a_wal_bounded_in_bytes(tmp_path: Path) -> None:
    """A new store is created with PAGE_SIZE pages (not SQLite's 4 KiB) and FTS5 leaves
    that fill them, and every connection checkpoints the WAL at the same size in bytes
    whatever its pages."""
    assert PAGE_SIZE != 4096
    store = SQLiteEventStore(tmp_path / "new.sqlite3")
    await store.open()
    try:
        assert await store.insert_events(make_events(2000, seed=14)) == 2000
        conn = store._conn()
        assert conn.execute("PRAGMA page_size").fetchone() == (PAGE_SIZE,)
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (WAL_CHECKPOINT_BYTES // PAGE_SIZE,)
        # The writer syncs every commit (FULL): an acknowledged batch survives a power loss.
        assert await store._write(
            lambda: store._conn().execute("PRAGMA synchronous").fetchone()) == (2,)
        # Both FTS5 indexes write leaves that fill one of those pages, and merge their
        # segments FTS5_AUTOMERGE at a time.
        for table in ("events_fts", "events_keys"):
            assert conn.execute(f"SELECT v FROM {table}_config WHERE k = 'pgsz'").fetchone() == (
                PAGE_SIZE - FTS5_LEAF_SLACK,), table
            assert conn.execute(f"SELECT v FROM {table}_config WHERE k = 'automerge'").fetchone() == (
                FTS5_AUTOMERGE,), table
        # and the leaves it wrote are that large: fewer blocks than 4 KiB leaves would need
        assert conn.execute("SELECT max(length(block)) FROM events_fts_data").fetchone()[0] > 4096
    finally:
        await store.close()
    old = tmp_path / "old.sqlite3"
    _write_version_3(old, [msgspec.json.encode(e) for e in make_events(5, seed=15)])
    store = SQLiteEventStore(old)
    await store.open()
    try:
        conn = store._conn()
        assert conn.execute("PRAGMA page_size").fetchone() == (4096,)
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (WAL_CHECKPOINT_BYTES // 4096,)
    finally:
        await store.close()
