"""Writing a batch into the SQLite event store, set-based: the rows are computed outside
the write transaction, then one statement finds what is stored at the microseconds the
batch touches (the highest ``seq`` of each, and the ids there: an event is a duplicate
when one of the same id is stored at the same microsecond; for a batch newer than the
store, its newest ``seq`` alone says there is nothing), one lookup per event without a
usable time finds its id anywhere, and one ``executemany`` per table writes them (SQLite
loops in C; no statement per event)."""

from __future__ import annotations

import sqlite3

from .event_rows import EventRow
from .query import seq_base, tie_span
from .sqlite_keys import event_terms, id_match
from .store import _encode

__all__ = ["insert_rows"]


def insert_rows(conn: sqlite3.Connection, rows: list[EventRow]) -> int:
    """Insert the rows that are not stored yet (see the module docstring); returns how
    many were inserted."""
    if not rows:
        return 0
    bases = [seq_base(r.when) for r in rows]
    taken, present = _taken(conn, sorted(set(bases)))
    following: dict[int, int] = {}
    placed: list[tuple[int, EventRow]] = []
    overflow: list[tuple[int, EventRow]] = []
    for base, r in zip(bases, rows, strict=True):
        if (base, r.id) in present or (
            # Without a time, or at a microsecond so full that a copy may have moved to a
            # later one: look the id up anywhere.
            (r.timeless or taken.get(base) == base + tie_span(base) - 1) and _id_stored(conn, r.id)
        ):
            continue
        seq = following.get(base)
        if seq is None:
            top = taken.get(base)
            seq = base if top is None else top + 1
        if seq >= base + tie_span(base):
            overflow.append((base, r))  # every tie of this microsecond taken: one by one below
            continue
        following[base] = seq + 1
        placed.append((seq, r))
    # In seq order: FTS5 flushes its pending terms as a new segment whenever a rowid is
    # not above the previous one of the transaction, and the tables' B-trees are
    # written page after page instead of all over.
    placed.sort(key=_first)
    _write_rows(conn, placed)
    for base, r in overflow:
        _write_rows(conn, [(_free_seq(conn, base), r)])
    return len(placed) + len(overflow)


def _taken(conn: sqlite3.Connection, bases: list[int]) -> tuple[dict[int, int], set[tuple[int, str]]]:
    """The highest stored ``seq`` of each microsecond ``bases`` (sorted) names, where it has
    one, and the (microsecond, id) of the events stored there. A batch newer than every
    stored event (a journal shipped in order) needs only the store's newest ``seq``;
    otherwise one statement reads the events of those microseconds."""
    newest = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    if newest is None or newest < bases[0]:
        return {}, set()
    taken: dict[int, int] = {}
    present: set[tuple[int, str]] = set()
    by_span: dict[int, list[int]] = {}
    for base in bases:
        by_span.setdefault(tie_span(base), []).append(base)
    for span, group in by_span.items():
        for base, seq, event_id in conn.execute(
            "SELECT b.value, e.seq, e.id FROM json_each(?) b"
            " JOIN events e ON e.seq >= b.value AND e.seq < b.value + ?",
            (_encode(group).decode(), span),
        ):
            present.add((base, event_id))
            if seq > taken.get(base, seq - 1):
                taken[base] = seq
    return taken, present


def _id_stored(conn: sqlite3.Connection, event_id: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM events_keys JOIN events e ON e.seq = events_keys.rowid"
        " WHERE events_keys MATCH ? AND e.id = ? LIMIT 1",
        (id_match(event_id), event_id),
    ).fetchone() is not None


def _first(item: tuple[int, EventRow]) -> int:
    return item[0]


def _write_rows(conn: sqlite3.Connection, placed: list[tuple[int, EventRow]]) -> None:
    conn.executemany(
        "INSERT INTO events(seq, id, occurred_at, action, actor, organization_slug, targets, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(seq, r.id, r.occurred_at, r.action, r.actor, r.organization,
          _encode(r.targets).decode(), r.body) for seq, r in placed],
    )
    conn.executemany(
        "INSERT INTO events_keys(rowid, terms) VALUES (?, ?)",
        [(seq, event_terms(r.id, r.actor, r.targets)) for seq, r in placed],
    )
    # The portal's access records have no text: no row in the keyword index at all.
    conn.executemany(
        "INSERT INTO events_fts(rowid, text) VALUES (?, ?)",
        [(seq, r.text) for seq, r in placed if r.text],
    )
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
