"""Retention per organization: ``[portal] organization_retention_days``, the store's
per-organization purge and the portal sink's defaults from ``[portal]``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from auditshipd.config import Config, parse_config
from auditshipd.delivery.batch import Batch
from auditshipd.errors import ConfigError
from auditshipd.plugin import SinkContext
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.portal.config import portal_config
from auditshipd.portal.query import EventFilter
from auditshipd.portal.sink import PortalSink, PortalSinkOptions
from auditshipd.portal.store import EventStore

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ORGS = ("acme", "globex", "initech", None)
AGES = (1, 20, 40, 100, 400, 800)


def _events() -> list[dict[str, Any]]:
    """One event per (organization, age in days); ids say both, texts are searchable."""
    out = []
    for org in ORGS:
        for age in AGES:
            when = NOW - dt.timedelta(days=age, minutes=1)
            event: dict[str, Any] = {
                "id": f"evt-{org or 'none'}-{age}",
                "action": "user.login",
                "occurred_at": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "actor": {"type": "user", "email": f"u{age}@{org or 'none'}.example"},
                "targets": [{"type": "user", "email": f"t{age}@example.com"}],
                "metadata": {"note": f"secret{age}word"},
            }
            if org is not None:
                event["organization"] = {"slug": org}
            out.append(event)
    return out


def _kept(default: int, overrides: dict[str, int]) -> set[str]:
    """The oracle: ids an organization's retention keeps (0 keeps forever)."""
    kept = set()
    for e in _events():
        org = e.get("organization", {}).get("slug")
        days = overrides.get(org, default) if org else default
        age = int(e["id"].rsplit("-", 1)[1])
        if days == 0 or age < days:
            kept.add(e["id"])
    return kept


def _config(tmp_path: Path, portal: str, sink: str = "") -> Config:
    text = textwrap.dedent(f"""
        [journal]
        path = "{tmp_path}/journal/audit.jsonl"
        paths = ["{tmp_path}/journal/audit.jsonl*"]
        state_dir = "{tmp_path}/state"

        [portal]
        database = "{tmp_path}/from-portal.sqlite3"
    """) + textwrap.dedent(portal) + textwrap.dedent("""
        [[sinks]]
        name = "index"
        type = "portal"
    """) + textwrap.dedent(sink)
    return parse_config(text, str(tmp_path / "auditshipd.toml"), sink_types(build_plugin_manager()))


def _sink(config: Config, journal: Path | None = None, **kwargs: Any) -> PortalSink:
    sc = config.sink("index")
    extra: dict[str, Any] = {"config": config}
    if journal is not None:
        extra["journal_path"] = str(journal)
    context = SinkContext("index", config.state_dir, logging.getLogger("test"), **extra)
    return PortalSink("index", sc.options, context, clock=lambda: NOW, **kwargs)


async def _ids(store: EventStore) -> set[str]:
    ids: set[str] = set()
    async for chunk in store.iter_export(EventFilter()):
        ids.update(e["id"] for e in chunk)
    return ids


# -- [portal] validation --------------------------------------------------------------


def test_portal_config_accepts_organization_retention(tmp_path: Path) -> None:
    """``organization_retention_days = { acme = 30, globex = 730 }`` is parsed next to the default."""
    config = _config(tmp_path, "retention_days = 90\norganization_retention_days = { acme = 30, globex = 730 }\n")
    pc = portal_config(config)
    assert pc.retention_days == 90
    assert pc.organization_retention_days == {"acme": 30, "globex": 730}
    assert portal_config(_config(tmp_path, "")).organization_retention_days == {}


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("{ acme = -1 }", "portal.organization_retention_days.acme"),
        ("{ Acme = 30 }", "portal.organization_retention_days.Acme"),
        ('{ "acme corp" = 30 }', "portal.organization_retention_days.acme corp"),
        ('{ acme = "30" }', "portal.organization_retention_days"),
        ("{ acme = 1.5 }", "portal.organization_retention_days"),
        ("30", "portal.organization_retention_days"),
    ],
)
def test_portal_config_rejects_bad_organization_retention(tmp_path: Path, table: str, key: str) -> None:
    """Negative days, non-integers and slugs that are not lowercase are errors naming the key
    (types when the file loads, values when the table is checked)."""
    with pytest.raises(ConfigError) as info:
        portal_config(_config(tmp_path, f"organization_retention_days = {table}\n"))
    assert key in str(info.value)


def test_sink_options_validate_organization_retention(tmp_path: Path) -> None:
    """The sink table's own organization_retention_days is validated when the config loads."""
    with pytest.raises(ConfigError, match=r"organization_retention_days\.ACME"):
        _config(tmp_path, "", "organization_retention_days = { ACME = 3 }\n")
    with pytest.raises(ConfigError, match="retention_days"):
        _config(tmp_path, "", "retention_days = -2\n")


# -- the store ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "overrides"),
    [
        (365, {}),
        (365, {"acme": 30, "globex": 730}),
        (30, {"acme": 0, "initech": 90}),
        (0, {"globex": 50}),
        (0, {}),
    ],
)
async def test_store_purges_each_organization_by_its_own_retention(
    portal_store: EventStore, default: int, overrides: dict[str, int]
) -> None:
    """purge_expired deletes exactly what each organization's retention expires and counts
    per organization (each backend)."""
    store = portal_store
    events = _events()
    await store.insert_events(events)

    def cutoff(days: int) -> dt.datetime | None:
        return NOW - dt.timedelta(days=days) if days else None

    result = await store.purge_expired(cutoff(default), {k: cutoff(v) for k, v in overrides.items()})
    kept = _kept(default, overrides)
    assert await _ids(store) == kept
    deleted = [e for e in events if e["id"] not in kept]
    expected: dict[str, int] = {}
    for e in deleted:
        if "organization" in e:
            slug = e["organization"]["slug"]
            expected[slug] = expected.get(slug, 0) + 1
    assert result.by_organization == expected
    assert result.without_organization == sum("organization" not in e for e in deleted)
    assert result.total == len(deleted)
    # The keyword index and the target table forget purged events too.
    for age in AGES:
        found = {e["id"] for e in (await store.query(EventFilter(q=f"secret{age}word"), None, 100)).events}
        assert found == {i for i in kept if i.endswith(f"-{age}")}
        by_target = await store.count(EventFilter(target=f"t{age}@example.com"))
        assert by_target == sum(1 for i in kept if i.endswith(f"-{age}"))
    # Purging again finds nothing more.
    again = await store.purge_expired(cutoff(default), {k: cutoff(v) for k, v in overrides.items()})
    assert again.total == 0


async def test_store_purge_in_many_chunks(portal_store: EventStore) -> None:
    """A purge larger than one chunk deletes every expired event of the organization only
    (each backend)."""
    store = portal_store
    old = (NOW - dt.timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    events = [{"id": f"e{i}", "action": "a.b", "occurred_at": old,
               "organization": {"slug": "acme" if i % 3 else "globex"}} for i in range(5000)]
    await store.insert_events(events)
    result = await store.purge_expired(None, {"acme": NOW - dt.timedelta(days=30)})
    assert result.by_organization == {"acme": sum(1 for i in range(5000) if i % 3)}
    assert await store.count() == sum(1 for i in range(5000) if not i % 3)
    assert await store.count(EventFilter(organization="acme")) == 0


async def test_a_stopped_purge_counts_exactly_what_it_deleted(portal_store: EventStore) -> None:
    """``stop`` true between two chunks ends the purge there: what was committed is
    deleted and counted, the rest is kept for the next purge (each backend)."""
    store = portal_store
    old = (NOW - dt.timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await store.insert_events([{"id": f"e{i}", "action": "a.b", "occurred_at": old,
                                "organization": {"slug": "acme"}} for i in range(5000)])
    asked = 0

    def after_one_chunk() -> bool:
        nonlocal asked
        asked += 1
        return asked > 1

    cutoffs = {"acme": NOW - dt.timedelta(days=30)}
    first = await store.purge_expired(None, cutoffs, stop=after_one_chunk)
    assert first.by_organization == {"acme": 2000}  # one chunk
    assert await store.count() == 3000
    rest = await store.purge_expired(None, cutoffs)
    assert rest.by_organization == {"acme": 3000} and await store.count() == 0


# -- the sink -------------------------------------------------------------------------


async def test_sink_takes_its_defaults_from_the_portal_table(tmp_path: Path) -> None:
    """Without sink options the database, retention, overrides and purge interval come from [portal]."""
    config = _config(tmp_path, "retention_days = 90\norganization_retention_days = { acme = 30, globex = 730 }\n"
                     "purge_interval = 12.5\n")
    sink = _sink(config)
    assert sink.database == f"{tmp_path}/from-portal.sqlite3"
    assert (sink.retention.default, sink.retention.organizations) == (90, {"acme": 30, "globex": 730})
    assert sink.purge_interval == 12.5
    assert sink.retention.days_for("acme") == 30 and sink.retention.days_for("initech") == 90
    assert sink.retention.days_for(None) == 90


async def test_sink_table_overrides_the_portal_table(tmp_path: Path) -> None:
    """Options set on the sink table win, each on its own; the rest still come from [portal]."""
    config = _config(
        tmp_path, "retention_days = 90\norganization_retention_days = { acme = 30 }\npurge_interval = 5\n",
        f'database = "{tmp_path}/own.sqlite3"\nretention_days = 7\n',
    )
    sink = _sink(config)
    assert sink.database == f"{tmp_path}/own.sqlite3"
    assert (sink.retention.default, sink.retention.organizations, sink.purge_interval) == (7, {"acme": 30}, 5)
    config = _config(tmp_path, "organization_retention_days = { acme = 30 }\n",
                     "organization_retention_days = { globex = 1 }\n")
    assert _sink(config).retention.organizations == {"globex": 1}


async def test_sink_without_config_keeps_the_builtin_defaults(tmp_path: Path) -> None:
    """Outside the daemon (no config in the context) the sink uses <state_dir>/portal.sqlite3 and 365 days."""
    context = SinkContext("p", tmp_path / "state", logging.getLogger("test"), **{})
    sink = PortalSink("p", PortalSinkOptions(), context)
    assert sink.database == str(tmp_path / "state" / "portal.sqlite3")
    assert (sink.retention.default, sink.retention.organizations, sink.purge_interval) == (365, {}, 3600.0)


async def test_sink_with_an_invalid_portal_table_purges_nothing(tmp_path: Path) -> None:
    """A [portal] table that does not validate never leads to deleting data on a guess."""
    config = _config(tmp_path, "")
    config.portal.organization_retention_days = {"acme": -5}
    sink = _sink(config)
    assert not sink.retention.purges
    await sink.start()
    await sink.send(Batch(_events()))
    assert await sink.purge_now() == 0
    await sink.close()


async def test_sink_purge_applies_each_organization_retention_and_records_counts(tmp_path: Path) -> None:
    """With a fake clock the sink purges per organization and records one audit_log.purged event
    with per-organization counts and no event contents."""
    config = _config(tmp_path, "retention_days = 365\norganization_retention_days = { acme = 30, globex = 730, initech = 0 }\n")
    journal = tmp_path / "journal" / "audit.jsonl"
    sink = _sink(config, journal)
    await sink.store.open()  # not start(): no scheduled purge racing the explicit one
    try:
        events = _events()
        await sink.send(Batch(events))
        deleted = await sink.purge_now()
        kept = _kept(365, {"acme": 30, "globex": 730, "initech": 0})
        assert deleted == len(events) - len(kept)
        assert await _ids(sink.store) == kept
        assert await sink.purge_now() == 0  # nothing left to purge: nothing recorded
    finally:
        await sink.close()
    raw = journal.read_bytes()
    records = [json.loads(line) for line in raw.splitlines()]
    assert [r["action"] for r in records] == ["audit_log.purged"]
    meta = records[0]["metadata"]
    assert meta["deleted_by_organization"] == {"acme": 4, "globex": 1}
    assert meta["deleted_without_organization"] == 2
    assert meta["deleted_events"] == deleted == 7
    assert meta["retention_days"] == 365
    assert meta["organization_retention_days"] == {"acme": 30, "globex": 730, "initech": 0}
    assert meta["older_than"] == "2025-06-01T12:00:00.000000Z"
    assert meta["organization_older_than"] == {"acme": "2026-05-02T12:00:00.000000Z",
                                               "globex": "2024-06-01T12:00:00.000000Z"}
    assert "organization" not in records[0]
    for e in events:  # counts only: no id, actor or text of a purged event
        assert e["id"].encode() not in raw
        assert e["actor"]["email"].encode() not in raw
    assert b"word" not in raw


async def test_sink_purge_loop_runs_on_the_portal_interval(tmp_path: Path) -> None:
    """The scheduled purge uses [portal] purge_interval and organization overrides while running."""
    config = _config(tmp_path, "retention_days = 0\norganization_retention_days = { globex = 50 }\npurge_interval = 0.05\n")
    journal = tmp_path / "journal" / "audit.jsonl"
    sink = _sink(config, journal)
    await sink.start()
    try:
        await sink.send(Batch(_events()))
        store = sink.store
        deadline = dt.datetime.now(UTC) + dt.timedelta(seconds=10)
        while await store.count(EventFilter(organization="globex")) != 3:
            assert dt.datetime.now(UTC) < deadline, "the scheduled purge did not run"
            await _tick()
        assert await _ids(store) == _kept(0, {"globex": 50})
    finally:
        await sink.close()
    purged = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sum(r["metadata"]["deleted_by_organization"].get("globex", 0) for r in purged) == 3


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.02)


async def test_closing_the_sink_mid_purge_records_what_was_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon stopping (or reloading) while a purge runs: the purge ends after the
    chunk it is deleting and its deletions are recorded. Cancelled instead, it went on
    deleting in the store's thread and its audit_log.purged record was never written."""
    import asyncio
    import threading

    from auditshipd.portal import store_sqlite
    from auditshipd.portal.store_sqlite import SQLiteEventStore

    config = _config(tmp_path, "retention_days = 30\n")
    old = (NOW - dt.timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    store = SQLiteEventStore(tmp_path / "from-portal.sqlite3")
    await store.open()
    await store.insert_events([{"id": f"e{i}", "action": "a.b", "occurred_at": old,
                                "organization": {"slug": "acme"}} for i in range(5000)])
    await store.close()
    in_chunk, go_on = threading.Event(), threading.Event()
    real = store_sqlite.forget_rows

    def held_chunk(conn: Any, rows: Any) -> None:  # in the store's writer thread
        in_chunk.set()
        assert go_on.wait(20)
        real(conn, rows)

    monkeypatch.setattr(store_sqlite, "forget_rows", held_chunk)
    journal = tmp_path / "journal" / "audit.jsonl"
    sink = _sink(config, journal)
    await sink.start()  # its first purge starts at once
    assert await asyncio.to_thread(in_chunk.wait, 20), "the purge did not start"
    closing = asyncio.create_task(sink.close())
    while not sink._stopping.is_set():
        await asyncio.sleep(0)
    go_on.set()
    await asyncio.wait_for(closing, 20)
    store = SQLiteEventStore(tmp_path / "from-portal.sqlite3")
    await store.open()
    try:
        left = await store.count()
    finally:
        await store.close()
    assert left == 3000  # the chunk under way was committed, no other
    purged = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [r["metadata"]["deleted_by_organization"] for r in purged] == [{"acme": 2000}]
