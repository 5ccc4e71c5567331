"""Which store ``[portal] database`` names, and how its failures are classified.

A ``postgresql://`` (or ``postgres://``) URL selects :class:`PostgresEventStore`
(``pip install 'auditshipd[postgres]'``); a path, or nothing, the embedded SQLite file.
"""

from __future__ import annotations

import sqlite3

from ..errors import ConfigError, PermanentError, RetryableError, SinkError
from ..scrub import scrub_secrets, url_secrets
from .auth_store import AuthStore, SQLiteAuthStore
from .config import is_postgres_url
from .pg_errors import connect_argument_error, describe, retry_kind, safe_location
from .store import EventStore
from .store_sqlite import SQLiteEventStore
from .stream_store import SQLiteStreamStore, StreamStore

__all__ = ["auth_store", "event_store", "is_postgres_url", "safe_location", "store_failure",
           "stream_store"]


def event_store(database: str) -> EventStore:
    """The store of ``database`` (not opened yet)."""
    if is_postgres_url(database):
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "a PostgreSQL portal database needs asyncpg: pip install 'auditshipd[postgres]'",
                key="portal.database",
            ) from None
        from .pg_store import PostgresEventStore

        return PostgresEventStore(database)
    return SQLiteEventStore(database)


def auth_store(events: EventStore) -> AuthStore:
    """The token and session store living in the same database as ``events``."""
    if isinstance(events, SQLiteEventStore):
        return SQLiteAuthStore(events)
    from .pg_store import PostgresEventStore

    if isinstance(events, PostgresEventStore):
        from .pg_auth_store import PostgresAuthStore

        return PostgresAuthStore(events)
    raise TypeError(f"no token store for {type(events).__name__}")


def stream_store(events: EventStore) -> StreamStore:
    """The self-service stream store living in the same database as ``events``."""
    if isinstance(events, SQLiteEventStore):
        return SQLiteStreamStore(events)
    from .pg_store import PostgresEventStore

    if isinstance(events, PostgresEventStore):
        from .pg_stream_store import PostgresStreamStore

        return PostgresStreamStore(events)
    raise TypeError(f"no stream store for {type(events).__name__}")


def store_failure(exc: BaseException, database: str | None = None) -> SinkError | None:
    """A sink error for a store failure: retryable when trying again may succeed (locked,
    disk full, server down, restarting, read-only during a failover, login refused for
    a while: see :func:`~auditshipd.portal.pg_errors.retry_kind`), permanent when the
    batch itself was refused or the URL cannot be used; None for anything else (a bug:
    let it propagate). The message never quotes the URL: the user, password and query
    values of ``database`` are masked in it besides."""
    failure = _failure(exc)
    if failure is None or not database:
        return failure
    return type(failure)(scrub_secrets(str(failure), url_secrets(database)) or "")


def _failure(exc: BaseException) -> SinkError | None:
    from .pg_schema import SchemaError

    if isinstance(exc, (SchemaError, ConfigError)):
        return PermanentError(str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        return RetryableError(f"portal database: {exc}")
    if isinstance(exc, (sqlite3.Error, UnicodeDecodeError)):
        return PermanentError(f"portal database refused the batch: {exc}")
    if connect_argument_error(exc):
        return PermanentError(describe(exc))
    try:
        import asyncpg
    except ImportError:
        asyncpg = None  # type: ignore[assignment]
    if asyncpg is not None:
        if isinstance(exc, asyncpg.PostgresError):
            kind = retry_kind(getattr(exc, "sqlstate", None))
            if kind is not None:
                return RetryableError(f"portal database {kind}: {describe(exc)}")
            return PermanentError(f"portal database refused the batch: {describe(exc)}")
        if isinstance(exc, asyncpg.exceptions.DataError):  # a value asyncpg cannot encode
            return PermanentError(f"portal database refused the batch: {describe(exc)}")
        if isinstance(exc, asyncpg.InterfaceError):  # the connection closed under it
            return RetryableError(f"portal database unavailable: {describe(exc)}")
    if isinstance(exc, (OSError, TimeoutError)):
        return RetryableError(f"portal database unreachable: {describe(exc)}")
    if isinstance(exc, (ValueError, TypeError)):
        return PermanentError(f"portal database refused the batch: {exc}")
    return None
