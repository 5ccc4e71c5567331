"""Writing a batch into the SQLite event store, set-based: the rows are computed outside
the write transaction, then one statement finds the ids already stored, one the highest
``seq`` of each microsecond the batch touches, and one ``executemany`` per table writes
them (SQLite loops in C; no statement per event)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping
from typing import Any, NamedTuple

from .query import format_time, search_text, seq_base, tie_span
from .store import _encode, _occurred, _organization, actor_key, target_keys

__all__ = ["insert_rows", "new_rows"]

_IN_CHUNK = 500


class _Row(NamedTuple):
    id: str
    base: int
    occurred_at: str
    action: str
    actor: str
    organization: str | None
    body: str
    text: str
    targets: set[str]


def new_rows(events: list[Mapping[str, Any]], lines: list[bytes] | None) -> list[_Row]:
    """The rows of a batch (computed outside the write transaction), each id once."""
    rows: list[_Row] = []
    seen: set[str] = set()
    for i, event in enumerate(events):
        body = lines[i] if lines is not None else _encode(event)
        event_id = str(event.get("id") or "") or ("sha256-" + hashlib.sha256(body).hexdigest()[:32])
        if event_id in seen:
            continue
        seen.add(event_id)
        when = _occurred(event)
        rows.append(_Row(
            event_id, seq_base(when), format_time(when), str(event.get("action") or ""),
            actor_key(event), _organization(event), body.decode("utf-8"), search_text(event),
            target_keys(event),
        ))
    return rows


def insert_rows(conn: sqlite3.Connection, rows: list[_Row]) -> int:
    """Insert the rows whose id is not stored yet, set-based: one statement finds the
    stored ids, one the highest ``seq`` of each microsecond the batch touches, then one
    ``executemany`` per table (SQLite loops in C; no statement per event)."""
    if not rows:
        return 0
    ids = [r.id for r in rows]
    stored: set[str] = set()
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = ids[i : i + _IN_CHUNK]
        stored.update(r[0] for r in conn.execute(
            f"SELECT id FROM events WHERE id IN ({', '.join('?' * len(chunk))})", chunk
        ))
    if stored:
        rows = [r for r in rows if r.id not in stored]
    if not rows:
        return 0
    spans = [[b, b + tie_span(b)] for b in sorted({r.base for r in rows})]
    taken = dict(conn.execute(
        "SELECT json_extract(b.value, '$[0]'), (SELECT max(seq) FROM events"
        " WHERE seq >= json_extract(b.value, '$[0]') AND seq < json_extract(b.value, '$[1]'))"
        " FROM json_each(?) b",
        (_encode(spans).decode(),),
    ))
    following: dict[int, int] = {}
    placed: list[tuple[int, _Row]] = []
    overflow: list[_Row] = []
    for r in rows:
        seq = following.get(r.base)
        if seq is None:
            top = taken.get(r.base)
            seq = r.base if top is None else top + 1
        if seq >= r.base + tie_span(r.base):
            overflow.append(r)  # every tie of this microsecond taken: placed one by one below
            continue
        following[r.base] = seq + 1
        placed.append((seq, r))
    # In seq order: FTS5 flushes its pending terms as a new segment whenever a rowid is
    # not above the previous one of the transaction, and the tables' B-trees are
    # written page after page instead of all over.
    placed.sort(key=_first)
    _write_rows(conn, placed)
    for r in overflow:
        _write_rows(conn, [(_free_seq(conn, r.base), r)])
    return len(placed) + len(overflow)


def _first(item: tuple[int, _Row]) -> int:
    return item[0]


def _write_rows(conn: sqlite3.Connection, placed: list[tuple[int, _Row]]) -> None:
    conn.executemany(
        "INSERT INTO events(seq, id, occurred_at, action, actor, organization_slug, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(seq, r.id, r.occurred_at, r.action, r.actor, r.organization, r.body) for seq, r in placed],
    )
    conn.executemany(
        "INSERT INTO events_fts(rowid, text) VALUES (?, ?)", [(seq, r.text) for seq, r in placed]
    )
    targets = [(t, seq) for seq, r in placed for t in r.targets]
    if targets:
        conn.executemany("INSERT OR IGNORE INTO event_targets(target, seq) VALUES (?, ?)", targets)
    conn.executemany(
        "INSERT OR IGNORE INTO event_actions(organization_slug, action) VALUES (?, ?)",
        {(r.organization or "", r.action) for _, r in placed},
    )


def _free_seq(conn: sqlite3.Connection, base: int) -> int:
    while True:
        span = tie_span(base)
        row = conn.execute(
            "SELECT max(seq) FROM events WHERE seq >= ? AND seq < ?", (base, base + span)
        ).fetchone()
        if row[0] is None:
            return base
        if row[0] < base + span - 1:
            return row[0] + 1
        base += span  # every tie of this microsecond taken: the next one
