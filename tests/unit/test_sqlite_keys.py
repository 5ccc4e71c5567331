"""The SQLite store's key index (portal/sqlite_keys.py) names candidates by a hash; the
real values decide. With every hash forced equal, each key matches every event's term,
and the answers must still be exactly the events whose values match."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from auditshipd.portal import sqlite_keys
from auditshipd.portal.query import EventFilter
from auditshipd.portal.store_sqlite import SQLiteEventStore


def _event(i: int, actor: str, targets: list[str], occurred_at: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": f"evt_{i}", "action": "user.login", "actor": {"email": actor},
        "targets": [{"email": t} for t in targets], "organization": {"slug": "acme"},
    }
    if occurred_at is not None:
        event["occurred_at"] = occurred_at
    return event


async def test_colliding_hashes_are_told_apart_by_the_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All keys hash alike: the actor, target and id lookups, the duplicate check of an
    event without a time, and the purge's removal of the terms still act on the real
    values only."""
    monkeypatch.setattr(sqlite_keys, "_crc32", lambda value: 7)
    monkeypatch.setenv("AUDITSHIPD_TSVECTOR_C", "0")  # the stored terms from that hash too
    store = SQLiteEventStore(tmp_path / "portal.sqlite3")
    await store.open()
    try:
        events = [
            _event(1, "alice@x.example", ["bob@x.example"], "2026-01-01T00:00:01.000Z"),
            _event(2, "bob@x.example", ["carol@x.example", "alice@x.example"], "2026-01-01T00:00:02.000Z"),
            _event(3, "carol@x.example", [], None),
        ]
        assert await store.insert_events(events) == 3
        # The event without a time again: its id is stored; another id is not.
        assert await store.insert_events([events[2], _event(4, "dave@x.example", [], None)]) == 1

        async def ids(**kwargs: str) -> list[str]:
            page = await store.query(EventFilter(**kwargs))
            return [e["id"] for e in page.events]

        assert await ids(actor="ALICE@x.example") == ["evt_1"]
        assert await ids(target="alice@x.example") == ["evt_2"]
        assert await ids(target="bob@x.example") == ["evt_1"]
        assert await ids(actor="bob@x.example", target="carol@x.example") == ["evt_2"]
        assert await ids(actor="bob@x.example", target="bob@x.example") == []
        assert await ids(target="dave@x.example") == []
        assert (await store.get("evt_2"))["id"] == "evt_2"
        assert await store.get("evt_9") is None
        assert await store.purge(dt.datetime(2026, 1, 1, 0, 0, 2, tzinfo=dt.timezone.utc)) == 1
        assert await ids(actor="alice@x.example") == []
        assert await ids(target="alice@x.example") == ["evt_2"]
    finally:
        await store.close()


async def test_a_match_drives_counts_with_action_or_organization_filters(tmp_path: Path) -> None:
    """A store without planner statistics (the sink never runs ANALYZE): a keyword or key
    match with an action or organization filter is scanned from the FTS5 match, not by
    walking the action index and probing the match per row (seconds on a large store)."""
    import sqlite3

    from auditshipd.portal.query import query_phrases
    from auditshipd.portal.sql import select_events

    store = SQLiteEventStore(tmp_path / "portal.sqlite3")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "portal.sqlite3")
    for f in (EventFilter(q="alpha", actions=("user.login",)),
              EventFilter(actor="a@x.example", actions=("user.login",)),
              EventFilter(q="alpha", organization="acme")):
        inner, params = select_events(f, query_phrases(f.q), None, "1", order=False)
        plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN SELECT count(*) FROM ({inner} LIMIT 10)", params)]
        assert not any("events_action" in p or "events_organization" in p for p in plan), (f, plan)
    conn.close()
