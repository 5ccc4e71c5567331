"""The embedded event store: SQLite with FTS5."""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .query import (
    EventFilter,
    decode_cursor,
    encode_cursor,
    query_phrases,
    seq_base,
)
from .sql import MOVED_BEFORE, SCHEMA_VERSION, Moved, select_events
from .sqlite_ingest import insert_rows, prepare_rows
from .sqlite_keys import id_match
from .sqlite_schema import forget_rows, prepare, schema_version
from .store import (
    MAX_LIMIT,
    EventStore,
    Page,
    PurgeResult,
    T,
    _decode,
    _encode,
    never,
)

__all__ = ["PAGE_SIZE", "UPGRADE_WAIT", "SQLiteEventStore"]

# Seconds an opener waits for another opener's schema upgrade of the store.
UPGRADE_WAIT = 900.0
# The page size of a new store. Against SQLite's default of 4 KiB, 16 KiB pages hold four
# times the rows per B-tree page, and the FTS5 tables write leaves that fill them
# (sqlite_schema), so a batch writes, logs and checkpoints fewer, fuller pages: about
# 10 to 15% less CPU per event indexed, search as fast. A store created with other pages
# keeps them (``VACUUM`` after ``PRAGMA page_size`` converts it, with the WAL off).
PAGE_SIZE = 16384
# How large the WAL grows before a checkpoint copies it into the database.
WAL_CHECKPOINT_BYTES = 40 * 1024 * 1024


def _make_private(path: Path) -> None:
    """Create the database file 0600, or take group/other access away from an existing
    one and its ``-wal``/``-shm`` files.

    An existing file is never opened here, only changed by its path: closing any
    descriptor of a file drops every POSIX lock this process holds on it, the locks of
    the SQLite connections already open on it included (another store of the same
    file in this process: the portal, the ``portal`` sink, the stream poller). Without
    its shared lock, another process closing its last connection believes it is the
    database's only user, checkpoints and deletes the WAL under the running writer, whose
    later commits then go to a deleted file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)  # a new file: no connection has it open yet
    for side in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            if side.stat().st_mode & 0o077:
                side.chmod(0o600)
        except FileNotFoundError:
            pass


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _older(conn: sqlite3.Connection) -> bool:
    """Whether the store's schema is older than this version (unreadable: taken as older)."""
    try:
        return schema_version(conn) < SCHEMA_VERSION
    except sqlite3.OperationalError:
        return True


class SQLiteEventStore(EventStore):
    """The embedded index: one SQLite file in WAL mode."""

    def __init__(self, path: str | Path, *, readers: int = 2, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="portal-db-write")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="portal-db-read")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._opened = False

    # -- plumbing ---------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new database
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            # Every commit synced (the WAL, once per transaction): the portal sink
            # acknowledges a batch, and its journal cursor moves past it, only once it is
            # stored; in WAL mode NORMAL would leave the last commits to a power loss.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA cache_size=-32000")
            # Checkpoints copy the WAL into the database: fewer, larger ones cost less
            # per event while indexing (the WAL grows to about 40 MB before one).
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA wal_autocheckpoint={max(1, WAL_CHECKPOINT_BYTES // page)}")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def open(self) -> None:
        if not self._opened:
            await self._write(self._open_sync)
            self._opened = True

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _make_private(self.path)
        conn = self._conn()
        start = time.monotonic()
        delay = 0.005
        while True:
            try:
                prepare(conn)
                return
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                # While the store is older than this version, the lock is most likely
                # another opener's upgrade (version 4 takes about 33 s per million
                # events): wait for it rather than fail the portal or the sink.
                wait = self.busy_timeout
                if _older(conn):
                    wait = max(wait, UPGRADE_WAIT)
                if not _is_lock_error(exc) or time.monotonic() - start >= wait:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def close(self) -> None:
        for pool in (self._writer, self._readers):
            pool.shutdown(wait=True)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass

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
        return await self._write(self._insert_sync, lines)

    def _insert_sync(self, lines: Sequence[bytes]) -> int:
        # In the writer thread, not beside it: built in a thread of its own while the
        # writer commits the batch before, the rows took no less time (both need the GIL,
        # which the writer takes back after every row the database stores).
        batch = prepare_rows(lines)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            inserted = insert_rows(conn, batch)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return inserted

    async def purge(self, older_than: _dt.datetime) -> int:
        return (await self.purge_expired(older_than, {})).total

    async def purge_expired(
        self,
        default_cutoff: _dt.datetime | None,
        organization_cutoffs: Mapping[str, _dt.datetime | None] | None = None,
        stop: Callable[[], bool] = never,
    ) -> PurgeResult:
        overrides = {
            slug: None if when is None else seq_base(when)
            for slug, when in (organization_cutoffs or {}).items()
        }
        default = None if default_cutoff is None else seq_base(default_cutoff)
        return await self._write(self._purge_expired_sync, default, overrides, stop)

    def _purge_expired_sync(self, default: int | None, overrides: dict[str, int | None],
                            stop: Callable[[], bool]) -> PurgeResult:
        by_org: dict[str, int] = {}
        without = 0
        for slug, cutoff in sorted(overrides.items()):
            if cutoff is None:
                continue
            n = self._purge_before_sync("organization_slug = ?", [slug], cutoff, stop)
            if n:
                by_org[slug] = by_org.get(slug, 0) + n
        if default is not None:
            if overrides:
                marks = ", ".join("?" * len(overrides))
                cond = f"(organization_slug IS NULL OR organization_slug NOT IN ({marks}))"
                params: list[Any] = list(overrides)
            else:
                cond, params = "1", []
            counts = self._purge_before_sync(cond, params, default, stop, per_organization=True)
            assert isinstance(counts, dict)
            for slug, n in counts.items():
                if slug is None:
                    without += n
                else:
                    by_org[slug] = by_org.get(slug, 0) + n
        return PurgeResult(by_org, without)

    def _purge_before_sync(self, cond: str, params: list[Any], cutoff: int,
                           stop: Callable[[], bool], *, per_organization: bool = False) -> Any:
        """:meth:`_purge_where_sync` of the events matching ``cond`` older than ``cutoff``:
        numbered before it (a range of ``seq``), then those numbered past their own
        microsecond from one before it (looked up in ``events_moved``)."""
        first = self._purge_where_sync(f"{cond} AND seq < ?", [*params, cutoff], stop,
                                       per_organization=per_organization)
        moved = self._purge_where_sync(f"{cond} AND seq IN ({MOVED_BEFORE})",
                                       [*params, cutoff, cutoff], stop,
                                       per_organization=per_organization)
        if not per_organization:
            return first + moved
        for slug, n in moved.items():
            first[slug] = first.get(slug, 0) + n
        return first

    def _purge_where_sync(
        self, cond: str, params: list[Any], stop: Callable[[], bool], *,
        per_organization: bool = False, chunk: int = 2000
    ) -> Any:
        """Delete the events matching ``cond`` in chunks (short write transactions)
        until none is left or ``stop()``; returns how many, or ``{slug or None: how
        many}`` with ``per_organization``."""
        conn = self._conn()
        counts: dict[str | None, int] = {}
        while not stop():
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT seq, body, action, id, actor, targets, organization_slug FROM events"
                    f" WHERE {cond} ORDER BY seq LIMIT ?",
                    (*params, chunk),
                ).fetchall()
                if not rows:
                    conn.execute("COMMIT")
                    break
                forget_rows(conn, rows)
                conn.executemany("DELETE FROM events WHERE seq = ?", [(row[0],) for row in rows])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            for row in rows:
                counts[row[6]] = counts.get(row[6], 0) + 1
        return counts if per_organization else sum(counts.values())

    async def optimize(self) -> None:
        """Refresh the planner's statistics (after a bulk load or a purge)."""
        await self._write(self._optimize_sync)

    def _optimize_sync(self) -> None:
        self._conn().executescript("PRAGMA analysis_limit=2000; ANALYZE;")

    # -- reading ----------------------------------------------------------------------

    async def query(self, filters: EventFilter, cursor: str | None = None, limit: int = 50) -> Page:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        before = decode_cursor(cursor) if cursor else None
        phrases = query_phrases(filters.q)
        if filters.q.strip() and not phrases:
            return Page([], None)
        return await self._read(self._query_sync, filters, phrases, before, limit)

    def _query_sync(
        self, filters: EventFilter, phrases: list[list[str]], before: int | None, limit: int
    ) -> Page:
        conn = self._conn()
        sql, params = select_events(filters, phrases, before, "e.seq, e.body",
                                    moved=_moved(conn, filters))
        sql += " LIMIT ?"
        rows = conn.execute(sql, (*params, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1][0]) if more else None
        return Page([_decode(body) for _, body in rows], next_cursor)

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
        return await self._read(self._count_sync, filters, phrases)

    def _count_sync(self, filters: EventFilter, phrases: list[list[str]], cap: int | None = None) -> int:
        conn = self._conn()
        moved = _moved(conn, filters)
        if cap is None:
            sql, params = select_events(filters, phrases, None, "count(*)", order=False, moved=moved)
        else:
            inner, params = select_events(filters, phrases, None, "1", order=False, moved=moved)
            sql = f"SELECT count(*) FROM ({inner} LIMIT ?)"
            params.append(cap + 1)
        return int(conn.execute(sql, params).fetchone()[0])

    async def count_up_to(self, filters: EventFilter, cap: int) -> int:
        phrases = query_phrases(filters.q)
        if filters.q.strip() and not phrases:
            return 0
        return await self._read(self._count_sync, filters, phrases, cap)

    async def get(self, event_id: str, *, organization: str | None = None) -> dict[str, Any] | None:
        return await self._read(self._get_sync, event_id, organization)

    def _get_sync(self, event_id: str, organization: str | None) -> dict[str, Any] | None:
        sql = ("SELECT e.body FROM events_keys JOIN events e ON e.seq = events_keys.rowid"
               " WHERE events_keys MATCH ? AND e.id = ?")
        params: list[Any] = [id_match(event_id), event_id]
        if organization is not None:
            sql += " AND e.organization_slug = ?"
            params.append(organization)
        row = self._conn().execute(sql + " LIMIT 1", params).fetchone()
        return _decode(row[0]) if row else None

    async def actions(self, organization: str | None = None) -> list[str]:
        return await self._read(self._actions_sync, organization)

    def _actions_sync(self, organization: str | None) -> list[str]:
        if organization is None:
            rows = self._conn().execute("SELECT DISTINCT action FROM event_actions ORDER BY action")
        else:
            rows = self._conn().execute(
                "SELECT action FROM event_actions WHERE organization_slug = ? ORDER BY action",
                (organization,),
            )
        return [r[0] for r in rows]


def _moved(conn: sqlite3.Connection, f: EventFilter) -> Moved:
    """Whether ``f``'s time bounds meet events numbered past their microsecond (more
    events at one microsecond than it has ties): then the query looks them up."""
    if f.since is None and f.until is None:
        return Moved()

    def past(when: _dt.datetime | None) -> bool:
        if when is None:
            return False
        bound = seq_base(when)
        return conn.execute(f"{MOVED_BEFORE} LIMIT 1", (bound, bound)).fetchone() is not None

    return Moved(past(f.since), past(f.until))

