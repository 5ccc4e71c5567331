"""The built-in ``portal`` sink: indexes each batch into the portal's event store.

One more consumer of the journal (own cursor, at-least-once); inserting is idempotent on
the event id, so a batch delivered twice after a crash is stored once.

Its settings default to the main config's ``[portal]`` table (``database``,
``retention_days``, ``organization_retention_days``, ``purge_interval``) unless the sink
table sets them. While it runs it purges, every ``purge_interval`` seconds, each
organization's events older than that organization's retention (the default retention for
events without an organization or without an override), and records each purge that
deleted something as one ``audit_log.purged`` event in the journal, with counts per
organization (never event contents).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from collections.abc import Callable
from pathlib import Path

import msgspec

from ..journal.writer import daemon_journal
from ..plugin import (
    Batch,
    ConfigError,
    RetryableError,
    SinkContext,
    SinkOptions,
    SinkType,
    hookimpl,
)
from ..scrub import scrub_secrets, url_secrets
from ..timestamps import format_rfc3339
from .backend import event_store, store_failure
from .config import PortalConfig, check_database, check_organization_retention, portal_config
from .pg_errors import describe
from .store import EventStore, PurgeResult

__all__ = ["BATCH_DEFAULTS", "CONCURRENCY_DEFAULT", "PortalSink", "PortalSinkOptions", "RetentionPolicy",
           "register_sink_types"]

PURGE_ACTOR = {"type": "system", "name": "auditshipd portal"}
# Each batch is one write transaction, whose fixed cost (the keyword index's new segment,
# the index pages it touches, the commit) is shared by its events: larger batches than
# other sinks' when the journal has a backlog. The sink table's ``[batch]`` overrides them.
BATCH_DEFAULTS = {"max_events": 5000, "max_bytes": 16 * 1024 * 1024}
# Two batches in flight: with PostgreSQL the daemon builds one batch's COPY while the
# server indexes the other (12,800 against 9,700 events/s); the order of the events in
# the store is their time, not their arrival. SQLite's single writer takes them in turn.
CONCURRENCY_DEFAULT = 2
Clock = Callable[[], _dt.datetime]


class PortalSinkOptions(SinkOptions):
    """Options of a ``type = "portal"`` sink. Unset ones come from ``[portal]``."""

    # SQLite file or PostgreSQL URL; empty means ``[portal] database`` (itself ``<state_dir>/portal.sqlite3``).
    database: str = ""
    # Where ``audit_log.purged`` events go; empty means SinkContext.journal_path.
    journal_path: str = ""
    # 0 keeps events forever; None: ``[portal] retention_days`` (365 without one).
    retention_days: int | None = None
    # Per-organization overrides; None: ``[portal] organization_retention_days``.
    organization_retention_days: dict[str, int] | None = None
    # None: ``[portal] purge_interval`` (3600 without one).
    purge_interval: float | None = None


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Days to keep events: ``default`` for everyone, ``organizations`` per slug (0 keeps
    forever)."""

    default: int
    organizations: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def purges(self) -> bool:
        return self.default > 0 or any(d > 0 for d in self.organizations.values())

    def days_for(self, organization: str | None) -> int:
        if organization is None:
            return self.default
        return self.organizations.get(organization, self.default)

    def cutoffs(self, now: _dt.datetime) -> tuple[_dt.datetime | None, dict[str, _dt.datetime | None]]:
        """(default cutoff, {slug: cutoff}); None where events are kept forever."""

        def cutoff(days: int) -> _dt.datetime | None:
            return now - _dt.timedelta(days=days) if days > 0 else None

        return cutoff(self.default), {slug: cutoff(d) for slug, d in self.organizations.items()}


def _validate(options: PortalSinkOptions) -> None:
    if options.database:
        options.database, problem = check_database(options.database)
        if problem is not None:
            raise ConfigError(problem, key="database")
    if options.retention_days is not None and options.retention_days < 0:
        raise ConfigError("must be 0 (keep forever) or a number of days", key="retention_days")
    if options.organization_retention_days is not None:
        problem = check_organization_retention(options.organization_retention_days)
        if problem is not None:
            slug, reason = problem
            raise ConfigError(reason, key=f"organization_retention_days.{slug}")
    if options.purge_interval is not None and options.purge_interval <= 0:
        raise ConfigError("must be a positive number of seconds", key="purge_interval")


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _format(when: _dt.datetime | None) -> str | None:
    return None if when is None else format_rfc3339(when, digits=6)


class PortalSink:
    """Writes batches into an :class:`EventStore` and runs the retention purge."""

    def __init__(
        self,
        name: str,
        options: PortalSinkOptions,
        context: SinkContext,
        *,
        store: EventStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.options = options
        self.context = context
        self.clock: Clock = clock or _utcnow
        defaults = self._portal_defaults(context)
        if options.database:
            database = options.database
        elif defaults is not None:
            database = defaults.database
        else:
            database = str(Path(context.state_dir) / "portal.sqlite3")
        self.database = database
        base = defaults or PortalConfig()
        self.retention = RetentionPolicy(
            default=base.retention_days if options.retention_days is None else options.retention_days,
            organizations=dict(
                base.organization_retention_days
                if options.organization_retention_days is None
                else options.organization_retention_days
            ),
        )
        self.purge_interval = (
            base.purge_interval if options.purge_interval is None else options.purge_interval
        )
        self.store: EventStore = store or event_store(database)
        journal_path = options.journal_path or context.journal_path or ""
        self.journal = daemon_journal(journal_path) if journal_path else None
        self._purge_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def _portal_defaults(self, context: SinkContext) -> PortalConfig | None:
        """The main config's ``[portal]`` table, if the daemon passed the config."""
        config = context.config
        if config is None:
            return None
        try:
            return portal_config(config)
        except ConfigError as exc:
            # Deleting data on a guess is worse than keeping it: no purge until fixed.
            context.logger.error(
                "portal sink %s: [portal] is invalid (%s); events are kept until it is fixed",
                self.name, exc,
            )
            fallback = PortalConfig(retention_days=0)
            fallback.database = str(Path(context.state_dir) / "portal.sqlite3")
            return fallback

    async def start(self) -> None:
        try:
            await self.store.open()
        except Exception as exc:
            failure = store_failure(exc, self.database)
            if failure is None:
                raise
            if isinstance(failure, RetryableError):
                failure = RetryableError(scrub_secrets(
                    f"cannot open the portal database: {describe(exc)}",
                    url_secrets(self.database)) or "")
            raise failure from None  # the cause's text may quote the URL
        if self.retention.purges and self._purge_task is None:
            self._purge_task = asyncio.create_task(self._purge_loop(), name=f"{self.name}-purge")

    async def send(self, batch: Batch) -> None:
        try:
            # The lines as they are: the store reads what it keeps from the bytes.
            await self.store.insert_lines(batch.lines)
        except Exception as exc:
            failure = store_failure(exc, self.database)
            if failure is None:
                raise
            raise failure from exc

    async def close(self) -> None:
        # A purge under way is not cancelled: its deletions are committed chunk by chunk,
        # and cancelling it would leave those without their audit_log.purged record. It
        # stops at the end of its current chunk and records what it deleted.
        self._stopping.set()
        if self._purge_task is not None:
            await asyncio.wait([self._purge_task])  # (its failures are logged by the loop)
        await self.store.close()
        if self.journal is not None:
            self.journal.close()

    async def purge_now(self) -> int:
        """Delete expired events now (each organization by its own retention); records
        one ``audit_log.purged`` event when any were deleted. Returns how many."""
        if not self.retention.purges:
            return 0
        now = self.clock()
        default_cutoff, org_cutoffs = self.retention.cutoffs(now)
        scope = self._organizations()
        if scope is not None:  # a scoped sink purges its organizations' events only
            org_cutoffs = {slug: org_cutoffs.get(slug, default_cutoff) for slug in scope}
            default_cutoff = None
        result = await self.store.purge_expired(default_cutoff, org_cutoffs,
                                                stop=self._stopping.is_set)
        if result.total and self.journal is not None:
            await asyncio.to_thread(self._record_purge, result, default_cutoff, org_cutoffs)
        if result.total:
            self.context.logger.info(
                "portal sink %s purged %d expired events", self.name, result.total
            )
        return result.total

    def _organizations(self) -> list[str] | None:
        """The sink's ``organizations`` (a stream file's sink: its organization's), None
        when it indexes every organization's events."""
        config = self.context.config
        sc = next((x for x in config.sinks if x.name == self.name), None) if config else None
        return sc.organizations if sc is not None else None

    def _record_purge(
        self,
        result: PurgeResult,
        default_cutoff: _dt.datetime | None,
        org_cutoffs: dict[str, _dt.datetime | None],
    ) -> None:
        assert self.journal is not None
        # No organization on the event: it reaches unscoped sinks and operators only, since
        # it names several organizations.
        self.journal.record(
            "audit_log.purged",
            actor=PURGE_ACTOR,
            targets=[{"type": "audit_log", "name": self.name}],
            metadata={
                "deleted_events": result.total,
                "deleted_by_organization": dict(sorted(result.by_organization.items())),
                "deleted_without_organization": result.without_organization,
                "retention_days": self.retention.default,
                "organization_retention_days": dict(sorted(self.retention.organizations.items())),
                "older_than": _format(default_cutoff),
                "organization_older_than": {
                    slug: _format(org_cutoffs.get(slug))
                    for slug in sorted(result.by_organization)
                    if slug in org_cutoffs
                },
            },
        )

    async def _purge_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.purge_now()
            except Exception as exc:  # a failed purge is retried at the next interval
                self.context.logger.warning("portal sink %s: purge failed: %s", self.name, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.purge_interval)


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "portal",
            PortalSinkOptions,
            PortalSink,
            "Indexes events for the audit log portal (SQLite or PostgreSQL, full-text search)",
            validate=_validate,
            batch_defaults=BATCH_DEFAULTS,
            concurrency=CONCURRENCY_DEFAULT,
        )
    ]
