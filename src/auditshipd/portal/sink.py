"""The built-in ``portal`` sink: indexes each batch into the portal's event store.

One more consumer of the journal (own cursor, at-least-once); inserting is idempotent on
the event id, so a batch delivered twice after a crash is stored once. While it runs it
purges events older than ``retention_days`` every ``purge_interval`` seconds, and records
each purge that deleted something as an ``audit_log.purged`` event in the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import sqlite3
from pathlib import Path

import msgspec

from ..batch import Batch
from ..errors import ConfigError, PermanentError, RetryableError
from ..hookspecs import hookimpl
from ..journal import AuditJournal
from ..sinks.base import SinkContext, SinkType
from .store import EventStore, SQLiteEventStore

__all__ = ["PortalSink", "PortalSinkOptions", "register_sink_types"]

PURGE_ACTOR = {"type": "system", "name": "auditshipd portal"}


class PortalSinkOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of a ``type = "portal"`` sink."""

    # SQLite file; empty means ``<state_dir>/portal.sqlite3`` (the portal's default).
    database: str = ""
    # Where ``audit_log.purged`` events go; empty means SinkContext.extra["journal_path"].
    journal_path: str = ""
    # 0 keeps events forever.
    retention_days: int = 365
    purge_interval: float = 3600.0


def _validate(options: PortalSinkOptions) -> None:
    if options.retention_days < 0:
        raise ConfigError("must be 0 (keep forever) or a number of days", key="retention_days")
    if options.purge_interval <= 0:
        raise ConfigError("must be a positive number of seconds", key="purge_interval")


class PortalSink:
    """Writes batches into an :class:`EventStore` and runs the retention purge."""

    def __init__(
        self,
        name: str,
        options: PortalSinkOptions,
        context: SinkContext,
        *,
        store: EventStore | None = None,
    ) -> None:
        self.name = name
        self.options = options
        self.context = context
        database = options.database or str(Path(context.state_dir) / "portal.sqlite3")
        self.store: EventStore = store or SQLiteEventStore(database)
        journal_path = options.journal_path or context.extra.get("journal_path") or ""
        self.journal = AuditJournal(journal_path) if journal_path else None
        self._purge_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        try:
            await self.store.open()
        except sqlite3.Error as exc:
            raise RetryableError(f"cannot open the portal database: {exc}") from exc
        if self.options.retention_days > 0 and self._purge_task is None:
            self._purge_task = asyncio.create_task(self._purge_loop(), name=f"{self.name}-purge")

    async def send(self, batch: Batch) -> None:
        try:
            await self.store.insert_events(batch.events, batch.lines)
        except sqlite3.OperationalError as exc:  # locked, disk full, I/O: may pass
            raise RetryableError(f"portal database: {exc}") from exc
        except (sqlite3.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise PermanentError(f"portal database refused the batch: {exc}") from exc

    async def close(self) -> None:
        self._stopping.set()
        if self._purge_task is not None:
            self._purge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge_task
        await self.store.close()
        if self.journal is not None:
            self.journal.close()

    async def purge_now(self) -> int:
        """Delete expired events now; records ``audit_log.purged`` when any were deleted."""
        days = self.options.retention_days
        if days <= 0:
            return 0
        cutoff = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=days)
        deleted = await self.store.purge(cutoff)
        if deleted and self.journal is not None:
            await asyncio.to_thread(
                self.journal.record,
                "audit_log.purged",
                actor=PURGE_ACTOR,
                targets=[{"type": "audit_log", "name": self.name}],
                metadata={
                    "deleted_events": deleted,
                    "retention_days": days,
                    "older_than": cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                },
            )
        if deleted:
            self.context.logger.info("portal sink %s purged %d expired events", self.name, deleted)
        return deleted

    async def _purge_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.purge_now()
            except Exception as exc:  # a failed purge is retried at the next interval
                self.context.logger.warning("portal sink %s: purge failed: %s", self.name, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.options.purge_interval)


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "portal",
            PortalSinkOptions,
            PortalSink,
            "Indexes events for the audit log portal (SQLite, full-text search)",
            validate=_validate,
        )
    ]
