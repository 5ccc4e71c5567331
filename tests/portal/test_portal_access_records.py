"""The portal's own access records (audit_log.viewed / .exported / .purged) do not bury the
customer's events: left out of lists and searches unless asked for, never keyword-indexed,
and a view is recorded once per session or token and filters. On both backends."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from portal_data import ORGS, make_events
from portal_env import PortalEnv, make_config

from auditshipd.portal.query import EventFilter
from auditshipd.portal.store import EventStore

ACCESS = ("audit_log.viewed", "audit_log.exported", "audit_log.purged")


def _access_events(n: int) -> list[dict[str, Any]]:
    """Access records newer than every customer event, naming a word no customer event has."""
    start = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    return [{
        "id": f"acc_{i}",
        "action": ACCESS[i % 3],
        "occurred_at": (start + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "actor": {"type": "portal_token", "name": "root-admin", "role": "admin"},
        "targets": [{"type": "audit_log", "name": "portal"}],
        "metadata": {"view": "search", "filters": {"q": "zanzibar alice"}},
    } for i in range(n)]


async def _ids(store: EventStore, f: EventFilter) -> list[str]:
    page = await store.query(f, None, 1000)
    return [e["id"] for e in page.events]


async def test_access_records_are_hidden_unless_asked_for(portal_store: EventStore) -> None:
    """The default list, count and search leave access records out; include_access or an
    audit_log.* action filter shows them."""
    customer = make_events(300)
    await portal_store.insert_events(customer + _access_events(30))
    default = await _ids(portal_store, EventFilter())
    assert len(default) == 300 and not any(i.startswith("acc_") for i in default)
    assert await portal_store.count(EventFilter()) == 300
    assert await portal_store.count_up_to(EventFilter(), 10_000) == 300
    everything = await _ids(portal_store, EventFilter(include_access=True))
    assert len(everything) == 330 and everything[:30] == [f"acc_{i}" for i in reversed(range(30))]
    viewed = await _ids(portal_store, EventFilter(actions=("audit_log.viewed",)))
    assert viewed == [f"acc_{i}" for i in reversed(range(0, 30, 3))]
    mixed = await _ids(portal_store, EventFilter(actions=("audit_log.purged", customer[0]["action"])))
    assert {i for i in mixed if i.startswith("acc_")} == {f"acc_{i}" for i in range(2, 30, 3)}
    assert "audit_log.viewed" in await portal_store.actions()


async def test_access_records_are_not_keyword_indexed(portal_store: EventStore) -> None:
    """A word that only access records hold finds nothing, even with include_access or an
    audit_log.* action; the customer's events are still found by their words."""
    customer = make_events(200)
    await portal_store.insert_events(customer + _access_events(9))
    for f in (EventFilter(q="zanzibar"), EventFilter(q="zanzibar", include_access=True),
              EventFilter(q="zanzibar", actions=ACCESS), EventFilter(q="portal_token", include_access=True)):
        assert await _ids(portal_store, f) == [], f
    alice = await _ids(portal_store, EventFilter(q="alice", include_access=True))
    assert alice and not any(i.startswith("acc_") for i in alice)


async def test_purging_access_records_keeps_the_index_whole(portal_store: EventStore) -> None:
    """Access records (never indexed) and customer events purge together; the keyword index
    still answers for what is left."""
    customer = make_events(100)
    await portal_store.insert_events(customer + _access_events(12))
    purged = await portal_store.purge(dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))
    assert purged == 112
    assert await portal_store.count(EventFilter(include_access=True)) == 0
    await portal_store.insert_events(make_events(50, start=1000))
    assert await portal_store.count(EventFilter(q="alice")) == await portal_store.count(
        EventFilter(q="alice", include_access=True)) > 0


async def _get(http: Any, url: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
    async with http.get(url, params=params, headers=headers or {}) as r:
        body = await r.text()
        assert r.status == 200, body
        return json.loads(body) if r.content_type == "application/json" else body


async def _fresh_portal(tmp_path: Path, database: str, name: str = "p") -> Any:
    from auditshipd.portal import start_portal

    root = tmp_path / name
    config = make_config(root, database)
    server = await start_portal(config, port=0)
    return server, Path(config.journal.path)


async def test_api_filter_and_openapi(tmp_path: Path, portal_database: str, http: Any) -> None:
    """/api/events leaves access records out; include_access=true shows them; a bad value
    is a 400 naming include_access; the OpenAPI document describes the parameter."""
    from auditshipd.portal.backend import event_store

    store = event_store(portal_database)
    await store.open()
    try:
        await store.insert_events(make_events(40) + _access_events(6))
    finally:
        await store.close()
    server, journal = await _fresh_portal(tmp_path, portal_database)
    try:
        env = await PortalEnv.start(server, journal)
        h = env.auth(env.admin)
        plain = await _get(http, f"{env.url}/api/events", h, limit="100")
        assert len(plain["data"]) == 40 and plain["total"]["value"] == 40
        both = await _get(http, f"{env.url}/api/events", h, limit="100", include_access="true")
        assert len(both["data"]) == 46 and both["data"][0]["id"] == "acc_5"
        async with http.get(f"{env.url}/api/events", params={"include_access": "maybe"}, headers=h) as r:
            assert r.status == 400 and (await r.json())["param"] == "include_access"
        exported = await _get(http, f"{env.url}/api/export", h, format="jsonl")
        assert len(exported.splitlines()) == 40
        exported = await _get(http, f"{env.url}/api/export", h, format="jsonl", include_access="1")
        assert len(exported.splitlines()) == 46
        doc = await _get(http, f"{env.url}/api/openapi.json")
        for path in ("/api/events", "/api/export"):
            params = {p["name"]: p for p in doc["paths"][path]["get"]["parameters"]}
            assert params["include_access"]["schema"]["type"] == "boolean"
    finally:
        await server.close()


def _records(journal: Path, action: str, organization: str | None = None) -> list[dict[str, Any]]:
    """The ``action`` records in the operators' log (no organization), or in
    ``organization``'s."""
    if not journal.exists():
        return []
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    return [e for e in events if e["action"] == action
            and (e.get("organization") or {}).get("slug") == organization]


def _views(journal: Path) -> list[dict[str, Any]]:
    return _records(journal, "audit_log.viewed")


async def test_a_view_is_recorded_once_per_token_and_filters_across_replicas(
    tmp_path: Path, portal_database: str, http: Any
) -> None:
    """Reloading, paging and the same filters on another replica add no record; other
    filters, another token or an event view add one each; exports are always recorded."""
    from auditshipd.portal.backend import event_store

    store = event_store(portal_database)
    await store.open()
    try:
        await store.insert_events(make_events(120))
    finally:
        await store.close()
    one, journal_one = await _fresh_portal(tmp_path, portal_database, "one")
    two, journal_two = await _fresh_portal(tmp_path, portal_database, "two")
    try:
        env = await PortalEnv.start(one, journal_one)
        h = env.auth(env.admin)
        first = await _get(http, f"{one.url}/api/events", h, q="alice", limit="2")
        await _get(http, f"{one.url}/api/events", h, q="alice", limit="2")
        await _get(http, f"{one.url}/api/events", h, q="alice", limit="2", cursor=first["next_cursor"])
        await _get(http, f"{two.url}/api/events", h, q="alice", limit="2")
        assert len(_views(journal_one)) == 1 and _views(journal_two) == []
        await _get(http, f"{two.url}/api/events", h, q="bob")
        await _get(http, f"{one.url}/api/events", env.auth(env.viewer), q="alice")
        event_id = first["data"][0]["id"]
        for url in (one.url, two.url, one.url):
            await _get(http, f"{url}/api/events/{event_id}", h)
        views = _views(journal_one) + _views(journal_two)
        assert len(views) == 4
        assert sorted(json.dumps(v["metadata"].get("filters", v["metadata"].get("event"))) for v in views) == sorted(
            [json.dumps({"q": "alice"}), json.dumps({"q": "bob"}), json.dumps({"q": "alice"}), json.dumps(event_id)])
        for _ in range(3):
            await _get(http, f"{one.url}/api/export", h, format="csv", q="alice")
        assert len(_records(journal_one, "audit_log.exported")) == 3
    finally:
        await one.close()
        await two.close()


async def test_a_page_view_is_recorded_once_per_session(tmp_path: Path, portal_database: str, http: Any) -> None:
    """In a browser session, the events page with the same filters is recorded once however
    often it is loaded; the checkbox keeps its state and the page's links carry it; a new
    session's view is recorded again."""
    import re

    from auditshipd.portal.backend import event_store

    store = event_store(portal_database)
    await store.open()
    try:
        await store.insert_events(make_events(120) + _access_events(3))
    finally:
        await store.close()
    server, journal = await _fresh_portal(tmp_path, portal_database)
    try:
        env = await PortalEnv.start(server, journal)

        async def login() -> None:
            http.cookie_jar.clear()
            form = await _get(http, f"{env.url}/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
            async with http.post(f"{env.url}/login", data={"csrf": csrf, "token": env.admin}) as r:
                assert r.status == 200 and "/events" in str(r.url)

        await login()
        for _ in range(3):
            page = await _get(http, f"{env.url}/events", include_access="true")
        assert 'id="include-access" checked' in page and "acc_2" in page
        assert "include_access=true" in page  # export and paging links keep the filter
        plain = await _get(http, f"{env.url}/events")
        assert 'id="include-access" checked' not in plain and "acc_2" not in plain
        assert len(_views(journal)) == 2
        # Each organization on the pages seen is told once per session and filters (two).
        told = {org: len(_records(journal, "audit_log.viewed", org)) for org in ORGS}
        assert told == {org: 2 for org in ORGS}
        await login()
        await _get(http, f"{env.url}/events")
        assert len(_views(journal)) == 3
        assert {org: len(_records(journal, "audit_log.viewed", org)) for org in ORGS} == {
            org: 3 for org in ORGS}
        assert all(r["context"] == {} for org in ORGS for r in _records(journal, "audit_log.viewed", org))
    finally:
        await server.close()


async def test_sqlite_upgrade_takes_access_records_out_of_the_index(tmp_path: Path) -> None:
    """A version 2 database keyword-indexed its access records: opening it takes them out
    (with the text they were indexed with) and keeps the customer's events searchable."""
    import sqlite3

    from auditshipd.portal.query import search_text, seq_base
    from auditshipd.portal.sql import SCHEMA, SCHEMA_V2
    from auditshipd.portal.store_sqlite import SQLiteEventStore

    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA + SCHEMA_V2)
    for i, event in enumerate([*_access_events(2), *make_events(3)]):
        seq = seq_base(dt.datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))) + i
        conn.execute("INSERT INTO events(seq, id, occurred_at, action, actor, body) VALUES (?, ?, '', ?, '', ?)",
                     (seq, event["id"], event["action"], json.dumps(event)))
        conn.execute("INSERT INTO events_fts(rowid, text) VALUES (?, ?)", (seq, search_text(event)))
    conn.commit()
    assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH 'zanzibar'").fetchone() == (2,)
    conn.close()
    store = SQLiteEventStore(path)
    await store.open()
    try:
        assert await _ids(store, EventFilter(q="zanzibar", include_access=True)) == []
        assert len(await _ids(store, EventFilter(include_access=True))) == 5
        assert await store.purge(dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)) == 5
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
    # Nothing is left in the keyword index: the upgrade and the purge removed every entry.
    assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH 'zanzibar OR alice OR user'").fetchone() == (0,)
    conn.close()


async def test_postgres_migration_empties_the_search_of_access_records(pg_database: str) -> None:
    """Migration 4 empties the tsvector of access records written by version 3; the
    customer's events keep theirs."""
    import asyncpg
    from tests.servers.postgres import create_schema

    from auditshipd.portal.pg_schema import migrate
    from auditshipd.portal.pg_store import PostgresEventStore

    url = create_schema(pg_database)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, target=3)
        await conn.execute("CREATE TABLE events_p202606 PARTITION OF events FOR VALUES"
                           " FROM ('2026-06-01T00:00:00Z') TO ('2026-07-01T00:00:00Z')")
        for event_id, action in (("acc_old", "audit_log.viewed"), ("evt_old", "user.login")):
            await conn.execute(
                "INSERT INTO events(id, occurred_at, action, actor, search, body) VALUES"
                " ($1, '2026-06-02T00:00:00Z', $2, '', '''zanzibar'':1'::tsvector, $3)",
                event_id, action, json.dumps({"id": event_id, "action": action}))
        assert await migrate(conn, target=4) == [4]
        await migrate(conn)
    finally:
        await conn.close()
    store = PostgresEventStore(url)
    await store.open()
    try:
        assert await _ids(store, EventFilter(q="zanzibar", include_access=True)) == ["evt_old"]
    finally:
        await store.close()
