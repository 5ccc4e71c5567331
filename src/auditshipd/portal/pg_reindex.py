"""Rebuild the keyword vectors of the events a PostgreSQL portal store holds.

A store's ``search`` column is built by the writer when an event is stored. When a new
version of auditshipd cuts or folds words differently, the events stored before keep the
vectors of the old rules until they are rebuilt here (run it once, after every host and
replica runs the new version):

    python -m auditshipd.portal.pg_reindex [-c FILE]

It reads only the events whose vector can differ from what the present rules build (a
character outside ASCII or a ``\\u`` escape in the line, a run of 256 or more letters and
digits), a page at a time in time order, and rewrites each vector that differs, one
transaction a page: writers and replicas go on meanwhile. Running it again rewrites
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import sys
from typing import Any

from .event_rows import event_row
from .pg_vectors import row_vectors

__all__ = ["main", "reindex"]

# The lines whose vector the rules of this version may build differently from an older
# one's: those for ASCII words of up to 255 letters have not changed. (PostgreSQL's
# regular expressions repeat an atom at most 255 times.)
_CANDIDATES = (
    "(body ~ '[^[:ascii:]]' OR strpos(body, '\\u') > 0"
    " OR body ~ '[[:alnum:]]{255}[[:alnum:]]')"
)
_PAGE = f"""
SELECT id, occurred_at, ingest, body, search FROM events
WHERE (occurred_at, ingest) > ($1, $2) AND {_CANDIDATES}
ORDER BY occurred_at, ingest LIMIT $3"""
_UPDATE = "UPDATE events SET search = $3 WHERE id = $1 AND occurred_at = $2"
_START = (_dt.datetime(1, 1, 1, tzinfo=_dt.timezone.utc), 0)


async def reindex(conn: Any, page: int = 1000) -> tuple[int, int]:
    """Rebuild the vectors of the store on ``conn`` (an asyncpg connection whose
    ``search_path`` finds the portal schema); ``(events read, vectors rewritten)``."""
    await conn.set_type_codec(
        "tsvector", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary"
    )
    after, read, rewritten = _START, 0, 0
    while True:
        rows = await conn.fetch(_PAGE, after[0], after[1], page)
        if not rows:
            return read, rewritten
        read += len(rows)
        events = [event_row(r["body"].encode(), text=False) for r in rows]
        changed = [(r["id"], r["occurred_at"], vector)
                   for r, vector in zip(rows, row_vectors(events), strict=True)
                   if vector != r["search"]]
        if changed:
            async with conn.transaction():
                await conn.executemany(_UPDATE, changed)
            rewritten += len(changed)
        after = (rows[-1]["occurred_at"], rows[-1]["ingest"])


async def _run(url: str) -> int:
    import asyncpg

    from .pg_schema import SchemaError, check_schema
    from .pg_store import safe_location

    where = safe_location(url)
    try:
        conn = await asyncpg.connect(url)
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _fail(f"cannot connect to portal database {where}: {type(exc).__name__}")
    try:
        await check_schema(conn, where)
        read, rewritten = await reindex(conn)
    except (SchemaError, asyncpg.PostgresError) as exc:
        return _fail(f"re-indexing {where} failed: {exc}")
    finally:
        await conn.close()
    print(f"portal database {where}: {read} events read, {rewritten} keyword vectors rewritten")
    return 0


def _fail(message: str) -> int:
    print(f"auditshipd: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m auditshipd.portal.pg_reindex [-c FILE]``: the portal database of the
    config (found as every auditshipd command finds it)."""
    from ..config import load_config
    from ..errors import AuditshipdError
    from .config import portal_config
    from .pg_store import is_postgres_url

    parser = argparse.ArgumentParser(
        prog="python -m auditshipd.portal.pg_reindex",
        description="Rebuild the keyword vectors of a PostgreSQL portal store's events.")
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML config file")
    args = parser.parse_args(argv)
    try:
        database = portal_config(load_config(args.config)).database
    except AuditshipdError as exc:
        return _fail(str(exc))
    if not is_postgres_url(database):
        print(f"portal database {database} is SQLite: its keyword index is SQLite's own",
              file=sys.stderr)
        return 0
    try:
        return asyncio.run(_run(database))
    except ImportError:
        return _fail("a PostgreSQL portal database needs asyncpg: pip install 'auditshipd[postgres]'")


if __name__ == "__main__":
    sys.exit(main())
