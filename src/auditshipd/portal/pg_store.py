"""The portal's event store on a PostgreSQL server, shared by many hosts and replicas.

``[portal] database = "postgresql://user:pass@host:5432/db"`` selects it (asyncpg, the
``postgres`` extra). The schema is managed by :mod:`auditshipd.portal.pg_schema`;
:meth:`PostgresEventStore.open` only checks its version.

Many daemons write at once: a batch travels as one binary ``COPY`` into ``events``
(:mod:`auditshipd.portal.pg_ingest`); the primary key keeps redeliveries and the same
event shipped by two hosts stored once, without any lock between writers. Monthly
partitions are created on demand under an advisory lock.

Ordering is ``(occurred_at, ingest)``: time, then insertion order, the same order as the
SQLite store's ``seq``. A cursor carries both (its own format, version 2). Keyword search
uses a ``tsvector`` of exactly the tokens :func:`~auditshipd.portal.query.tokenize` finds
(diacritics folded like FTS5's ``unicode61``), positions kept, and a ``tsquery`` of
phrases (``a <-> b <-> c:*``) rebuilt from tokens: user text never reaches a parser.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from .config import is_postgres_url
from .pg_errors import (
    BAD_URL,
    DatabaseURLError,
    connect_argument_error,
    describe,
    one_line_pool_log,
    safe_location,
)
from .pg_errors import url_problem as _url_problem
from .pg_ingest import BatchWriter, batch_records
from .pg_schema import check_schema
from .pg_sql import PG_EPOCH, decode_cursor, encode_cursor, pg_text, select_events
from .query import EventFilter, format_time, query_phrases
from .store import (
    MAX_LIMIT,
    EventStore,
    Page,
    PurgeResult,
    never,
)

__all__ = ["PostgresEventStore", "is_postgres_url", "safe_location"]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_PURGE_CHUNK = 2000
_PARTITION_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':auditshipd-partitions'))"


def _month_starts(records: Sequence[tuple[Any, ...]]) -> set[_dt.datetime]:
    """The first instant of each month the records' times (their second value) fall in."""
    months = {(r[1].year, r[1].month) for r in records}
    return {_dt.datetime(y, m, 1, tzinfo=_dt.timezone.utc) for y, m in months}


def _next_month(start: _dt.datetime) -> _dt.datetime | None:
    if start.month == 12:
        return None if start.year == 9999 else start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def _partition_name(start: _dt.datetime) -> str:
    return f"events_p{start.year:04d}{start.month:02d}"


def _partition_bounds(name: str) -> tuple[_dt.datetime, _dt.datetime | None] | None:
    if not (name.startswith("events_p") and len(name) == 14 and name[8:].isdigit()):
        return None
    start = _dt.datetime(int(name[8:12]), int(name[12:14]), 1, tzinfo=_dt.timezone.utc)
    return start, _next_month(start)


def _literal(when: _dt.datetime | None) -> str:
    return "MAXVALUE" if when is None else f"'{format_time(when)}'"


def _encode_time(when: _dt.datetime) -> tuple[int]:
    delta = when - PG_EPOCH
    return ((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds,)


def _decode_time(value: tuple[int]) -> _dt.datetime:
    return PG_EPOCH + _dt.timedelta(microseconds=value[0])


async def _init_connection(conn: Any) -> None:
    # asyncpg maps 0001-01-01T00:00Z and 9999-12-31T23:59:59.999999Z to -infinity and
    # infinity; an audit event at either instant is still a time, so timestamps travel
    # as plain microseconds.
    await conn.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=_encode_time, decoder=_decode_time,
        format="tuple",
    )
    # Keyword vectors are built by the writer in their binary form (pg_vectors).
    await conn.set_type_codec(
        "tsvector", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary"
    )


# "no partition of relation ... found for row" (check_violation): a row whose month has
# no partition.
_NO_PARTITION = "23514"
_UNDEFINED_TABLE = "42P01"

class PostgresEventStore(EventStore):
    """Events in a PostgreSQL database (schema from ``auditshipd portal migrate``)."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.url = url
        self.where = safe_location(url)
        self.min_size = min_size
        self.max_size = max_size
        self.pool: Any = None
        self._partitions: set[str] = set()
        self._writer = BatchWriter()

    async def open(self) -> None:
        if self.pool is not None:
            return
        import asyncpg

        # A URL that splits differently for asyncpg would have it quote (and connect
        # with) pieces of the password: refused before it is handed over.
        if _url_problem(self.url) is not None:
            raise DatabaseURLError(f"the portal database's URL is {BAD_URL}")
        one_line_pool_log()
        try:
            pool = await asyncpg.create_pool(
                self.url, min_size=self.min_size, max_size=self.max_size,
                command_timeout=60, server_settings={"application_name": "auditshipd"},
                init=_init_connection,
            )
        except Exception as exc:
            if not connect_argument_error(exc):
                raise
            raise DatabaseURLError(describe(exc)) from None  # its text quotes the URL
        try:
            async with pool.acquire() as conn:
                await check_schema(conn, self.where)
        except BaseException:
            await pool.close()
            raise
        self.pool = pool

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        self._writer.reset()
        if pool is not None:
            await pool.close()

    def _need_pool(self) -> Any:
        if self.pool is None:
            raise RuntimeError("the portal store is not open")
        return self.pool

    # -- writing ----------------------------------------------------------------------

    async def insert_events(
        self, events: Sequence[Mapping[str, Any]], lines: Sequence[bytes] | None = None
    ) -> int:
        if not events:
            return 0
        return await self.insert_lines(list(lines) if lines else [_encode(e) for e in events])

    async def insert_lines(self, lines: Sequence[bytes]) -> int:
        if not lines:
            return 0
        # Rows and COPY values in a worker thread: a batch takes tens of milliseconds of
        # CPU, which the event loop (every other sink, the portal's requests) would wait.
        batch = await asyncio.to_thread(batch_records, lines)
        months = _month_starts(batch.records)
        async with self._need_pool().acquire() as conn:
            await self._ensure_partitions(conn, months)
            try:
                return await self._writer.write(conn, batch)
            except Exception as exc:
                # A month this process saw was dropped since by another host's retention:
                # forget what it knows of the months, create them again, once.
                if getattr(exc, "sqlstate", None) != _NO_PARTITION:
                    raise
                self._partitions.clear()
                await self._ensure_partitions(conn, months)
                return await self._writer.write(conn, batch)

    async def _ensure_partitions(self, conn: Any, months: set[_dt.datetime]) -> None:
        missing = {m for m in months if _partition_name(m) not in self._partitions}
        if not missing:
            return
        names = [_partition_name(m) for m in missing]
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass AND c.relname = ANY($1::text[])",
            names,
        )
        self._partitions.update(r[0] for r in rows)
        for start in sorted(missing):
            name = _partition_name(start)
            if name in self._partitions:
                continue
            # Writers on other hosts may create the same month now: one at a time.
            async with conn.transaction():
                await conn.execute(_PARTITION_LOCK)
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF events"
                    f" FOR VALUES FROM ({_literal(start)}) TO ({_literal(_next_month(start))})"
                )
            self._partitions.add(name)

    async def purge(self, older_than: _dt.datetime) -> int:
        return (await self.purge_expired(older_than, {})).total

    async def purge_expired(
        self,
        default_cutoff: _dt.datetime | None,
        organization_cutoffs: Mapping[str, _dt.datetime | None] | None = None,
        stop: Callable[[], bool] = never,
    ) -> PurgeResult:
        overrides = dict(organization_cutoffs or {})
        counts: dict[str | None, int] = {}

        def add(slug: str | None, n: int) -> None:
            if n:
                counts[slug] = counts.get(slug, 0) + n

        pool = self._need_pool()
        async with pool.acquire() as conn:
            if default_cutoff is not None:
                for slug, n in await self._drop_partitions(conn, default_cutoff, overrides, stop):
                    add(slug, n)
            for slug, cutoff in sorted(overrides.items()):
                if cutoff is not None:
                    for s, n in await self._delete_where(
                        conn, "organization_slug = $1 AND occurred_at < $2", [slug, cutoff], stop
                    ):
                        add(s, n)
            if default_cutoff is not None:
                if overrides:
                    cond = ("(organization_slug IS NULL OR NOT organization_slug = ANY($1::text[]))"
                            " AND occurred_at < $2")
                    params: list[Any] = [sorted(overrides), default_cutoff]
                else:
                    cond, params = "occurred_at < $1", [default_cutoff]
                for s, n in await self._delete_where(conn, cond, params, stop):
                    add(s, n)
        without = counts.pop(None, 0)
        return PurgeResult({k: v for k, v in counts.items() if k is not None}, without)

    async def _drop_partitions(
        self, conn: Any, cutoff: _dt.datetime, overrides: dict[str, _dt.datetime | None],
        stop: Callable[[], bool],
    ) -> list[tuple[str | None, int]]:
        """Drop each month that ends before ``cutoff`` and holds no event that an
        organization's longer retention keeps (until ``stop()``); returns the counts it
        deleted."""
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
        )
        deleted: list[tuple[str | None, int]] = []
        for (name,) in rows:
            if stop():
                break
            bounds = _partition_bounds(name)
            if bounds is None or bounds[1] is None or bounds[1] > cutoff:
                continue
            end = bounds[1]
            keep = sorted(s for s, c in overrides.items() if c is None or c < end)
            try:
                async with conn.transaction():
                    # The lock keeps writers out while the month is counted and dropped.
                    await conn.execute(f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE")
                    if keep and await conn.fetchval(
                        f"SELECT 1 FROM {name} WHERE organization_slug = ANY($1::text[]) LIMIT 1",
                        keep,
                    ):
                        continue
                    counts = await conn.fetch(
                        f"SELECT organization_slug, count(*) FROM {name} GROUP BY 1"
                    )
                    await conn.execute(f"DROP TABLE {name}")
            except Exception as exc:
                if getattr(exc, "sqlstate", None) != _UNDEFINED_TABLE:
                    raise
                counts = []  # another host's purge dropped that month meanwhile
            self._partitions.discard(name)
            deleted.extend((r[0], int(r[1])) for r in counts)
        return deleted

    async def _delete_where(
        self, conn: Any, cond: str, params: list[Any], stop: Callable[[], bool]
    ) -> list[tuple[str | None, int]]:
        """Delete matching events in bounded batches (short transactions) until none is
        left or ``stop()``."""
        n = len(params)
        sql = (
            f"WITH doomed AS (SELECT id, occurred_at FROM events WHERE {cond}"
            f" ORDER BY occurred_at LIMIT ${n + 1})"
            " DELETE FROM events e USING doomed d"
            " WHERE e.id = d.id AND e.occurred_at = d.occurred_at"
            " RETURNING e.organization_slug"
        )
        out: dict[str | None, int] = {}
        while not stop():
            rows = await conn.fetch(sql, *params, _PURGE_CHUNK)
            for (slug,) in rows:
                out[slug] = out.get(slug, 0) + 1
            if len(rows) < _PURGE_CHUNK:
                break
        return list(out.items())

    async def optimize(self) -> None:
        """Refresh the planner's statistics (after a bulk load or a purge)."""
        async with self._need_pool().acquire() as conn:
            await conn.execute("ANALYZE events")
            await conn.execute("ANALYZE event_actions")

    # -- reading ----------------------------------------------------------------------

    async def query(self, filters: EventFilter, cursor: str | None = None, limit: int = 50) -> Page:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        before = decode_cursor(cursor) if cursor else None
        phrases = query_phrases(filters.q)
        if filters.q.strip() and not phrases:
            return Page([], None)
        sql, params = select_events(filters, phrases, before, "occurred_at, ingest, body")
        params.append(limit + 1)
        sql += f" ORDER BY occurred_at DESC, ingest DESC LIMIT ${len(params)}"
        async with self._need_pool().acquire() as conn:
            rows = await conn.fetch(sql, *params)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1][0], rows[-1][1]) if more else None
        return Page([_decode(r[2]) for r in rows], next_cursor)

    def is_cursor(self, cursor: str) -> bool:
        try:
            decode_cursor(cursor)
        except ValueError:
            return False
        return True

    async def count(self, filters: EventFilter | None = None) -> int:
        filters = filters or EventFilter()
        phrases = query_phrases(filters.q)
        if filters.q.strip() and not phrases:
            return 0
        sql, params = select_events(filters, phrases, None, "count(*)")
        async with self._need_pool().acquire() as conn:
            return int(await conn.fetchval(sql, *params))

    async def count_up_to(self, filters: EventFilter, cap: int) -> int:
        phrases = query_phrases(filters.q)
        if filters.q.strip() and not phrases:
            return 0
        inner, params = select_events(filters, phrases, None, "1")
        params.append(cap + 1)
        sql = f"SELECT count(*) FROM ({inner} LIMIT ${len(params)}) matched"
        async with self._need_pool().acquire() as conn:
            return int(await conn.fetchval(sql, *params))

    async def get(self, event_id: str, *, organization: str | None = None) -> dict[str, Any] | None:
        sql = "SELECT body FROM events WHERE id = $1"
        params: list[Any] = [pg_text(event_id)]
        if organization is not None:
            sql += " AND organization_slug = $2"
            params.append(pg_text(organization))
        async with self._need_pool().acquire() as conn:
            body = await conn.fetchval(sql + " LIMIT 1", *params)
        return _decode(body) if body is not None else None

    async def actions(self, organization: str | None = None) -> list[str]:
        async with self._need_pool().acquire() as conn:
            if organization is None:
                rows = await conn.fetch("SELECT DISTINCT action FROM event_actions ORDER BY action")
            else:
                rows = await conn.fetch(
                    "SELECT action FROM event_actions WHERE organization_slug = $1 ORDER BY action",
                    pg_text(organization),
                )
        return [r[0] for r in rows]
