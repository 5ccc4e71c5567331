"""Which store ``[portal] database`` names, and how its failures are classified.

A ``postgresql://`` (or ``postgres://``) URL selects :class:`PostgresEventStore`
(``pip install 'auditshipd[postgres]'``); a path, or nothing, the embedded SQLite file.
"""

from __future__ import annotations

import sqlite3

from ..errors import ConfigError, PermanentError, RetryableError, SinkError
from .auth_store import AuthStore, SQLiteAuthStore
from .pg_store import is_postgres_url, safe_location
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


def store_failure(exc: BaseException) -> SinkError | None:
    """A sink error for a store failure: retryable when trying again may succeed (locked,
    disk full, server down or restarting), permanent when the batch itself was refused;
    None for anything else (a bug: let it propagate)."""
    from .pg_schema import SchemaError

    if isinstance(exc, SchemaError):
        return PermanentError(str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        return RetryableError(f"portal database: {exc}")
    if isinstance(exc, (sqlite3.Error, UnicodeDecodeError)):
        return PermanentError(f"portal database refused the batch: {exc}")
    try:
        import asyncpg
    except ImportError:
        asyncpg = None  # type: ignore[assignment]
    if asyncpg is not None:
        transient = (
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            asyncpg.TooManyConnectionsError,
            asyncpg.exceptions.OperatorInterventionError,
            asyncpg.exceptions.InsufficientResourcesError,
            asyncpg.exceptions.TransactionRollbackError,
            asyncpg.exceptions.LockNotAvailableError,
        )
        if isinstance(exc, transient):
            return RetryableError(f"portal database: {type(exc).__name__}: {exc}")
        if isinstance(exc, asyncpg.PostgresError):
            return PermanentError(f"portal database refused the batch: {type(exc).__name__}: {exc}")
    if isinstance(exc, (OSError, TimeoutError)):
        return RetryableError(f"portal database unreachable: {type(exc).__name__}: {exc}")
    if isinstance(exc, (ValueError, TypeError)):
        return PermanentError(f"portal database refused the batch: {exc}")
    return None
