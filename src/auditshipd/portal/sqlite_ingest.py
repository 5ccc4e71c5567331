"""Writing a batch into the SQLite event store, set-based: the rows are computed outside
the write transaction, then one statement finds the ids already stored, one the highest
``seq`` of each microsecond the batch touches (or, for a batch newer than the store, its
newest ``seq`` alone), and one ``executemany`` per table writes them (SQLite loops in C;
no statement per event)."""

from __future__ import annotations

import sqlite3

from .event_rows import EventRow
from .query import seq_base, tie_span
from .store import _encode

__all__ = ["insert_rows"]

_IN_CHUNK = 500


def insert_rows(conn: sqlite3.Connection, rows: list[EventRow]) -> int:
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
    bases = [seq_base(r.when) for r in rows]
    taken = _taken(conn, sorted(set(bases)))
    following: dict[int, int] = {}
    placed: list[tuple[int, EventRow]] = []
    overflow: list[tuple[int, EventRow]] = []
    for base, r in zip(bases, rows, strict=True):
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


def _taken(conn: sqlite3.Connection, bases: list[int]) -> dict[int, int]:
    """The highest stored ``seq`` of each microsecond ``bases`` (sorted) names, where it has
    one. A batch newer than every stored event (a journal shipped in order) needs only the
    store's newest ``seq``; otherwise one statement looks each microsecond up."""
    newest = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    if newest is None or newest < bases[0]:
        return {}
    taken: dict[int, int] = {}
    by_span: dict[int, list[int]] = {}
    for base in bases:
        by_span.setdefault(tie_span(base), []).append(base)
    for span, group in by_span.items():
        taken.update(
            (base, top)
            for base, top in conn.execute(
                "SELECT b.value, (SELECT max(seq) FROM events WHERE seq >= b.value"
                " AND seq < b.value + ?) FROM json_each(?) b",
                (span, _encode(group).decode()),
            )
            if top is not None
        )
    return taken


def _first(item: tuple[int, EventRow]) -> int:
    return item[0]


def _write_rows(conn: sqlite3.Connection, placed: list[tuple[int, EventRow]]) -> None:
    conn.executemany(
        "INSERT INTO events(seq, id, occurred_at, action, actor, organization_slug, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(seq, r.id, r.occurred_at, r.action, r.actor, r.organization, r.body) for seq, r in placed],
    )
    # The portal's access records have no text: no row in the keyword index at all.
    conn.executemany(
        "INSERT INTO events_fts(rowid, text) VALUES (?, ?)",
        [(seq, r.text) for seq, r in placed if r.text],
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
