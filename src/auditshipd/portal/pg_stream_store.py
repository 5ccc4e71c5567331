"""Self-service stream definitions in the PostgreSQL portal store (schema version 3)."""

from __future__ import annotations

import time
from typing import Any

from .pg_sql import pg_text
from .stream_defs import StreamDefinition
from .stream_store import (
    COLUMNS,
    STATUS_COLUMNS,
    StreamChanged,
    StreamLimitReached,
    StreamNameTaken,
    StreamStatus,
    StreamStore,
    definition_of,
    row_of,
)

__all__ = ["PostgresStreamStore"]

_BUMP = "UPDATE log_stream_revision SET revision = revision + 1"
# One organization's inserts are serialised, so two replicas cannot both pass the limit.
_ORG_LOCK = "SELECT pg_advisory_xact_lock(hashtext('auditshipd-streams:' || $1))"


class PostgresStreamStore(StreamStore):
    """Streams on the event store's connection pool."""

    def __init__(self, events: Any) -> None:  # a PostgresEventStore
        self.events = events

    def _pool(self) -> Any:
        return self.events._need_pool()

    async def list(self, organization: str | None = None) -> list[StreamDefinition]:
        sql = f"SELECT {COLUMNS} FROM log_streams"
        args: tuple[Any, ...] = ()
        if organization is not None:
            sql, args = sql + " WHERE organization = $1", (organization,)
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(sql + " ORDER BY organization, name", *args)
        return [definition_of(tuple(r)) for r in rows]

    async def get(self, stream_id: str) -> StreamDefinition | None:
        async with self._pool().acquire() as conn:
            row = await conn.fetchrow(f"SELECT {COLUMNS} FROM log_streams WHERE id = $1",
                                      stream_id)
        return definition_of(tuple(row)) if row else None

    async def insert(self, d: StreamDefinition, limit: int) -> None:
        import asyncpg

        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute(_ORG_LOCK, d.organization)
            count = await conn.fetchval(
                "SELECT count(*) FROM log_streams WHERE organization = $1", d.organization)
            if count >= limit:
                raise StreamLimitReached(d.organization)
            try:
                await conn.execute(
                    f"INSERT INTO log_streams({COLUMNS}) VALUES"
                    " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)", *row_of(d))
            except asyncpg.UniqueViolationError:
                raise StreamNameTaken(d.name) from None
            await conn.execute(_BUMP)

    async def update(self, d: StreamDefinition) -> bool:
        import asyncpg

        row = row_of(d)
        async with self._pool().acquire() as conn, conn.transaction():
            try:
                status = await conn.execute(
                    "UPDATE log_streams SET name = $1, options = $2, secrets = $3,"
                    " secret_names = $4, paused = $5, updated_at = $6, updated_by = $7,"
                    " version = version + 1 WHERE id = $8 AND version = $9",
                    row[2], row[4], row[5], row[6], row[7], row[9], row[11], d.id, d.version)
            except asyncpg.UniqueViolationError:
                raise StreamNameTaken(d.name) from None
            if not status.endswith(" 1"):
                if await conn.fetchval("SELECT 1 FROM log_streams WHERE id = $1", d.id):
                    raise StreamChanged(d.name)
                return False
            await conn.execute(_BUMP)
        return True

    async def delete(self, stream_id: str) -> bool:
        async with self._pool().acquire() as conn, conn.transaction():
            status = await conn.execute("DELETE FROM log_streams WHERE id = $1", stream_id)
            await conn.execute("DELETE FROM log_stream_status WHERE stream_id = $1", stream_id)
            await conn.execute("DELETE FROM log_stream_tests WHERE stream_id = $1", stream_id)
            await conn.execute(_BUMP)
        return status.endswith(" 1")

    async def revision(self) -> int:
        async with self._pool().acquire() as conn:
            return int(await conn.fetchval("SELECT revision FROM log_stream_revision") or 0)

    async def take_test_slot(self, stream_id: str, per_minute: int, now: float | None = None) -> float | None:
        now = time.time() if now is None else now
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('auditshipd-test:' || $1))",
                               stream_id)
            await conn.execute("DELETE FROM log_stream_tests WHERE sent_at <= $1", now - 60)
            rows = await conn.fetch("SELECT sent_at FROM log_stream_tests WHERE stream_id = $1"
                                    " ORDER BY sent_at", stream_id)
            if len(rows) >= per_minute:
                return max(1.0, rows[len(rows) - per_minute][0] + 60 - now)
            await conn.execute("INSERT INTO log_stream_tests(stream_id, sent_at) VALUES ($1, $2)",
                               stream_id, now)
        return None

    async def report(self, host: str, rows: list[StreamStatus]) -> None:
        async with self._pool().acquire() as conn:
            await conn.executemany(
                f"INSERT INTO log_stream_status({STATUS_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (stream_id, host) DO UPDATE"
                " SET state = EXCLUDED.state, last_synced_at = EXCLUDED.last_synced_at,"
                " last_error = EXCLUDED.last_error, lag_events = EXCLUDED.lag_events,"
                " lag_bytes = EXCLUDED.lag_bytes, reported_at = EXCLUDED.reported_at",
                [(r.stream_id, host, r.state, r.last_synced_at, pg_text(r.last_error), r.lag_events,
                  r.lag_bytes, r.reported_at) for r in rows])

    async def statuses(self, stream_ids: list[str]) -> list[StreamStatus]:
        if not stream_ids:
            return []
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {STATUS_COLUMNS} FROM log_stream_status WHERE stream_id = ANY($1::text[])"
                " ORDER BY stream_id, host", stream_ids)
        return [StreamStatus(*tuple(r)) for r in rows]

    async def forget_hosts(self, before: float) -> int:
        async with self._pool().acquire() as conn:
            done = await conn.execute("DELETE FROM log_stream_status WHERE reported_at < $1",
                                      before)
        return int(done.rsplit(" ", 1)[-1])
