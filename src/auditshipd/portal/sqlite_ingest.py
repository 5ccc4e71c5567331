"""Writing a batch into the SQLite event store, set-based: the rows are computed outside
the write transaction, then one statement finds what is stored at the microseconds the
batch touches (the highest ``seq`` of each, and the ids there: an event is a duplicate
when one of the same id is stored at the same microsecond; for a batch newer than the
store, its newest ``seq`` alone says there is nothing), one lookup per event without a
usable time finds its id anywhere, and one ``executemany`` per table writes them (SQLite
loops in C; no statement per event).

The work is split in two: :func:`prepare_rows` builds every statement's parameters (the
rows, their key terms and targets' JSON, their microseconds; each row's ``seq`` base in
place of its ``seq``) before the write transaction begins (it needs no connection);
:func:`insert_rows` then only reads what is stored at those microseconds, numbers the new
rows and runs the statements. A batch with one event per microsecond, none of them stored
yet (a journal shipped in order), keeps the bases as its ``seq``s and is written without
a Python statement per event. The C
extension ``_tsvector_c`` builds the parameters of a whole batch in one call (``rows``:
the same values, byte for byte); the lines it hands back (an escape, a key outside ASCII,
a time not written as the journal writes it, ...) take :func:`event_row`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from .event_rows import ACCESS_ACTIONS, event_row, first_of_each, rows_c
from .query import TIE_BITS, seq_base, tie_span
from .sqlite_keys import event_terms, id_match
from .store import _encode

__all__ = ["PreparedRows", "insert_rows", "prepare_rows"]


class PreparedRows(NamedTuple):
    """A batch ready for :func:`insert_rows`, each event id once (its first line): per row,
    its ``seq_base`` and the parameters of its ``events``, ``events_keys`` and
    ``events_fts`` rows, each starting with the row's ``seq``, its ``seq_base`` until
    :func:`insert_rows` numbers it otherwise (an access record, without keyword text, has
    no ``events_fts`` row: None); ``timeless``: the rows (by index) whose event had no
    usable time."""

    bases: list[int]
    events: list[tuple[object, ...]]
    keys: list[tuple[object, ...]]
    texts: list[tuple[object, ...] | None]
    timeless: frozenset[int]


# A row's values, as the C extension's ``rows`` gives them: (seq_base, id, occurred_at,
# action, actor, organization_slug, targets' JSON, body, key terms, keyword text).
_Values = tuple[int, str, str, str, str, "str | None", str, str, str, str]


def _python_values(line: bytes) -> tuple[_Values, bool]:
    """What ``rows`` gives for a line, from :func:`event_row`, and whether it is timeless."""
    r = event_row(line)
    return ((seq_base(r.when), r.id, r.occurred_at, r.action, r.actor, r.organization,
             _encode(r.targets).decode(), r.body, event_terms(r.id, r.actor, r.targets),
             r.text), r.timeless)


def prepare_rows(lines: Sequence[bytes]) -> PreparedRows:
    """Everything :func:`insert_rows` writes that does not depend on what is stored. Built
    by comprehensions over the extension's rows, not a loop per event: a batch of lines
    the extension answers, without an id given twice, costs no Python statement per event."""
    lines = lines if type(lines) is list else list(lines)
    c = rows_c()
    built: list[_Values | None] = (
        c(lines, TIE_BITS, ACCESS_ACTIONS) if c is not None else [None] * len(lines))
    late: set[int] = set()
    if None in built:
        for k, values in enumerate(built):
            if values is None:
                built[k], timeless = _python_values(lines[k])
                if timeless:
                    late.add(k)
    rows: list[_Values] = built  # type: ignore[assignment]
    keep = first_of_each([v[1] for v in rows])
    if keep is not None:  # an id given twice: its first line only
        late = {n for n, k in enumerate(keep) if k in late}
        rows = [rows[k] for k in keep]
    return PreparedRows(
        [v[0] for v in rows],
        [v[:8] for v in rows],  # the values start with the events row's, seq_base first
        [(v[0], v[8]) for v in rows],
        [(v[0], v[9]) if v[9] else None for v in rows],
        frozenset(late),
    )


def insert_rows(conn: sqlite3.Connection, batch: PreparedRows) -> int:
    """Insert the rows that are not stored yet (see the module docstring); returns how
    many were inserted."""
    bases, events, timeless = batch.bases, batch.events, batch.timeless
    if not bases:
        return 0
    distinct = sorted(set(bases))
    taken, present = _taken(conn, distinct)
    if not taken and not timeless and len(distinct) == len(bases):
        # Nothing stored at these microseconds and one event at each (a journal shipped in
        # order): every row keeps its seq_base as its seq, in seq order.
        order = None if bases == distinct else sorted(range(len(bases)), key=bases.__getitem__)
        _write_rows(conn, batch, order)
        return len(bases)
    following: dict[int, int] = {}
    placed: list[tuple[int, int]] = []  # (seq, index in the batch)
    overflow: list[tuple[int, int]] = []
    for i, base in enumerate(bases):
        event_id = events[i][1]
        if present and (base, event_id) in present or (
            # Without a time, or at a microsecond so full that a copy may have moved to a
            # later one: look the id up anywhere.
            (i in timeless or taken.get(base) == base + tie_span(base) - 1)
            and _id_stored(conn, event_id)
        ):
            continue
        seq = following.get(base)
        if seq is None:
            top = taken.get(base)
            seq = base if top is None else top + 1
        if seq >= base + tie_span(base):
            overflow.append((base, i))  # every tie of this microsecond taken: one by one below
            continue
        following[base] = seq + 1
        placed.append((seq, i))
    # In seq order: FTS5 flushes its pending terms as a new segment whenever a rowid is
    # not above the previous one of the transaction, and the tables' B-trees are
    # written page after page instead of all over.
    placed.sort()
    _number(batch, placed)
    _write_rows(conn, batch, [i for _, i in placed])
    for base, i in overflow:
        seq = _free_seq(conn, base)
        _number(batch, [(seq, i)])
        _write_rows(conn, batch, [i])
        if seq >= base + tie_span(base):  # past its microsecond: since/until look it up
            conn.execute("INSERT INTO events_moved(seq, base) VALUES (?, ?)", (seq, base))
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


def _number(batch: PreparedRows, placed: list[tuple[int, int]]) -> None:
    """Give the rows at ``placed`` (seq, index) their seq in each table's parameters."""
    events, keys, texts = batch.events, batch.keys, batch.texts
    for seq, i in placed:
        events[i] = (seq, *events[i][1:])
        keys[i] = (seq, keys[i][1])
        text = texts[i]
        if text is not None:
            texts[i] = (seq, text[1])


def _write_rows(conn: sqlite3.Connection, batch: PreparedRows, rows: list[int] | None) -> None:
    """Write the rows at indexes ``rows`` (None: all, in batch order)."""
    events, keys, texts = batch.events, batch.keys, batch.texts
    if rows is not None:
        events = [events[i] for i in rows]
        keys = [keys[i] for i in rows]
        texts = [texts[i] for i in rows]
    conn.executemany(
        "INSERT INTO events(seq, id, occurred_at, action, actor, organization_slug, targets, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", events)
    conn.executemany("INSERT INTO events_keys(rowid, terms) VALUES (?, ?)", keys)
    # the portal's access records have no keyword index row
    conn.executemany("INSERT INTO events_fts(rowid, text) VALUES (?, ?)", filter(None, texts))
    conn.executemany(
        "INSERT OR IGNORE INTO event_actions(organization_slug, action) VALUES (?, ?)",
        {(e[5] or "", e[3]) for e in events},
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
