"""``auditshipd portal migrate``: bring a PostgreSQL portal database to this version's schema;
``auditshipd portal reindex``: rebuild the keyword vectors of the events it holds.

The embedded SQLite store creates its schema itself; a shared server is changed only on
purpose, by these commands, once per upgrade (any host may run them, concurrently too).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import load_config
from ..errors import AuditshipdError
from .config import is_postgres_url, portal_config
from .pg_errors import BAD_URL, describe, safe_location, url_problem
from .pg_reindex import reindex
from .pg_schema import SCHEMA_VERSION, SchemaError, check_schema, migrate, schema_version

__all__ = ["portal_migrate", "portal_reindex"]


def _fail(message: str) -> int:
    print(f"auditshipd: {message}", file=sys.stderr)
    return 1


def portal_migrate(args: argparse.Namespace) -> int:
    return _on_postgres(args, _migrate, "migration of", "its schema is created when it is opened")


def portal_reindex(args: argparse.Namespace) -> int:
    return _on_postgres(args, _reindex, "re-indexing", "its keyword index is SQLite's own")


def _on_postgres(args: argparse.Namespace, work: Callable[[Any, str], Awaitable[str]],
                 doing: str, sqlite: str) -> int:
    """Run ``work`` on the config's PostgreSQL portal database; a SQLite one needs
    nothing (``sqlite`` says why)."""
    try:
        pc = portal_config(load_config(getattr(args, "config", None)))
    except AuditshipdError as exc:
        return _fail(str(exc))
    if not is_postgres_url(pc.database):
        print(f"portal database {pc.database} is SQLite: {sqlite}", file=sys.stderr)
        return 0
    if url_problem(pc.database) is not None:
        return _fail(f"portal.database: {BAD_URL}")
    try:
        return asyncio.run(_on_connection(pc.database, work, doing))
    except ImportError:
        return _fail("a PostgreSQL portal database needs asyncpg: pip install 'auditshipd[postgres]'")


async def _on_connection(url: str, work: Callable[[Any, str], Awaitable[str]],
                         doing: str) -> int:
    """Connect to ``url``, run ``work(connection, location)`` and print what it says;
    ``doing`` names the work in a failure's message."""
    import asyncpg

    where = safe_location(url)
    try:
        conn = await asyncpg.connect(url)
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _fail(f"cannot connect to portal database {where}: {describe(exc)}")
    try:
        said = await work(conn, where)
    except (SchemaError, asyncpg.PostgresError) as exc:
        return _fail(f"{doing} {where} failed: {describe(exc)}")
    finally:
        await conn.close()
    print(f"portal database {where}: {said}")
    return 0


async def _migrate(conn: Any, where: str) -> str:
    before = await schema_version(conn)
    if before is not None and before > SCHEMA_VERSION:
        raise SchemaError(
            f"portal database {where} has schema version {before}, newer than this"
            f" auditshipd knows ({SCHEMA_VERSION}): upgrade auditshipd"
        )
    applied = await migrate(conn)
    if applied:
        return (f"applied migrations {', '.join(map(str, applied))}"
                f" (schema version {SCHEMA_VERSION})")
    return f"schema version {SCHEMA_VERSION}, nothing to do"


async def _reindex(conn: Any, where: str) -> str:
    await check_schema(conn, where)
    read, rewritten = await reindex(conn)
    return f"{read} events read, {rewritten} keyword vectors rewritten"
