"""Writing a batch of events into the PostgreSQL store.

A batch travels as one binary ``COPY`` straight into ``events``: every value in the
server's binary form (the ``tsvector`` included, see
:mod:`~auditshipd.portal.pg_vectors`), so the server parses nothing and pays
for the rows and their indexes only. The primary key ``(id, occurred_at)`` keeps the
store idempotent: a batch holding an event that is already stored (a redelivery, or the
same event shipped by another host) fails as a whole, is rolled back and goes through the
careful path: the rows are copied into a temporary table and moved with ``INSERT ...
SELECT ... ON CONFLICT DO NOTHING``, in batch order, so only the new ones are stored.
After such a conflict the next batches take the careful path directly for a while (a
redelivered backlog is a run of duplicates). So does a batch with an event without a
usable time, which is also checked by id, since its time is the time it arrived (a
redelivery would otherwise get another one).

The (organization, action) pairs of the filter list are written in the same transaction,
only those this writer has not stored before (the list is never shortened).

The records of a batch (:func:`batch_records`) come from the C extension ``_tsvector_c``
in one call (``pg_rows``: the same values :func:`copy_records` computes from
:func:`~auditshipd.portal.event_rows.event_row`, keyword vector included); the lines it
hands back (an escape, text outside ASCII, a time not written as the journal writes it,
...), or every line without it or with ``AUDITSHIPD_TSVECTOR_C=0``, take the Python code.
A batch the extension answers in full, without an id given twice, takes no Python work
per event beyond a comprehension over the records' ids.

The ``COPY`` input of a batch is written by the C extension ``_pgcopy_c`` in one call
(the bytes asyncpg's ``copy_records_to_table`` sends for the same records); without it,
or switched off with ``AUDITSHIPD_PGCOPY_C=0``, asyncpg encodes the records.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .event_rows import ACCESS_ACTIONS, EventRow, event_row, first_of_each, tsvector_c_on
from .pg_sql import PG_EPOCH, pg_text
from .pg_vectors import row_vectors

try:
    from ._pgcopy_c import rows as _built_copy
except ImportError:  # built without a C compiler: asyncpg encodes the records
    _built_copy = None
try:
    from ._tsvector_c import pg_rows as _built_rows
except ImportError:  # built without a C compiler: event_row() and row_vectors() do every line
    _built_rows = None

__all__ = ["BatchRecords", "BatchWriter", "batch_records", "copy_c", "copy_records", "pg_rows_c"]

COLUMNS = ("id", "occurred_at", "action", "actor", "organization_slug", "targets", "search", "body")
_UNIQUE_VIOLATION = "23505"
# Two hosts' overlapping batches at once: COPY into the partitioned table inserts each
# partition's rows in groups, so two COPYs can meet the same events in different orders
# and one of them is chosen as a deadlock's victim. Its batch is redone the careful way,
# whose single INSERT goes in batch order (and is itself redone if it is a victim again).
_DEADLOCK = "40P01"
_DEADLOCK_RETRIES = 3
# Batches that go the careful way after one that met a stored event.
CAREFUL_BATCHES = 8
_STAGING = """
CREATE TEMPORARY TABLE IF NOT EXISTS events_batch (
    ord integer NOT NULL,
    timeless boolean NOT NULL,
    id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    action text NOT NULL,
    actor text NOT NULL,
    organization_slug text,
    targets text[] NOT NULL,
    search tsvector NOT NULL,
    body text NOT NULL
) ON COMMIT DELETE ROWS"""
_MOVE = """
INSERT INTO events (id, occurred_at, action, actor, organization_slug, targets, search, body)
SELECT id, occurred_at, action, actor, organization_slug, targets, search, body
FROM events_batch s
WHERE NOT s.timeless OR NOT EXISTS (SELECT 1 FROM events e WHERE e.id = s.id)
ORDER BY s.ord
ON CONFLICT DO NOTHING"""
_LOCK_IDS = """
SELECT pg_advisory_xact_lock(k) FROM (
    SELECT DISTINCT hashtextextended(id, 0) AS k FROM unnest($1::text[]) AS id ORDER BY k
) ids"""
_ACTIONS = """
INSERT INTO event_actions (organization_slug, action)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT DO NOTHING"""
# The careful path sorts a batch of thousands of events (bodies included) into batch
# order: in memory, not spilled to temporary files as the default 4 MB would.
_BATCH_MEMORY = "SET LOCAL work_mem = '64MB'"


def copy_c() -> Callable[[list[tuple[Any, ...]], Any], bytes] | None:
    """The C extension's ``COPY`` writer, or None (not built, or ``AUDITSHIPD_PGCOPY_C=0``)."""
    if os.environ.get("AUDITSHIPD_PGCOPY_C", "1") == "0":
        return None
    return _built_copy


def pg_rows_c() -> Callable[[list[bytes], frozenset[str]], list[tuple[Any, ...] | None]] | None:
    """The C extension's ``pg_rows``, or None (not built, or ``AUDITSHIPD_TSVECTOR_C=0``)."""
    return _built_rows if tsvector_c_on() else None


class BatchRecords(NamedTuple):
    """A batch ready for :meth:`BatchWriter.write`: the ``COPY`` record of each event, in
    batch order, each id once (its first line); ``timeless``: per record, whether its event
    had no usable time (its time is when it arrived)."""

    records: list[tuple[Any, ...]]
    timeless: list[bool]


def batch_records(lines: Sequence[bytes]) -> BatchRecords:
    """The records of a batch: the extension's, Python's for the lines it hands back."""
    lines = lines if type(lines) is list else list(lines)
    c = pg_rows_c()
    built: list[tuple[Any, ...] | None] = (
        c(lines, ACCESS_ACTIONS) if c is not None else [None] * len(lines))
    timeless = [False] * len(built)
    if None in built:
        back = [k for k, record in enumerate(built) if record is None]
        rows = [event_row(lines[k], text=False) for k in back]
        for k, row, record in zip(back, rows, copy_records(rows), strict=True):
            built[k] = record
            timeless[k] = row.timeless
    records: list[tuple[Any, ...]] = built  # type: ignore[assignment]
    keep = first_of_each([r[0] for r in records])
    if keep is not None:  # an id given twice: its first line only
        records = [records[k] for k in keep]
        timeless = [timeless[k] for k in keep]
    return BatchRecords(records, timeless)


def _record(row: EventRow, vector: bytes) -> tuple[Any, ...]:
    """A row's values for ``COPY``; text cannot hold NUL, which JSON writes ``\\u0000``."""
    if "\\u0000" in row.body:
        return (pg_text(row.id), row.when, pg_text(row.action), pg_text(row.actor),
                pg_text(row.organization), [pg_text(t) for t in row.targets], vector, row.body)
    return (row.id, row.when, row.action, row.actor, row.organization, row.targets, vector,
            row.body)


def copy_records(rows: Sequence[EventRow]) -> list[tuple[Any, ...]]:
    """The ``COPY`` values of each row, its keyword vector included."""
    return [_record(r, v) for r, v in zip(rows, row_vectors(rows), strict=True)]


class BatchWriter:
    """Writes batches for one store; remembers the stored action pairs and recent
    conflicts (see the module docstring)."""

    def __init__(self) -> None:
        self.actions: set[tuple[str, str]] = set()
        self.careful = 0

    def reset(self) -> None:
        self.actions.clear()
        self.careful = 0

    async def write(self, conn: Any, batch: BatchRecords) -> int:
        """Store a batch (its months' partitions exist; built off the event loop by
        :func:`batch_records`); returns how many events were new."""
        records, timeless = batch
        new_actions = {(r[4] or "", r[2]) for r in records} - self.actions
        if self.careful or True in timeless:
            self.careful = max(self.careful - 1, 0)
            stored = await self._careful(conn, records, timeless, new_actions)
        else:
            try:
                if new_actions:
                    async with conn.transaction():
                        await self._add_actions(conn, new_actions)
                        status = await self._copy(conn, records)
                else:  # one statement, its own transaction: one round trip
                    status = await self._copy(conn, records)
                stored = int(status.rsplit(" ", 1)[1])
            except Exception as exc:
                if getattr(exc, "sqlstate", None) not in (_UNIQUE_VIOLATION, _DEADLOCK):
                    raise
                self.careful = CAREFUL_BATCHES
                stored = await self._careful(conn, records, timeless, new_actions)
        self.actions |= new_actions
        return stored

    async def _careful(
        self, conn: Any, records: list[tuple[Any, ...]], timeless: list[bool],
        new_actions: set[tuple[str, str]],
    ) -> int:
        for attempt in range(1, _DEADLOCK_RETRIES + 1):
            try:
                return await self._careful_once(conn, records, timeless, new_actions)
            except Exception as exc:
                if getattr(exc, "sqlstate", None) != _DEADLOCK or attempt == _DEADLOCK_RETRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _careful_once(
        self, conn: Any, records: list[tuple[Any, ...]], timeless: list[bool],
        new_actions: set[tuple[str, str]],
    ) -> int:
        async with conn.transaction():
            await conn.execute(_BATCH_MEMORY)
            await conn.execute(_STAGING)
            await conn.copy_records_to_table(
                "events_batch",
                records=[(i, t, *r) for i, (t, r) in enumerate(zip(timeless, records, strict=True))],
                columns=("ord", "timeless", *COLUMNS),
            )
            await self._add_actions(conn, new_actions)
            # An event without a usable time is keyed by its arrival time, so the primary
            # key cannot see it twice: hosts storing the same ids take turns, and each
            # looks for the id after the other's commit.
            unkeyed = sorted({r[0] for r, t in zip(records, timeless, strict=True) if t})
            if unkeyed:
                await conn.execute(_LOCK_IDS, unkeyed)
            status = await conn.execute(_MOVE)
        return int(status.rsplit(" ", 1)[1])

    @staticmethod
    async def _copy(conn: Any, records: list[tuple[Any, ...]]) -> str:
        write = copy_c()
        if write is None:
            return str(await conn.copy_records_to_table("events", records=records, columns=COLUMNS))
        # a memoryview: asyncpg would take bytes for a file name
        data = memoryview(write(records, PG_EPOCH))
        return str(await conn.copy_to_table("events", source=data, columns=COLUMNS, format="binary"))

    @staticmethod
    async def _add_actions(conn: Any, pairs: set[tuple[str, str]]) -> None:
        if pairs:
            ordered = sorted(pairs)
            await conn.execute(_ACTIONS, [p[0] for p in ordered], [p[1] for p in ordered])
