"""The built-in ``portal`` sink: registered as a plugin, idempotent, purges on schedule."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from portal_data import make_events

from auditshipd.config import parse_config
from auditshipd.delivery.batch import Batch
from auditshipd.errors import ConfigError
from auditshipd.plugin import SinkContext
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.portal.query import EventFilter
from auditshipd.portal.sink import PortalSink, PortalSinkOptions
from auditshipd.portal.store_sqlite import SQLiteEventStore


def _context(tmp_path: Path, **extra) -> SinkContext:
    return SinkContext("portal", tmp_path / "state", logging.getLogger("test"), **extra)


async def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_portal_sink_type_is_a_builtin_plugin(tmp_path: Path) -> None:
    """The plugin manager offers sink type "portal" and the config validates its options."""
    types = sink_types(build_plugin_manager())
    assert "portal" in types
    text = f'[[sinks]]\nname = "idx"\ntype = "portal"\ndatabase = "{tmp_path}/x.sqlite3"\nretention_days = 30\n'
    cfg = parse_config(text, "t.toml", types)
    assert cfg.sinks[0].options.retention_days == 30
    with pytest.raises(ConfigError, match="retention_days"):
        parse_config(text.replace("30", "-1"), "t.toml", types)
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config(text + "colour = 1\n", "t.toml", types)


async def test_sink_stores_batches_once_in_default_database(tmp_path: Path) -> None:
    """Batches land in <state_dir>/portal.sqlite3; a redelivered batch adds nothing."""
    sink = PortalSink("portal", PortalSinkOptions(retention_days=0), _context(tmp_path))
    await sink.start()
    events = make_events(300)
    await sink.send(Batch(events[:200]))
    await sink.send(Batch(events[100:]))
    await sink.close()
    store = SQLiteEventStore(tmp_path / "state" / "portal.sqlite3")
    await store.open()
    try:
        assert await store.count() == 300
        assert await store.count(EventFilter(actions=("user.login",))) == sum(
            e["action"] == "user.login" for e in events
        )
    finally:
        await store.close()


async def test_scheduled_purge_is_recorded_in_the_journal(tmp_path: Path) -> None:
    """With retention, the sink purges expired events while running and records
    ``audit_log.purged`` with the count in the journal given by SinkContext.journal_path."""
    journal = tmp_path / "journal" / "audit.jsonl"
    options = PortalSinkOptions(retention_days=1, purge_interval=0.05)
    sink = PortalSink("portal", options, _context(tmp_path, journal_path=str(journal)))
    await sink.start()
    events = make_events(500)  # all in early 2026, long expired
    await sink.send(Batch(events))
    await _wait_for(lambda: journal.exists() and "audit_log.purged" in journal.read_text())
    await sink.close()
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    purged = [r for r in records if r["action"] == "audit_log.purged"]
    assert sum(r["metadata"]["deleted_events"] for r in purged) == 500
    assert purged[0]["metadata"]["retention_days"] == 1


async def test_a_scoped_portal_sink_purges_its_organizations_events_only(tmp_path: Path) -> None:
    """A portal sink with ``organizations`` (a stream file's sink has its organization's)
    shares the store with other sinks: its retention deletes its organizations' events,
    never another organization's nor those without one."""
    config = parse_config(f"""
[journal]
path = "{tmp_path}/journal/audit.jsonl"
state_dir = "{tmp_path}/state"
[portal]
database = "{tmp_path}/portal.sqlite3"
[[sinks]]
name = "acme-index"
type = "portal"
organizations = ["acme"]
retention_days = 1
""", str(tmp_path / "auditshipd.toml"), sink_types(build_plugin_manager([])))
    sc = config.sinks[0]
    sink = PortalSink(sc.name, sc.options,
                      SinkContext(sc.name, tmp_path / "state", logging.getLogger("test"), config=config))
    await sink.start()
    events = make_events(300)  # early 2026: expired for a 1-day retention
    for i, e in enumerate(events):
        e["organization"] = [{"slug": "acme"}, {"slug": "globex"}, None][i % 3]
    await sink.send(Batch(events))
    await sink.purge_now()  # (the sink's own schedule may have purged them already)
    await sink.close()
    store = SQLiteEventStore(tmp_path / "portal.sqlite3")
    await store.open()
    try:
        left = [e async for chunk in store.iter_export(EventFilter(), 1000) for e in chunk]
    finally:
        await store.close()
    assert sorted(e["id"] for e in left) == sorted(e["id"] for e in events[1::3] + events[2::3])
