"""Streams page and /api/streams: states and last sync from a hand-built state dir, and
organization scoping (stream-file sinks included)."""

from __future__ import annotations

import datetime as dt
import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from auditshipd.config import Config, parse_config
from auditshipd.delivery.status import SinkStats
from auditshipd.journal.cursor import (
    HEAD_BYTES,
    TAIL_BYTES,
    CursorState,
    CursorStore,
    SegmentCursor,
    digest,
)
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.portal.streams import scrub_secrets, stream_states

UTC = dt.timezone.utc
LINE = b'{"id":"e-%06d","action":"user.invited","occurred_at":"2026-01-01T00:00:00Z","organization":{"slug":"acme"}}\n'
SYNCED = "2026-03-01T10:00:00.123456Z"
SECRET_ERROR = (
    "HTTP 401 from https://svc:hunter2@siem.example/ingest?token=abc123&x=1:"
    " Authorization: Bearer asd_deadbeefcafe"
)


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _config(tmp_path: Path) -> Config:
    """Main-config sinks (scoped, shared, unscoped) plus stream files for acme and globex."""
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True)
    out = tmp_path / "out"
    streams = tmp_path / "streams"
    streams.mkdir()
    (streams / "acme.toml").write_text(
        f'[[sinks]]\nname = "siem"\ntype = "file"\npath = "{out}/acme-siem.jsonl"\n')
    (streams / "globex.toml").write_text(
        f'[[sinks]]\nname = "siem"\ntype = "file"\npath = "{out}/globex-siem.jsonl"\n')
    text = textwrap.dedent(f"""
        streams_dir = "{streams}"
        [journal]
        path = "{journal}"
        paths = ["{journal}*"]
        state_dir = "{tmp_path / 'state'}"

        [portal]
        enabled = true
        listen = "127.0.0.1:0"
        database = "{tmp_path / 'portal.sqlite3'}"

        [[sinks]]
        name = "acme-http"
        type = "file"
        path = "{out}/acme-http.jsonl"
        organizations = ["acme"]

        [[sinks]]
        name = "acme-old"
        type = "file"
        path = "{out}/acme-old.jsonl"
        organizations = ["acme"]

        [[sinks]]
        name = "shared"
        type = "file"
        path = "{out}/shared.jsonl"
        organizations = ["acme", "globex"]

        [[sinks]]
        name = "everything"
        type = "file"
        path = "{out}/all.jsonl"
    """)
    path = tmp_path / "auditshipd.toml"
    path.write_text(text)
    config = parse_config(text, str(path), sink_types(build_plugin_manager()))
    assert not config.stream_errors
    return config


def _status(config: Config, sink: str, **fields: Any) -> None:
    """A status file as SinkDriver writes it (state_dir/status/SINK.json, SinkStats)."""
    stats = SinkStats(sink=sink, type="file", started_at=_stamp(dt.datetime.now(UTC)), **fields)
    path = config.state_dir / "status" / f"{sink}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(stats))


def _cursor(config: Config, sink: str, journal: Path, offset: int) -> None:
    data = journal.read_bytes()
    st = os.stat(journal)
    head = data[:HEAD_BYTES]
    seg = SegmentCursor(path=str(journal), offset=offset, head_len=len(head), head_hash=digest(head),
                        tail_hash=digest(data[max(0, offset - TAIL_BYTES):offset]))
    CursorStore(config.state_dir).save(
        CursorState(sink=sink, segments={f"{st.st_dev}:{st.st_ino}": seg}, acked_events=offset // len(LINE % 0)))


def _state_dir(config: Config) -> None:
    """acme.siem active and synced, acme-http in error (with secrets in the message),
    acme-old stale (inactive), globex.siem blocked, shared active, everything never ran."""
    journal = Path(config.journal.path)
    journal.write_bytes(b"".join(LINE % i for i in range(10)))
    now = _stamp(dt.datetime.now(UTC))
    long_ago = _stamp(dt.datetime.now(UTC) - dt.timedelta(hours=2))
    _status(config, "acme.siem", state="active", delivered=10, last_success_at=SYNCED, updated_at=now)
    _cursor(config, "acme.siem", journal, 10 * len(LINE % 0))
    _status(config, "acme-http", state="error", last_error=SECRET_ERROR, last_error_at=now,
            last_success_at="2026-02-01T00:00:00Z", updated_at=now)
    _cursor(config, "acme-http", journal, 4 * len(LINE % 0))
    _status(config, "acme-old", state="active", last_success_at="2026-01-05T00:00:00Z",
            updated_at=long_ago)
    _status(config, "globex.siem", state="blocked", last_error="dead-letter storage is full",
            last_error_at=now, updated_at=now)
    _status(config, "shared", state="active", last_success_at=SYNCED, updated_at=now,
            last_error="HTTP 503 from siem", last_error_at=long_ago, last_error_resolved_at=SYNCED)


@pytest.fixture
async def streams_portal(tmp_path: Path) -> AsyncIterator[Any]:
    """A portal over the hand-built state dir, with operator and organization tokens."""
    from auditshipd.portal import start_portal

    config = _config(tmp_path)
    _state_dir(config)
    server = await start_portal(config, port=0)
    tokens = server.tokens
    server.test_tokens = {
        "operator": await tokens.create("ops", "admin"),
        "acme": await tokens.create("acme-admin", "admin", "acme"),
        "globex": await tokens.create("globex-admin", "admin", "globex"),
        "initech": await tokens.create("initech-admin", "admin", "initech"),
    }
    server.test_config = config
    try:
        yield server
    finally:
        await server.close()


async def _streams(http, server, who: str) -> tuple[bytes, dict[str, dict[str, Any]]]:
    headers = {"Authorization": f"Bearer {server.test_tokens[who]}"}
    async with http.get(f"{server.url}/api/streams", headers=headers) as r:
        assert r.status == 200
        body = await r.read()
    return body, {s["name"]: s for s in msgspec.json.decode(body)["data"]}


async def test_operator_sees_every_sink_with_state_and_last_sync(streams_portal, http) -> None:
    """An operator sees all sinks with active/error/inactive/blocked, last_synced_at and the last error."""
    _, rows = await _streams(http, streams_portal, "operator")
    assert set(rows) == {"acme-http", "acme-old", "shared", "everything", "acme.siem", "globex.siem"}
    assert {n: r["state"] for n, r in rows.items()} == {
        "acme.siem": "active", "acme-http": "error", "acme-old": "inactive",
        "globex.siem": "blocked", "shared": "active", "everything": "inactive",
    }
    assert rows["acme.siem"]["last_synced_at"] == SYNCED
    assert rows["acme.siem"]["lag_events"] == 0
    assert rows["acme-http"]["lag_events"] == 6
    assert rows["acme-http"]["last_synced_at"] == "2026-02-01T00:00:00Z"
    assert rows["everything"]["last_synced_at"] is None
    assert rows["everything"]["lag_events"] == 10
    assert rows["globex.siem"]["last_error"] == "dead-letter storage is full"
    assert rows["acme.siem"]["stream_organization"] == "acme"
    assert rows["acme-http"]["stream_organization"] is None


async def test_error_message_has_secrets_removed(streams_portal, http) -> None:
    """The last error is shown without URL credentials, query tokens or bearer tokens."""
    body, rows = await _streams(http, streams_portal, "operator")
    error = rows["acme-http"]["last_error"]
    assert error.startswith("HTTP 401 from https://***@siem.example/ingest?token=***")
    for secret in (b"hunter2", b"abc123", b"asd_deadbeefcafe"):
        assert secret not in body


async def test_organization_admin_sees_only_its_own_sinks(streams_portal, http) -> None:
    """acme sees acme-http, acme-old and its stream-file sink acme.siem; globex only globex.siem;
    an organization without sinks sees none; shared and unscoped sinks stay hidden."""
    body, rows = await _streams(http, streams_portal, "acme")
    assert set(rows) == {"acme-http", "acme-old", "acme.siem"}
    assert b"globex" not in body and b"shared" not in body and b"everything" not in body
    assert all(r["organizations"] == ["acme"] for r in rows.values())
    body, rows = await _streams(http, streams_portal, "globex")
    assert set(rows) == {"globex.siem"}
    assert rows["globex.siem"]["state"] == "blocked"
    assert b"acme" not in body
    body, rows = await _streams(http, streams_portal, "initech")
    assert rows == {}
    assert b"acme" not in body and b"globex" not in body


async def test_streams_page_shows_states_for_the_principal(streams_portal, http) -> None:
    """The /streams page lists the principal's sinks with state, last sync and scrubbed errors."""
    headers = {"Authorization": f"Bearer {streams_portal.test_tokens['acme']}"}
    async with http.get(f"{streams_portal.url}/streams", headers=headers) as r:
        assert r.status == 200
        html = await r.text()
    assert 'data-stream="acme.siem" data-state="active"' in html
    assert 'data-stream="acme-http" data-state="error"' in html
    assert 'data-stream="acme-old" data-state="inactive"' in html
    assert SYNCED in html and "https://***@siem.example" in html
    assert "hunter2" not in html and "globex" not in html and "shared" not in html
    headers = {"Authorization": f"Bearer {streams_portal.test_tokens['operator']}"}
    async with http.get(f"{streams_portal.url}/streams", headers=headers) as r:
        html = await r.text()
    assert 'data-stream="globex.siem" data-state="blocked"' in html
    assert 'data-stream="everything" data-state="inactive"' in html


async def test_stream_states_without_status_files(tmp_path: Path) -> None:
    """With an empty state dir every visible sink is listed as inactive, never synced."""
    config = _config(tmp_path)
    rows = await stream_states(config, "acme")
    assert [(r["name"], r["state"], r["last_synced_at"]) for r in rows] == [
        ("acme-http", "inactive", None), ("acme-old", "inactive", None), ("acme.siem", "inactive", None)]


def test_scrub_secrets() -> None:
    """Credentials in URLs, auth headers and key=value pairs are masked; the rest is kept."""
    assert scrub_secrets(None) is None
    assert scrub_secrets("connection refused") == "connection refused"
    assert scrub_secrets("mqtt://u:p@broker:1883 down") == "mqtt://***@broker:1883 down"
    assert scrub_secrets("Splunk 1234-abcd rejected") == "Splunk *** rejected"
    assert scrub_secrets('{"api_key": "k-42", "code": 7}') == '{"api_key": "***", "code": 7}'
    assert scrub_secrets("key AKIAABCDEFGHIJKLMNOP denied") == "key *** denied"
    assert scrub_secrets("password=pw1&user=bob") == "password=***&user=bob"


async def test_a_resolved_error_is_shown_as_resolved(streams_portal, http) -> None:
    """A sink that delivers again keeps its last error for the record, marked resolved, in
    the API and on the page (not styled as a current error)."""
    _, rows = await _streams(http, streams_portal, "operator")
    assert rows["shared"]["state"] == "active"
    assert rows["shared"]["last_error"] == "HTTP 503 from siem"
    assert rows["shared"]["last_error_resolved_at"] == SYNCED
    assert rows["acme-http"]["last_error_resolved_at"] is None
    headers = {"Authorization": f"Bearer {streams_portal.test_tokens['operator']}"}
    async with http.get(f"{streams_portal.url}/streams", headers=headers) as r:
        html = await r.text()
    row = html[html.index('data-stream="shared"'):]
    row = row[:row.index("</tr>")]
    assert "resolved: delivering again since" in row and "error-text" not in row


@pytest.mark.parametrize(("events", "shown"), [
    (1, "1 event indexed"), (3, "3 events indexed"), (4, "More than 3 events indexed")])
async def test_streams_page_counts_indexed_events_up_to_the_cap(
        streams_portal, http, monkeypatch, events, shown) -> None:
    """The page says how many of the principal's events the portal holds, counted no
    further than the search's total (an exact count of a big store scans it per view)."""
    from auditshipd.portal import paging

    monkeypatch.setattr(paging, "TOTAL_CAP", 3)
    lines = [LINE % i for i in range(events)]
    lines += [LINE.replace(b"acme", b"globex") % (100 + i) for i in range(5)]
    await streams_portal.store.insert_lines(lines)
    headers = {"Authorization": f"Bearer {streams_portal.test_tokens['acme']}"}
    async with http.get(f"{streams_portal.url}/streams", headers=headers) as r:
        assert r.status == 200
        html = await r.text()
    assert f'<span class="muted" id="indexed">{shown} in the portal</span>' in html
