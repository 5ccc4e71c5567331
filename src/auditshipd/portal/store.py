"""The index of redacted events behind the portal.

:class:`EventStore` is the interface the web app and the ``portal`` sink use, so that a
server database can replace SQLite later. :class:`SQLiteEventStore` is the embedded
implementation: WAL, FTS5 for keyword search, and the event's time-ordered ``seq`` (see
:mod:`auditshipd.portal.query`) as the integer primary key, so the table itself is the
``occurred_at`` index and a filtered first page walks an index backwards and stops.

sqlite3 is synchronous: every call runs on a worker thread (one writer thread, a small
pool of reader threads, one connection per thread), so the event loop never blocks.

The database and its ``-wal``/``-shm`` files are private (0600) like every other state
file: SQLite creates the latter two with the database file's mode, so the database is
created (or tightened) 0600 before SQLite opens it. Several stores open one file at once
(the daemon's portal and its ``portal`` sink, replicas, the CLI): every connection waits
on locks, the schema is written only when missing, and a lock that SQLite reports
without waiting (switching to WAL while another connection does) is retried until
``busy_timeout``.
"""

from __future__ import annotations

import abc
import datetime as _dt
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec

from .query import EventFilter

__all__ = ["EventStore", "Page", "PurgeResult", "actor_key", "never", "target_keys"]

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
MAX_LIMIT = 1000


class Page(NamedTuple):
    """One page of events, newest first, and the cursor of the next page (or None)."""

    events: list[dict[str, Any]]
    next_cursor: str | None


def never() -> bool:
    """A ``stop`` that never stops a purge (see :meth:`EventStore.purge_expired`)."""
    return False


class PurgeResult(NamedTuple):
    """What a retention purge deleted: counts per organization slug, and of events
    without an organization. Counts only, never event contents."""

    by_organization: dict[str, int]
    without_organization: int

    @property
    def total(self) -> int:
        return sum(self.by_organization.values()) + self.without_organization


class EventStore(abc.ABC):
    """Where the portal's events live. All methods are coroutines safe to call on the loop."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Create the schema if needed. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""

    @abc.abstractmethod
    async def insert_events(
        self, events: Sequence[Mapping[str, Any]], lines: Sequence[bytes] | None = None
    ) -> int:
        """Store events (``lines``: their JSON, if already encoded); an id already stored is
        skipped. Returns how many were new."""

    async def insert_lines(self, lines: Sequence[bytes]) -> int:
        """Store redacted events given as their JSON lines, as the ``portal`` sink has
        them (:meth:`insert_events` without decoding them first). Returns how many were
        new."""
        return await self.insert_events([_decode(line) for line in lines], lines)

    @abc.abstractmethod
    async def query(self, filters: EventFilter, cursor: str | None = None, limit: int = 50) -> Page:
        """Matching events, newest first; ValueError for a bad cursor or query."""

    @abc.abstractmethod
    async def get(self, event_id: str, *, organization: str | None = None) -> dict[str, Any] | None:
        """One event by id, or None (also when it belongs to another organization)."""

    @abc.abstractmethod
    async def purge(self, older_than: _dt.datetime) -> int:
        """Delete events that occurred before ``older_than``; returns how many."""

    async def purge_expired(
        self,
        default_cutoff: _dt.datetime | None,
        organization_cutoffs: Mapping[str, _dt.datetime | None] | None = None,
        stop: Callable[[], bool] = never,
    ) -> PurgeResult:
        """Delete each organization's events that occurred before its own cutoff
        (``organization_cutoffs[slug]``; None keeps that organization's events), and
        every other event (no organization, or one without an override) before
        ``default_cutoff`` (None keeps them). Returns the counts per organization.

        The deletions are short transactions, each committed; ``stop`` (called between
        them, from any thread) true ends the purge early, and the counts returned are
        those of what was deleted until then."""
        if organization_cutoffs:
            raise NotImplementedError("per-organization retention is not supported by this store")
        if default_cutoff is None:
            return PurgeResult({}, 0)
        return PurgeResult({}, await self.purge(default_cutoff))

    @abc.abstractmethod
    def is_cursor(self, cursor: str) -> bool:
        """Whether ``cursor`` is a page cursor of this store (each store has its own
        format); :meth:`query` raises ValueError for one that is not."""

    @abc.abstractmethod
    async def count(self, filters: EventFilter | None = None) -> int:
        """How many events match."""

    async def count_up_to(self, filters: EventFilter, cap: int) -> int:
        """How many events match, counting no further than ``cap + 1``: a result above
        ``cap`` means "more than ``cap``". Stores override it to stop early."""
        return min(await self.count(filters), cap + 1)

    @abc.abstractmethod
    async def actions(self, organization: str | None = None) -> list[str]:
        """The distinct actions seen (for the filter list)."""

    async def iter_export(
        self, filters: EventFilter, chunk_size: int = 1000
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every matching event, newest first, in chunks: memory stays constant."""
        cursor: str | None = None
        while True:
            page = await self.query(filters, cursor, chunk_size)
            if page.events:
                yield page.events
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


def _key_of(party: Any) -> str:
    if not isinstance(party, Mapping):
        return ""
    value = party.get("email") or party.get("name") or ""
    return str(value).strip().lower()


def actor_key(event: Mapping[str, Any]) -> str:
    """What the ``actor`` filter matches: the actor's e-mail (else name), lower-cased."""
    return _key_of(event.get("actor"))


def target_keys(event: Mapping[str, Any]) -> set[str]:
    """What the ``target`` filter matches, one key per target."""
    targets = event.get("targets")
    if not isinstance(targets, list):
        return set()
    return {k for k in (_key_of(t) for t in targets) if k}


def _organization(event: Mapping[str, Any]) -> str | None:
    org = event.get("organization")
    if isinstance(org, Mapping) and org.get("slug") is not None:
        return str(org["slug"])
    return None
