"""Hosts that stopped reporting a stream's state are forgotten, on both stores, and the
daemon looks for them at most hourly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from auditshipd.portal.backend import stream_store
from auditshipd.portal.stream_defs import StreamDefinition
from auditshipd.portal.stream_store import StreamStatus
from auditshipd.service.store_streams import FORGET_HOST_AFTER, StoreStreams

KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="


def _definition(name: str = "siem") -> StreamDefinition:
    return StreamDefinition(StreamDefinition.new_id(), "acme", name, "http",
                            {"url": "http://127.0.0.1:9/in"}, None, [], False,
                            "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "t", "t")


def _said(stream_id: str, host: str, at: float) -> list[StreamStatus]:
    return [StreamStatus(stream_id, host, "active", None, None, 0, 0, at)]


async def test_hosts_silent_before_the_cut_are_forgotten(portal_store) -> None:
    store = stream_store(portal_store)
    d = _definition()
    await store.insert(d, 10)
    now = time.time()
    await store.report("gone#1", _said(d.id, "gone#1", now - FORGET_HOST_AFTER - 60))
    await store.report("here#2", _said(d.id, "here#2", now))
    assert await store.forget_hosts(now - FORGET_HOST_AFTER) == 1
    assert [s.host for s in await store.statuses([d.id])] == ["here#2"]
    assert await store.forget_hosts(now - FORGET_HOST_AFTER) == 0


async def test_the_daemon_forgets_silent_hosts_after_reporting(
        tmp_path: Path, portal_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A report also forgets hosts silent for FORGET_HOST_AFTER, once per FORGET_EVERY."""
    from auditshipd.config import parse_config
    from auditshipd.plugins.manager import build_plugin_manager, sink_types

    monkeypatch.setenv("AUDITSHIPD_SECRETS_KEY", KEY)
    types = sink_types(build_plugin_manager([]))
    config = parse_config(f"""
[journal]
path = "{tmp_path}/j/audit.jsonl"
state_dir = "{tmp_path}/state"
[portal]
database = "{portal_database}"
stream_allow_hosts = ["127.0.0.1"]
""", str(tmp_path / "auditshipd.toml"), types)
    streams = StoreStreams()
    try:
        assert await streams.open(config)
        store = streams.streams
        d = _definition()
        await store.insert(d, 10)
        sinks = await streams.sink_configs(config, types)
        assert [s.name for s in sinks] == ["acme.siem"]
        config.sinks.extend(sinks)
        old = time.time() - FORGET_HOST_AFTER - 60
        await store.report("gone#1", _said(d.id, "gone#1", old))
        await streams.report(config, "me#3")
        assert [s.host for s in await store.statuses([d.id])] == ["me#3"]
        # not again within the hour: a host gone since stays until the next look
        await store.report("gone#4", _said(d.id, "gone#4", old))
        streams._next_report = 0.0
        await streams.report(config, "me#3")
        assert [s.host for s in await store.statuses([d.id])] == ["gone#4", "me#3"]
        streams._next_forget = streams._next_report = 0.0  # an hour later
        await streams.report(config, "me#3")
        assert [s.host for s in await store.statuses([d.id])] == ["me#3"]
    finally:
        await streams.close()


async def test_an_error_text_with_nul_does_not_stop_the_hosts_other_reports(portal_store) -> None:
    """A receiver's answer may hold any character: its stream's error is stored (NUL
    shown as U+FFFD on PostgreSQL, whose text cannot hold it) and the host's other
    streams are reported with it."""
    store = stream_store(portal_store)
    bad, good = _definition("bad"), _definition("good")
    for d in (bad, good):
        await store.insert(d, 10)
    now = time.time()
    await store.report("h#1", [StreamStatus(bad.id, "h#1", "error", None, "HTTP 503: bad\x00gateway",
                                            None, None, now), *_said(good.id, "h#1", now)])
    got = {s.stream_id: s for s in await store.statuses([bad.id, good.id])}
    assert got[good.id].state == "active"
    assert got[bad.id].last_error in ("HTTP 503: bad\x00gateway", "HTTP 503: bad\ufffdgateway")


async def test_a_host_with_many_streams_reports_within_the_portals_window(
        tmp_path: Path, portal_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reports space out with the number of streams, but never past half the time the
    portal counts a report current (else streams would show inactive between reports)."""
    from auditshipd.config import parse_config
    from auditshipd.portal.stream_store import status_fresh_for

    monkeypatch.setenv("AUDITSHIPD_SECRETS_KEY", KEY)
    config = parse_config(f"""
[journal]
path = "{tmp_path}/j/audit.jsonl"
state_dir = "{tmp_path}/state"
[portal]
database = "{portal_database}"
""", str(tmp_path / "auditshipd.toml"))
    poll = config.portal.stream_poll_interval
    streams = StoreStreams()
    try:
        assert await streams.open(config)
        for count, most in ((10, 0.0), (200, poll * 3), (1000, status_fresh_for(poll) / 2 - poll)):
            streams.ids = {f"acme.s{i}": f"ls_{i:016x}" for i in range(count)}
            streams._next_report = 0.0
            before = time.monotonic()
            await streams.report(config, "me#1")
            assert streams._next_report - before <= most + 1.0, count
            assert streams._next_report - time.monotonic() >= most - 1.0, count
    finally:
        await streams.close()
