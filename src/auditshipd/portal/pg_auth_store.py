"""Tokens, browser sessions and recorded views in the PostgreSQL portal store."""

from __future__ import annotations

import time
from typing import Any

from .auth_store import (
    _LIVE_SESSION,
    _NOTE_VIEW,
    _TOKEN_COLUMNS,
    MAX_SESSIONS_PER_TOKEN,
    AuthStore,
    Session,
    _record,
    _session_row,
)
from .tokens import Principal, TokenError, TokenRecord, now_text

__all__ = ["PostgresAuthStore"]

_TRIM_SESSIONS = (
    "DELETE FROM portal_sessions WHERE expires_at <= $1 OR key IN ("
    " SELECT key FROM portal_sessions WHERE token_id = $2"
    " ORDER BY expires_at DESC OFFSET $3)"
)


class PostgresAuthStore(AuthStore):
    """Tokens and sessions on the event store's connection pool."""

    def __init__(self, events: Any) -> None:  # a PostgresEventStore
        self.events = events

    def _pool(self) -> Any:
        return self.events._need_pool()

    async def add(self, record: TokenRecord) -> bool:
        import asyncpg

        async with self._pool().acquire() as conn:
            try:
                status = await conn.execute(
                    f"INSERT INTO portal_tokens({_TOKEN_COLUMNS})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                    record.id, record.name, record.role, record.organization, record.hash,
                    record.created_at, record.revoked_at,
                )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "portal_tokens_active_name":
                    raise TokenError(
                        f"an active token named {record.name!r} exists; revoke it first"
                    ) from None
                return False  # the same token (its hash) is stored already
        return status.endswith(" 1")

    async def list(self) -> list[TokenRecord]:
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_TOKEN_COLUMNS} FROM portal_tokens ORDER BY created_at, id"
            )
        return [_record(r) for r in rows]

    async def revoke(self, name_or_id: str) -> list[TokenRecord]:
        async with self._pool().acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE portal_tokens SET revoked_at = $1 WHERE revoked_at IS NULL"
                f" AND (name = $2 OR id = $2) RETURNING {_TOKEN_COLUMNS}",
                now_text(), name_or_id,
            )
            if rows:
                await conn.execute(
                    "DELETE FROM portal_sessions WHERE token_id = ANY($1::text[])",
                    [r[0] for r in rows],
                )
        return [_record(r) for r in rows]

    async def _active_by_hash(self, digest: str) -> TokenRecord | None:
        async with self._pool().acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_TOKEN_COLUMNS} FROM portal_tokens WHERE hash = $1 AND revoked_at IS NULL",
                digest,
            )
        return _record(row) if row else None

    async def principal(self, token_id: str) -> Principal | None:
        async with self._pool().acquire() as conn:
            row = await conn.fetchrow(
                "SELECT id, name, role, organization FROM portal_tokens"
                " WHERE id = $1 AND revoked_at IS NULL",
                token_id,
            )
        return Principal(*row) if row else None

    async def _store_session(self, key: str, session: Session) -> None:
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO portal_sessions(key, token_id, csrf, expires_at) VALUES ($1, $2, $3, $4)",
                key, session.token_id, session.csrf, session.expires_at,
            )
            await conn.execute(_TRIM_SESSIONS, time.time(), session.token_id, MAX_SESSIONS_PER_TOKEN)

    async def _live_session(self, key: str, now: float) -> tuple[Principal, Session] | None:
        async with self._pool().acquire() as conn:
            row = await conn.fetchrow(_LIVE_SESSION.format(key="$1", now="$2"), key, now)
        return _session_row(row) if row else None

    async def _delete_session(self, key: str) -> None:
        async with self._pool().acquire() as conn:
            await conn.execute("DELETE FROM portal_sessions WHERE key = $1", key)

    async def first_view(self, key: str, ttl: float) -> bool:
        now = time.time()
        async with self._pool().acquire() as conn, conn.transaction():
            noted = await conn.fetchval(
                _NOTE_VIEW.format("$1", "$2", "$3") + " RETURNING 1", key, now + ttl, now
            )
            if noted:
                await conn.execute("DELETE FROM portal_views WHERE expires_at <= $1", now)
        return bool(noted)
