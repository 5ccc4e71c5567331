"""The SQL of the SQLite event store: its schema and the query of a page of events."""

from __future__ import annotations

__all__ = ["MOVED_SCHEMA", "SCHEMA", "SCHEMA_V2", "SCHEMA_V3", "SCHEMA_V4", "SCHEMA_VERSION",
           "MOVED_BEFORE", "Moved", "select_events"]

from typing import Any, NamedTuple

from .event_rows import ACCESS_ACTIONS
from .query import (
    EventFilter,
    fts_query,
    seq_base,
)
from .sqlite_keys import KEYS_TABLE, actor_match, target_match

_HIDDEN = sorted(ACCESS_ACTIONS)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    occurred_at TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    organization_slug TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_action ON events(action);
CREATE INDEX IF NOT EXISTS events_actor ON events(actor);
CREATE INDEX IF NOT EXISTS events_organization ON events(organization_slug);
CREATE TABLE IF NOT EXISTS event_targets (
    target TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (target, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_targets_seq ON event_targets(seq);
CREATE TABLE IF NOT EXISTS event_actions (
    organization_slug TEXT NOT NULL,
    action TEXT NOT NULL,
    PRIMARY KEY (organization_slug, action)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(text, content='', tokenize='unicode61');
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1');
"""


# Version 2: portal tokens and browser sessions (auditshipd.portal.auth_store).
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS portal_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    organization TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS portal_tokens_active_name ON portal_tokens(name)
    WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS portal_sessions (
    key TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS portal_sessions_token ON portal_sessions(token_id, expires_at);
CREATE INDEX IF NOT EXISTS portal_sessions_expires ON portal_sessions(expires_at);
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""
# Version 3: the views the portal recorded (auditshipd.portal.access), so a page view is
# recorded once per session or token and filters, whichever process serves it. Opening a
# database of version 1 or 2 also takes the access records out of the keyword index.
SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS portal_views (
    key TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS portal_views_expires ON portal_views(expires_at);
UPDATE meta SET value = '3' WHERE key = 'schema_version';
"""
# Version 4: the event id, actor and targets are found through ``events_keys`` (FTS5,
# see auditshipd.portal.sqlite_keys) instead of B-trees keyed by their values (the id's
# UNIQUE index, events_actor, event_targets); the targets move into the row. A stored
# event is a duplicate when an event of the same id is stored at the same microsecond (as
# the PostgreSQL store's key (id, occurred_at) says), or, for an event without a usable
# time, anywhere. Run by sqlite_schema.prepare, which gives it auditshipd_row_terms;
# ``events_v4`` becomes ``events``. The old tables are emptied before they are dropped:
# dropping a million-row table outright held about 0.7 GB of memory until the commit.
SCHEMA_V4 = f"""
CREATE TABLE events_v4 (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    organization_slug TEXT,
    targets TEXT NOT NULL,
    body TEXT NOT NULL
);
INSERT INTO events_v4(seq, id, occurred_at, action, actor, organization_slug, targets, body)
    SELECT e.seq, e.id, e.occurred_at, e.action, e.actor, e.organization_slug,
        (SELECT json_group_array(target) FROM
            (SELECT target FROM event_targets t WHERE t.seq = e.seq ORDER BY target)),
        e.body
    FROM events e ORDER BY e.seq;
DELETE FROM events;
DROP TABLE events;
DELETE FROM event_targets;
DROP TABLE event_targets;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX events_action ON events(action);
CREATE INDEX events_organization ON events(organization_slug);
{KEYS_TABLE};
INSERT INTO events_keys(rowid, terms) SELECT seq, auditshipd_row_terms(id, actor, targets) FROM events;
UPDATE meta SET value = '4' WHERE key = 'schema_version';
"""
SCHEMA_VERSION = 4

# Events numbered past their own microsecond (more events at one microsecond than it has
# ties, see :func:`auditshipd.portal.query.tie_span`): the seq each got and its own
# microsecond's base, so that ``since`` and ``until`` still follow the event's time.
MOVED_SCHEMA = """
CREATE TABLE IF NOT EXISTS events_moved (seq INTEGER PRIMARY KEY, base INTEGER NOT NULL);
"""


class Moved(NamedTuple):
    """Whether events numbered past their microsecond (``events_moved``) lie at or after
    the ``since`` and ``until`` bounds while their own time is before it."""

    since: bool = False
    until: bool = False


# The events numbered at or past a bound (first parameter) from a microsecond before it
# (second parameter, the same bound).
MOVED_BEFORE = "SELECT seq FROM events_moved WHERE seq >= ? AND base < ?"


def select_events(
    f: EventFilter, phrases: list[list[str]], before: int | None, columns: str, *, order: bool = True,
    moved: Moved = Moved(),
) -> tuple[str, list[Any]]:
    """SQL and parameters. The table that drives the scan is the most selective one the
    filters name; its ``seq`` column carries the range conditions and the ordering. Where
    ``moved`` says so, the bounds also look at the events numbered past their microsecond
    (none in the common case: the conditions are then plain ``seq`` ranges)."""
    params: list[Any] = []
    conds: list[str] = []
    actor, target = f.actor.strip().lower(), f.target.strip().lower()
    # No event has a term for an empty actor: that filter compares the column alone.
    keys = [actor_match(actor)] if actor else []
    if f.target:
        keys.append(target_match(target))
    if phrases:
        source = "events_fts JOIN events e ON e.seq = events_fts.rowid"
        key = "events_fts.rowid"
        conds.append("events_fts MATCH ?")
        params.append(fts_query(f.q))
        if keys:
            conds.append("e.seq IN (SELECT rowid FROM events_keys WHERE events_keys MATCH ?)")
            params.append(" AND ".join(keys))
    elif keys:
        source = "events_keys JOIN events e ON e.seq = events_keys.rowid"
        key = "events_keys.rowid"
        conds.append("events_keys MATCH ?")
        params.append(" AND ".join(keys))
    else:
        source = "events e"
        key = "e.seq"
    # The keys name candidates by hash: the real values decide.
    if f.target:
        conds.append("EXISTS (SELECT 1 FROM json_each(e.targets) j WHERE j.value = ?)")
        params.append(target)
    if before is not None:
        conds.append(f"{key} < ?")
        params.append(before)
    if f.since is not None:
        since = seq_base(f.since)
        conds.append(f"{key} >= ?")
        params.append(since)
        if moved.since:  # numbered at or past the bound, but from an earlier microsecond
            conds.append(f"{key} NOT IN ({MOVED_BEFORE})")
            params += [since, since]
    if f.until is not None:
        until = seq_base(f.until)
        if moved.until:  # numbered at or past the bound, from an earlier microsecond
            conds.append(f"({key} < ? OR {key} IN ({MOVED_BEFORE}))")
            params += [until, until, until]
        else:
            conds.append(f"{key} < ?")
            params.append(until)
    # Where an FTS5 match drives the scan, the unary + keeps the planner from walking the
    # action or organization index instead and probing the match once per row (what it
    # chose for counts without statistics: seconds on a large store).
    plus = "" if key == "e.seq" else "+"
    if f.actions:
        conds.append(f"{plus}e.action IN ({', '.join('?' * len(f.actions))})")
        params.extend(f.actions)
    if f.actor:
        conds.append("e.actor = ?")
        params.append(actor)
    if f.organization is not None:
        conds.append(f"{plus}e.organization_slug = ?")
        params.append(f.organization)
    if f.hides(ACCESS_ACTIONS):
        conds.append(f"e.action NOT IN ({', '.join('?' * len(_HIDDEN))})")
        params.extend(_HIDDEN)
    sql = f"SELECT {columns} FROM {source}"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    if order:
        sql += f" ORDER BY {key} DESC"
    return sql, params
