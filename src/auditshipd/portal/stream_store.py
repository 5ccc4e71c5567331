"""Self-service stream definitions and their delivery status, in the portal's store.

:class:`StreamStore` is the one interface; :class:`SQLiteStreamStore` keeps them in the
embedded database, :class:`~auditshipd.portal.pg_stream_store.PostgresStreamStore` in the
PostgreSQL one, so every portal replica and every daemon of a fleet reads the same
definitions. Every change bumps one counter (:meth:`StreamStore.revision`): a daemon
compares it every few seconds and reloads its streams when it moved.

Each daemon reports the state of the streams it runs (:meth:`report`), one row per
stream and host; the portal aggregates them. Test events sent are counted here too, so
the rate limit holds across replicas.
"""

from __future__ import annotations

import abc
import json
import time
from dataclasses import dataclass
from typing import Any

from .stream_defs import StreamDefinition

__all__ = [
    "SQLITE_STREAMS_SCHEMA",
    "SQLiteStreamStore",
    "StreamChanged",
    "StreamLimitReached",
    "StreamNameTaken",
    "StreamStatus",
    "StreamStore",
    "status_fresh_for",
]

SQLITE_STREAMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_streams (
    id TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    options TEXT NOT NULL,
    secrets TEXT,
    secret_names TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    UNIQUE (organization, name)
);
CREATE TABLE IF NOT EXISTS log_stream_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT OR IGNORE INTO log_stream_revision(id, revision) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS log_stream_status (
    stream_id TEXT NOT NULL,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    last_synced_at TEXT,
    last_error TEXT,
    lag_events INTEGER,
    lag_bytes INTEGER,
    reported_at REAL NOT NULL,
    PRIMARY KEY (stream_id, host)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_stream_tests (
    stream_id TEXT NOT NULL,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS log_stream_tests_stream ON log_stream_tests(stream_id, sent_at);
"""

COLUMNS = ("id, organization, name, type, options, secrets, secret_names, paused,"
           " created_at, updated_at, created_by, updated_by, version")
STATUS_COLUMNS = "stream_id, host, state, last_synced_at, last_error, lag_events, lag_bytes, reported_at"


class StreamNameTaken(ValueError):
    """The organization has a stream of this name already."""


class StreamChanged(ValueError):
    """The stream was changed since it was read: the edit would undo that change."""


class StreamLimitReached(ValueError):
    """The organization has as many streams as ``max_streams_per_organization`` allows."""


@dataclass(frozen=True)
class StreamStatus:
    """What one daemon (``host``) last said about one stream."""

    stream_id: str
    host: str
    state: str
    last_synced_at: str | None
    last_error: str | None
    lag_events: int | None
    lag_bytes: int | None
    reported_at: float


def status_fresh_for(poll_interval: float) -> float:
    """Seconds a host's report of a stream stays current: past them the portal counts the
    stream inactive on that host. A host reports each of its streams at least twice within
    them, however many it runs."""
    return max(60.0, 6 * poll_interval)


def definition_of(row: Any) -> StreamDefinition:
    (id_, org, name, kind, options, sealed, names, paused, created_at, updated_at,
     created_by, updated_by, version) = row
    return StreamDefinition(id_, org, name, kind, json.loads(options), sealed,
                            json.loads(names), bool(paused), created_at, updated_at,
                            created_by, updated_by, int(version))


def row_of(d: StreamDefinition) -> tuple[Any, ...]:
    return (d.id, d.organization, d.name, d.type, json.dumps(d.options), d.sealed,
            json.dumps(sorted(d.secret_names)), d.paused, d.created_at, d.updated_at,
            d.created_by, d.updated_by, d.version)


class StreamStore(abc.ABC):
    """Stream definitions, their status and their test-event counts."""

    @abc.abstractmethod
    async def list(self, organization: str | None = None) -> list[StreamDefinition]:
        """The streams of an organization (None: every organization), by organization
        and name."""

    @abc.abstractmethod
    async def get(self, stream_id: str) -> StreamDefinition | None: ...

    @abc.abstractmethod
    async def insert(self, d: StreamDefinition, limit: int) -> None:
        """Store a new stream; StreamLimitReached when its organization has ``limit``
        streams already, StreamNameTaken when the name is taken (one transaction)."""

    @abc.abstractmethod
    async def update(self, d: StreamDefinition) -> bool:
        """Store a changed stream (same id, ``version`` as read); False when it no
        longer exists, StreamChanged when another change was stored since it was read."""

    @abc.abstractmethod
    async def delete(self, stream_id: str) -> bool: ...

    @abc.abstractmethod
    async def revision(self) -> int:
        """A counter that moves on every change of a definition."""

    @abc.abstractmethod
    async def take_test_slot(self, stream_id: str, per_minute: int, now: float | None = None) -> float | None:
        """Count one test event of ``stream_id``; when ``per_minute`` were sent in the
        last 60 seconds, count nothing and return the seconds until the next is allowed."""

    @abc.abstractmethod
    async def report(self, host: str, rows: list[StreamStatus]) -> None:
        """Replace what ``host`` said about these streams."""

    @abc.abstractmethod
    async def statuses(self, stream_ids: list[str]) -> list[StreamStatus]: ...

    @abc.abstractmethod
    async def forget_hosts(self, before: float) -> int:
        """Delete what hosts said before ``before`` (epoch seconds) and have not said
        since: hosts that stopped reporting (taken out of the fleet, replaced by an
        autoscaler) do not pile up, one row per stream each. How many rows went."""


class SQLiteStreamStore(StreamStore):
    """Streams in the embedded database, on the event store's threads."""

    def __init__(self, events: Any) -> None:  # a SQLiteEventStore
        self.events = events

    def _conn(self) -> Any:
        return self.events._conn()

    async def list(self, organization: str | None = None) -> list[StreamDefinition]:
        return await self.events._read(self._list_sync, organization)

    def _list_sync(self, organization: str | None) -> list[StreamDefinition]:
        sql = f"SELECT {COLUMNS} FROM log_streams"
        args: tuple[Any, ...] = ()
        if organization is not None:
            sql, args = sql + " WHERE organization = ?", (organization,)
        rows = self._conn().execute(sql + " ORDER BY organization, name", args).fetchall()
        return [definition_of(r) for r in rows]

    async def get(self, stream_id: str) -> StreamDefinition | None:
        return await self.events._read(self._get_sync, stream_id)

    def _get_sync(self, stream_id: str) -> StreamDefinition | None:
        row = self._conn().execute(f"SELECT {COLUMNS} FROM log_streams WHERE id = ?",
                                   (stream_id,)).fetchone()
        return definition_of(row) if row else None

    def _transaction(self, fn: Any, *args: Any) -> Any:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, *args)
            conn.execute("COMMIT")
            return result
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def insert(self, d: StreamDefinition, limit: int) -> None:
        await self.events._write(self._transaction, self._insert_sync, d, limit)

    @staticmethod
    def _insert_sync(conn: Any, d: StreamDefinition, limit: int) -> None:
        count = conn.execute("SELECT count(*) FROM log_streams WHERE organization = ?",
                             (d.organization,)).fetchone()[0]
        if count >= limit:
            raise StreamLimitReached(d.organization)
        if conn.execute("SELECT 1 FROM log_streams WHERE organization = ? AND name = ?",
                        (d.organization, d.name)).fetchone():
            raise StreamNameTaken(d.name)
        conn.execute(f"INSERT INTO log_streams({COLUMNS}) VALUES ({', '.join('?' * 13)})",
                     row_of(d))
        conn.execute("UPDATE log_stream_revision SET revision = revision + 1")

    async def update(self, d: StreamDefinition) -> bool:
        return await self.events._write(self._transaction, self._update_sync, d)

    @staticmethod
    def _update_sync(conn: Any, d: StreamDefinition) -> bool:
        row = row_of(d)
        done = conn.execute(
            "UPDATE log_streams SET name = ?, options = ?, secrets = ?, secret_names = ?,"
            " paused = ?, updated_at = ?, updated_by = ?, version = version + 1"
            " WHERE id = ? AND version = ?",
            (row[2], row[4], row[5], row[6], row[7], row[9], row[11], d.id, d.version)).rowcount
        if not done:
            if conn.execute("SELECT 1 FROM log_streams WHERE id = ?", (d.id,)).fetchone():
                raise StreamChanged(d.name)
            return False
        conn.execute("UPDATE log_stream_revision SET revision = revision + 1")
        return True

    async def delete(self, stream_id: str) -> bool:
        return await self.events._write(self._transaction, self._delete_sync, stream_id)

    @staticmethod
    def _delete_sync(conn: Any, stream_id: str) -> bool:
        done = conn.execute("DELETE FROM log_streams WHERE id = ?", (stream_id,)).rowcount
        conn.execute("DELETE FROM log_stream_status WHERE stream_id = ?", (stream_id,))
        conn.execute("DELETE FROM log_stream_tests WHERE stream_id = ?", (stream_id,))
        conn.execute("UPDATE log_stream_revision SET revision = revision + 1")
        return bool(done)

    async def revision(self) -> int:
        return await self.events._read(self._revision_sync)

    def _revision_sync(self) -> int:
        row = self._conn().execute("SELECT revision FROM log_stream_revision").fetchone()
        return int(row[0]) if row else 0

    async def take_test_slot(self, stream_id: str, per_minute: int, now: float | None = None) -> float | None:
        return await self.events._write(self._transaction, self._slot_sync, stream_id,
                                        per_minute, time.time() if now is None else now)

    @staticmethod
    def _slot_sync(conn: Any, stream_id: str, per_minute: int, now: float) -> float | None:
        conn.execute("DELETE FROM log_stream_tests WHERE sent_at <= ?", (now - 60,))
        rows = conn.execute("SELECT sent_at FROM log_stream_tests WHERE stream_id = ?"
                            " ORDER BY sent_at", (stream_id,)).fetchall()
        if len(rows) >= per_minute:
            return max(1.0, rows[len(rows) - per_minute][0] + 60 - now)
        conn.execute("INSERT INTO log_stream_tests(stream_id, sent_at) VALUES (?, ?)",
                     (stream_id, now))
        return None

    async def report(self, host: str, rows: list[StreamStatus]) -> None:
        await self.events._write(self._transaction, self._report_sync, host, rows)

    @staticmethod
    def _report_sync(conn: Any, host: str, rows: list[StreamStatus]) -> None:
        conn.executemany(
            f"INSERT OR REPLACE INTO log_stream_status({STATUS_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.stream_id, host, r.state, r.last_synced_at, r.last_error, r.lag_events,
              r.lag_bytes, r.reported_at) for r in rows])

    async def statuses(self, stream_ids: list[str]) -> list[StreamStatus]:
        return await self.events._read(self._statuses_sync, stream_ids)

    async def forget_hosts(self, before: float) -> int:
        return await self.events._write(self._transaction, self._forget_sync, before)

    @staticmethod
    def _forget_sync(conn: Any, before: float) -> int:
        return conn.execute("DELETE FROM log_stream_status WHERE reported_at < ?",
                            (before,)).rowcount

    def _statuses_sync(self, stream_ids: list[str]) -> list[StreamStatus]:
        if not stream_ids:
            return []
        marks = ", ".join("?" * len(stream_ids))
        rows = self._conn().execute(
            f"SELECT {STATUS_COLUMNS} FROM log_stream_status WHERE stream_id IN ({marks})"
            " ORDER BY stream_id, host", stream_ids).fetchall()
        return [StreamStatus(*r) for r in rows]

