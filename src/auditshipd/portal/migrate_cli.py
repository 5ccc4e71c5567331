"""``auditshipd portal migrate``: bring a PostgreSQL portal database to this version's schema.

The embedded SQLite store creates its schema itself; a shared server is changed only on
purpose, by this command, once per upgrade (any host may run it, concurrently too).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..config import load_config
from ..errors import AuditshipdError
from .config import is_postgres_url, portal_config
from .pg_errors import BAD_URL, describe, safe_location, url_problem
from .pg_schema import SCHEMA_VERSION, SchemaError, migrate, schema_version

__all__ = ["portal_migrate"]


def _fail(message: str) -> int:
    print(f"auditshipd: {message}", file=sys.stderr)
    return 1


def portal_migrate(args: argparse.Namespace) -> int:
    try:
        pc = portal_config(load_config(getattr(args, "config", None)))
    except AuditshipdError as exc:
        return _fail(str(exc))
    if not is_postgres_url(pc.database):
        print(f"portal database {pc.database} is SQLite: its schema is created when it is opened",
              file=sys.stderr)
        return 0
    try:
        return asyncio.run(_migrate(pc.database))
    except ImportError:
        return _fail("a PostgreSQL portal database needs asyncpg: pip install 'auditshipd[postgres]'")


async def _migrate(url: str) -> int:
    import asyncpg

    where = safe_location(url)
    if url_problem(url) is not None:
        return _fail(f"portal.database: {BAD_URL}")
    try:
        conn = await asyncpg.connect(url)
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _fail(f"cannot connect to portal database {where}: {describe(exc)}")
    try:
        before = await schema_version(conn)
        if before is not None and before > SCHEMA_VERSION:
            raise SchemaError(
                f"portal database {where} has schema version {before}, newer than this"
                f" auditshipd knows ({SCHEMA_VERSION}): upgrade auditshipd"
            )
        applied = await migrate(conn)
    except (SchemaError, asyncpg.PostgresError) as exc:
        return _fail(f"migration of {where} failed: {exc}")
    finally:
        await conn.close()
    if applied:
        print(f"portal database {where}: applied migrations {', '.join(map(str, applied))}"
              f" (schema version {SCHEMA_VERSION})")
    else:
        print(f"portal database {where}: schema version {SCHEMA_VERSION}, nothing to do")
    return 0
