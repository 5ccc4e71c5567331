"""The SQLite event store's schema: created when missing, older versions brought up to
date on open (each step in the one transaction that also creates what is missing)."""

from __future__ import annotations

__all__ = ["FTS5_AUTOMERGE", "FTS5_LEAF_SLACK", "forget_rows", "prepare", "schema_version"]

import sqlite3
from typing import Any

from .event_rows import ACCESS_ACTIONS, line_text, line_texts
from .sql import MOVED_SCHEMA, SCHEMA, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_VERSION
from .sqlite_keys import row_terms
from .stream_store import SQLITE_STREAMS_SCHEMA

# What FTS5's default leaf size (4,050) leaves of a 4 KiB page: a leaf is stored as one
# row of its ``_data`` table, with the row's header.
FTS5_LEAF_SLACK = 46
# How many index segments of one level FTS5 merges into one (its default: 4). Each event's
# postings are rewritten once per level; merging 8 at a time halves the levels' growth
# (log8 rather than log4 of the batches written) for up to 7 segments a level to read.
FTS5_AUTOMERGE = 8


def prepare(conn: sqlite3.Connection) -> None:
    """WAL mode and the schema, each written only when missing (both need a write lock,
    which every other opener would then wait for)."""
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    if schema_version(conn) >= SCHEMA_VERSION and len(conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table'"
            " AND name IN ('log_streams', 'events_moved')"
    ).fetchall()) == 2:
        return
    # One transaction: a concurrent opener sees no schema or all of it. The scripts up to
    # version 3 are idempotent, so an older database gets the newer tables; version 4
    # rebuilds the events table (a new database goes through it empty).
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)
        if version < 4:
            _run(conn, SCHEMA + SCHEMA_V2 + SCHEMA_V3)
            if 0 < version < 3:
                _unindex_access_records(conn)
            conn.create_function("auditshipd_row_terms", 3, row_terms, deterministic=True)
            _run(conn, SCHEMA_V4)
            _tune_index(conn, ["events_keys"] if version else ["events_fts", "events_keys"])
        _run(conn, SQLITE_STREAMS_SCHEMA + MOVED_SCHEMA)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _tune_index(conn: sqlite3.Connection, tables: list[str]) -> None:
    """FTS5 writes its index in leaves of at most ``pgsz`` bytes, 4,050 by default: what
    fits one 4 KiB page. A new FTS5 table gets leaves that fill one page of the store's
    own size, so a store with larger pages (store_sqlite.PAGE_SIZE) writes fewer, fuller
    index blocks per batch, and merges its segments :data:`FTS5_AUTOMERGE` at a time."""
    size = int(conn.execute("PRAGMA page_size").fetchone()[0]) - FTS5_LEAF_SLACK
    for table in tables:
        conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('pgsz', ?)", (size,))
        conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('automerge', ?)",
                     (FTS5_AUTOMERGE,))


def _run(conn: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";\n"):
        if statement.strip():
            conn.execute(statement)


def _unindex_access_records(conn: sqlite3.Connection) -> None:
    """Versions before 3 keyword-indexed the portal's access records: take them out with
    the text they were indexed with."""
    marks = ", ".join("?" * len(ACCESS_ACTIONS))
    rows = conn.execute(
        f"SELECT seq, body FROM events WHERE action IN ({marks})", sorted(ACCESS_ACTIONS)
    )
    conn.executemany(
        "INSERT INTO events_fts(events_fts, rowid, text) VALUES ('delete', ?, ?)",
        [(seq, line_text(body.encode())) for seq, body in rows],
    )


def schema_version(conn: sqlite3.Connection) -> int:
    """The version the database says it has; 0 for a new one."""
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone():
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def forget_rows(conn: sqlite3.Connection, rows: list[Any]) -> None:
    """Take events ``(seq, body, action, id, actor, targets, ...)`` out of the keyword and
    key indexes: a contentless FTS5 row is deleted by giving back what it indexed (no
    keyword text for access records)."""
    doomed = []
    indexed = [row for row in rows if row[2] not in ACCESS_ACTIONS]
    for row, text in zip(indexed, line_texts([row[1].encode() for row in indexed]), strict=True):
        if text:
            doomed.append((row[0], text))
    conn.executemany(
        "INSERT INTO events_fts(events_fts, rowid, text) VALUES ('delete', ?, ?)", doomed
    )
    conn.executemany(
        "INSERT INTO events_keys(events_keys, rowid, terms) VALUES ('delete', ?, ?)",
        [(row[0], row_terms(row[3], row[4], row[5])) for row in rows],
    )
    conn.executemany("DELETE FROM events_moved WHERE seq = ?", [(row[0],) for row in rows])
