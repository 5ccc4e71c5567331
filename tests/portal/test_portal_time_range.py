"""Every RFC 3339 time of the years 0001-9999 is indexed, ordered and filtered alike; a
filter outside that range is a 400, never a 500, also for an export."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from portal_env import PortalEnv, make_config

from auditshipd.delivery.batch import Batch
from auditshipd.plugin import SinkContext
from auditshipd.portal.backend import event_store
from auditshipd.portal.query import EventFilter, format_time, parse_time, seq_base
from auditshipd.portal.sink import PortalSink, PortalSinkOptions

UTC = dt.timezone.utc
# Both ends of the range, both edges of the 1827-2112 span of the key, and ordinary times.
TIMES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00.000001Z",
    "0999-06-15T12:00:00+02:00",
    "1685-01-01T00:00:00Z",
    "1827-04-24T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "2026-03-01T10:00:00.5Z",
    "2112-09-17T23:53:47.370495Z",
    "2112-09-17T23:53:47.370496Z",
    "2255-12-31T23:59:59Z",
    "2300-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999998Z",
    "9999-12-31T23:59:59.999999Z",
]


def _event(i: int, occurred_at: str) -> dict[str, Any]:
    return {
        "id": f"evt_{i:03d}",
        "occurred_at": occurred_at,
        "action": "user.login",
        "actor": {"type": "user", "email": f"u{i}@example.com"},
        "targets": [],
    }


def test_seq_base_is_monotonic_over_the_whole_range() -> None:
    """The key grows with the time across 0001-9999 and fits SQLite's signed 64 bits."""
    whens = sorted(parse_time(t) for t in TIMES)
    keys = [seq_base(w) for w in whens]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert all(k >= -(1 << 63) and k + 1023 < (1 << 63) for k in keys)
    # Events written by earlier versions (1827-2112) keep their key.
    now = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    micros = int((now - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(microseconds=1))
    assert seq_base(now) == micros << 10


def test_format_time_pads_years_before_1000() -> None:
    """A year before 1000 is written with four digits, so stored times sort as text."""
    assert format_time(parse_time("0001-01-01T00:00:00Z")) == "0001-01-01T00:00:00.000000Z"
    assert format_time(parse_time("0999-06-15T12:00:00+02:00")) == "0999-06-15T10:00:00.000000Z"


def test_parse_time_out_of_range_in_utc_is_a_value_error() -> None:
    """A valid text whose UTC instant leaves 0001-9999 is refused as ValueError (-> 400)."""
    for text in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        with pytest.raises(ValueError):
            parse_time(text)


async def test_store_indexes_orders_and_filters_every_year(portal_store) -> None:
    """Events of 0001..9999 are all stored, listed newest first, and found by since/until
    (each backend)."""
    store = portal_store
    events = [_event(i, t) for i, t in enumerate(TIMES)]
    assert await store.insert_events(events) == len(events)
    page = await store.query(EventFilter(), limit=100)
    expected = [e["id"] for e in sorted(events, key=lambda e: parse_time(e["occurred_at"]),
                                         reverse=True)]
    assert [e["id"] for e in page.events] == expected
    since, until = parse_time("2112-09-17T23:53:47.370496Z"), parse_time("9999-12-31T23:59:59.999999Z")
    page = await store.query(EventFilter(since=since, until=until), limit=100)
    assert [e["occurred_at"] for e in page.events] == [
        "9999-12-31T23:59:59.999998Z", "2300-01-01T00:00:00Z", "2255-12-31T23:59:59Z",
        "2112-09-17T23:53:47.370496Z",
    ]
    page = await store.query(EventFilter(until=parse_time("1685-01-01T00:00:00Z")), limit=100)
    assert [e["id"] for e in page.events] == ["evt_002", "evt_001", "evt_000"]
    # More events in one far-away microsecond than it has ties: all kept, in order.
    same = [_event(100 + i, "2300-01-01T00:00:00Z") for i in range(40)]
    assert await store.insert_events(same) == 40
    assert await store.count(EventFilter(since=parse_time("2300-01-01T00:00:00Z"),
                                         until=parse_time("2301-01-01T00:00:00Z"))) == 41


async def test_portal_sink_takes_a_batch_with_a_far_future_event(tmp_path: Path) -> None:
    """A batch holding one event of the year 2300 is stored whole (it used to be refused)."""
    context = SinkContext("portal", tmp_path / "state", logging.getLogger("test"), **{})
    sink = PortalSink("portal", PortalSinkOptions(retention_days=0), context)
    await sink.start()
    events = [_event(i, "2026-02-01T00:00:00Z") for i in range(50)]
    events.insert(25, _event(999, "2300-01-01T00:00:00Z"))
    try:
        await sink.send(Batch(events))
        assert await sink.store.count() == 51
    finally:
        await sink.close()


@pytest.fixture
async def small_portal(tmp_path: Path, portal_database: str) -> AsyncIterator[PortalEnv]:
    """A portal on a store holding the TIMES events (each backend)."""
    from auditshipd.portal import start_portal

    database = portal_database
    store = event_store(database)
    await store.open()
    await store.insert_events([_event(i, t) for i, t in enumerate(TIMES)])
    await store.close()
    config = make_config(tmp_path, database)
    server = await start_portal(config, port=0)
    try:
        yield await PortalEnv.start(server, Path(config.journal.path))
    finally:
        await server.close()


@pytest.mark.parametrize("path", ["/api/events", "/api/export", "/events"])
@pytest.mark.parametrize("param", ["since", "until"])
async def test_out_of_range_filters_are_400(small_portal, http, path: str, param: str) -> None:
    """since/until whose UTC instant leaves 0001-9999, or that is no time: 400, never 500."""
    for value in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "10000-01-01T00:00:00Z"):
        async with http.get(f"{small_portal.url}{path}", params={param: value},
                            headers=small_portal.auth(small_portal.admin)) as r:
            assert r.status == 400, (value, await r.text())
            if path.startswith("/api/"):
                assert (await r.json())["param"] == param


async def test_far_filters_answer_and_export_whole(small_portal, http) -> None:
    """since/until of far years work in the list and in the export (no stream cut short)."""
    params = {"since": "2200-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"}
    auth = small_portal.auth(small_portal.admin)
    async with http.get(f"{small_portal.url}/api/events", params=params, headers=auth) as r:
        assert r.status == 200, await r.text()
        assert [e["id"] for e in (await r.json())["data"]] == ["evt_011", "evt_010", "evt_009"]
    async with http.get(f"{small_portal.url}/api/export", params={**params, "format": "jsonl"},
                        headers=auth) as r:
        assert r.status == 200
        lines = (await r.read()).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["evt_011", "evt_010", "evt_009"]


@pytest.mark.parametrize("path", ["/api/events", "/api/export?format=jsonl&", "/events"])
async def test_an_offset_whose_plus_a_url_turned_into_a_space_is_read(small_portal, http,
                                                                       path: str) -> None:
    """An RFC 3339 time with a ``+HH:MM`` offset typed into a URL as it is: the query
    string gives the ``+`` as a space, and the time is still read with its offset (it was
    a 400, "expected an RFC 3339 time", for a time that was one)."""
    import yarl

    sep = "" if path.endswith("&") else "?"
    raw = (f"{small_portal.url}{path}{sep}since=2026-03-01T11:00:00+01:00"
           "&until=2026-03-01T11:00:01+01:00")
    async with http.get(yarl.URL(raw, encoded=True),
                        headers=small_portal.auth(small_portal.admin)) as r:
        body = await r.text()
        assert r.status == 200, body
    if path == "/events":
        assert "/events/evt_006" in body and "/events/evt_005" not in body
        assert 'value="2026-03-01T10:00:00"' in body  # the From input, in UTC
    else:
        ids = ([json.loads(line)["id"] for line in body.splitlines()] if "export" in path
               else [e["id"] for e in json.loads(body)["data"]])
        assert ids == ["evt_006"]


def test_a_space_stands_for_a_plus_only_before_an_offset_after_a_time() -> None:
    assert parse_time("2026-03-01T11:00:00.5 01:00") == dt.datetime(2026, 3, 1, 10, 0, 0, 500000,
                                                                    tzinfo=UTC)
    assert parse_time("2026-03-01 11:00 0130") == dt.datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    for bad in ("2026-03-01 0100", "2026-03-01T11:00:00  01:00", "2026-03-01T11:00:00 1:00"):
        with pytest.raises(ValueError):
            parse_time(bad)
