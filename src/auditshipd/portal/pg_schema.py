"""The PostgreSQL portal schema: numbered migrations, applied by ``auditshipd portal migrate``.

Every migration runs in its own transaction under an advisory lock, so two hosts running
``migrate`` at once apply each step once. ``schema_migrations`` records what was applied.
A store opening the database only *checks* the version (:func:`check_schema`): it never
runs on a schema it does not know, older (run ``migrate``) or newer (upgrade auditshipd).

Layout (version 1):

- ``events``: partitioned by range of ``occurred_at``, one partition a month
  (``events_pYYYYMM``, created on demand by the writers). The primary key
  ``(id, occurred_at)`` makes inserts idempotent on the event id (a partitioned table's
  unique keys must hold the partition key; an event's time never changes, so its id
  decides). ``ingest`` (a sequence) orders events of the same microsecond by insertion.
  ``search`` is a ``tsvector`` built by the writer from the same tokens SQLite's FTS5
  index holds, so keyword search gives the same answers on both stores.
- ``event_actions``: the distinct (organization, action) pairs, for the filter list.

Version 2 adds ``portal_tokens`` and ``portal_sessions``: replicas keep no state of their own.
Version 3 adds the self-service streams (``log_streams``, a change counter
``log_stream_revision`` the daemons poll, ``log_stream_status`` per stream and host,
``log_stream_tests`` for the test-event rate limit).
Version 4 adds ``portal_views`` (a page view is recorded once per session or token and
filters, see :mod:`auditshipd.portal.access`) and empties the ``search`` of the portal's
own access records, which are no longer keyword-indexed.
Version 5 gives the text columns of ``events`` (id, action, actor, organization, targets)
the ``"C"`` collation: they are only ever compared for equality, which every
deterministic collation answers byte by byte, so no result changes, and each of the
B-tree and GIN indexes on them compares bytes instead of calling the locale's collation
on every insert. The migration rebuilds those indexes (writers wait meanwhile: about
4 s per 200,000 events on a 2-core machine).
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaError", "check_schema", "migrate", "schema_version"]


class Migration(NamedTuple):
    version: int
    description: str
    sql: str


class SchemaError(RuntimeError):
    """The database's schema is missing, older or newer than this version of auditshipd."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "events partitioned by month, full-text search, action list",
        """
CREATE SEQUENCE events_ingest_seq;
CREATE TABLE events (
    id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    ingest bigint NOT NULL DEFAULT nextval('events_ingest_seq'),
    action text NOT NULL,
    actor text NOT NULL,
    organization_slug text,
    targets text[] NOT NULL DEFAULT '{}',
    search tsvector NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX events_time ON events (occurred_at, ingest);
CREATE INDEX events_organization_time ON events (organization_slug, occurred_at, ingest);
CREATE INDEX events_action_time ON events (action, occurred_at, ingest);
CREATE INDEX events_actor_time ON events (actor, occurred_at, ingest);
CREATE INDEX events_targets ON events USING gin (targets);
CREATE INDEX events_search ON events USING gin (search);
CREATE TABLE event_actions (
    organization_slug text NOT NULL,
    action text NOT NULL,
    PRIMARY KEY (organization_slug, action)
);
""",
    ),
    Migration(
        2,
        "portal tokens and browser sessions",
        """
CREATE TABLE portal_tokens (
    id text PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL,
    organization text NOT NULL,
    hash text NOT NULL UNIQUE,
    created_at text NOT NULL,
    revoked_at text
);
CREATE UNIQUE INDEX portal_tokens_active_name ON portal_tokens (name) WHERE revoked_at IS NULL;
CREATE TABLE portal_sessions (
    key text PRIMARY KEY,
    token_id text NOT NULL,
    csrf text NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at);
""",
    ),
    Migration(
        3,
        "self-service log streams, their status per host, test-event counts",
        """
CREATE TABLE log_streams (
    id text PRIMARY KEY,
    organization text NOT NULL,
    name text NOT NULL,
    type text NOT NULL,
    options text NOT NULL,
    secrets text,
    secret_names text NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    created_at text NOT NULL,
    updated_at text NOT NULL,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    version integer NOT NULL DEFAULT 0,
    UNIQUE (organization, name)
);
CREATE TABLE log_stream_revision (
    id integer PRIMARY KEY CHECK (id = 1),
    revision bigint NOT NULL
);
INSERT INTO log_stream_revision(id, revision) VALUES (1, 0);
CREATE TABLE log_stream_status (
    stream_id text NOT NULL,
    host text NOT NULL,
    state text NOT NULL,
    last_synced_at text,
    last_error text,
    lag_events bigint,
    lag_bytes bigint,
    reported_at double precision NOT NULL,
    PRIMARY KEY (stream_id, host)
);
CREATE TABLE log_stream_tests (
    stream_id text NOT NULL,
    sent_at double precision NOT NULL
);
CREATE INDEX log_stream_tests_stream ON log_stream_tests (stream_id, sent_at);
""",
    ),
    Migration(
        4,
        "recorded portal views; access records out of the keyword index",
        """
CREATE TABLE portal_views (
    key text PRIMARY KEY,
    expires_at double precision NOT NULL
);
CREATE INDEX portal_views_expires ON portal_views (expires_at);
UPDATE events SET search = ''::tsvector
    WHERE action IN ('audit_log.viewed', 'audit_log.exported', 'audit_log.purged')
    AND search <> ''::tsvector;
""",
    ),
    Migration(
        5,
        "byte-order collation for the event columns compared by equality",
        """
ALTER TABLE events
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN action TYPE text COLLATE "C",
    ALTER COLUMN actor TYPE text COLLATE "C",
    ALTER COLUMN organization_slug TYPE text COLLATE "C",
    ALTER COLUMN targets TYPE text[] COLLATE "C";
""",
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':auditshipd-migrate'))"
_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def schema_version(conn: Any) -> int | None:
    """The highest applied migration, or None when the database has no portal schema."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return None
    return await conn.fetchval("SELECT max(version) FROM schema_migrations")


async def migrate(conn: Any, target: int = SCHEMA_VERSION) -> list[int]:
    """Apply the migrations up to ``target`` that are missing; returns their numbers."""
    applied: list[int] = []
    for step in MIGRATIONS:
        if step.version > target:
            break
        async with conn.transaction():
            await conn.execute(_LOCK_SQL)
            await conn.execute(_TABLE_SQL)
            done = await conn.fetchval(
                "SELECT 1 FROM schema_migrations WHERE version = $1", step.version
            )
            if done:
                continue
            await conn.execute(step.sql)
            await conn.execute(
                "INSERT INTO schema_migrations(version, description) VALUES ($1, $2)",
                step.version, step.description,
            )
            applied.append(step.version)
    return applied


async def check_schema(conn: Any, where: str) -> int:
    """The schema version, when it is the one this code knows; SchemaError otherwise
    (``where`` names the database for the message, without credentials)."""
    version = await schema_version(conn)
    if version is None:
        raise SchemaError(
            f"portal database {where} has no auditshipd schema: run `auditshipd portal migrate`"
        )
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"portal database {where} has schema version {version}, this auditshipd needs"
            f" {SCHEMA_VERSION}: run `auditshipd portal migrate`"
        )
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"portal database {where} has schema version {version}, newer than this auditshipd"
            f" knows ({SCHEMA_VERSION}): upgrade auditshipd on this host"
        )
    return version
