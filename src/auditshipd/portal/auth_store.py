"""Tokens and browser sessions in the portal's store, so portal replicas keep no state.

:class:`AuthStore` is the one interface; :class:`SQLiteAuthStore` keeps both in the
embedded database, :class:`~auditshipd.portal.pg_auth_store.PostgresAuthStore` in the
PostgreSQL one. Nothing is cached: every request reads the token (and the session) from
the store, so a token revoked through any replica or the CLI stops working everywhere at
the next request, and a session opened on one replica is valid on all.

Stored: a token's SHA-256, never the token; a session's SHA-256 key, never the cookie's
value; the session's CSRF token, which is bound to the session (it is rendered into the
pages of that session only). Sessions carry a wall-clock expiry (replicas share it).
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tokens import (
    MAX_TOKEN_CHARS,
    Principal,
    TokenError,
    TokenRecord,
    new_token,
    now_text,
    read_token_file,
    token_hash,
)

__all__ = [
    "AuthStore",
    "SQLiteAuthStore",
    "Session",
    "import_token_file",
    "new_csrf_token",
    "session_key",
]

log = logging.getLogger("auditshipd.portal")

# A login creates a session; an admin who logs in again and again (or a script) must not
# grow the table without bound: each token keeps its newest sessions only.
MAX_SESSIONS_PER_TOKEN = 100
MAX_SESSION_ID_CHARS = 128
_TOKEN_COLUMNS = "id, name, role, organization, hash, created_at, revoked_at"


@dataclass(frozen=True)
class Session:
    """A browser session: whose token, its CSRF token, when it ends (epoch seconds)."""

    token_id: str
    csrf: str
    expires_at: float


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def session_key(session_id: str) -> str:
    """How a session is stored: a hash, so reading the table gives no usable cookie."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def _usable(session_id: str | None) -> bool:
    return bool(session_id) and len(session_id or "") <= MAX_SESSION_ID_CHARS


class AuthStore(abc.ABC):
    """Portal tokens and browser sessions. All methods are coroutines safe on the loop."""

    # -- tokens -----------------------------------------------------------------------

    async def create(self, name: str, role: str, organization: str = "*") -> str:
        """Store a new token and return it in clear text: the only time it is shown."""
        token, record = new_token(name, role, organization)
        await self.add(record)
        return token

    @abc.abstractmethod
    async def add(self, record: TokenRecord) -> bool:
        """Store a token record; False when its id or hash is stored already, TokenError
        when an active token has its name."""

    @abc.abstractmethod
    async def list(self) -> list[TokenRecord]:
        """Every token, oldest first (revoked ones included)."""

    @abc.abstractmethod
    async def revoke(self, name_or_id: str) -> list[TokenRecord]:
        """Revoke the active tokens with this name or id and end their sessions; returns
        them (empty: none)."""

    @abc.abstractmethod
    async def _active_by_hash(self, digest: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    async def principal(self, token_id: str) -> Principal | None:
        """The principal of the active token with this id."""

    async def authenticate(self, token: str) -> Principal | None:
        """The principal of an active token, or None. Looked up by the token's SHA-256:
        what an attacker controls is the token, not the hash prefix the index compares."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        record = await self._active_by_hash(token_hash(token))
        return None if record is None else Principal(record.id, record.name, record.role, record.organization)

    # -- sessions ---------------------------------------------------------------------

    async def create_session(self, token_id: str, ttl: float) -> tuple[str, Session]:
        """A new session of ``token_id`` lasting ``ttl`` seconds: (cookie value, session)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(token_id, new_csrf_token(), time.time() + ttl)
        await self._store_session(session_key(session_id), session)
        return session_id, session

    @abc.abstractmethod
    async def _store_session(self, key: str, session: Session) -> None: ...

    async def session(self, session_id: str | None) -> tuple[Principal, Session] | None:
        """The live session of this cookie value and the principal of its still-active
        token (one read), or None."""
        if not _usable(session_id):
            return None
        assert session_id is not None
        return await self._live_session(session_key(session_id), time.time())

    @abc.abstractmethod
    async def _live_session(self, key: str, now: float) -> tuple[Principal, Session] | None: ...

    async def delete_session(self, session_id: str | None) -> None:
        if _usable(session_id):
            assert session_id is not None
            await self._delete_session(session_key(session_id))

    @abc.abstractmethod
    async def _delete_session(self, key: str) -> None: ...

    # -- recorded views -------------------------------------------------------------------

    @abc.abstractmethod
    async def first_view(self, key: str, ttl: float) -> bool:
        """Whether no view under ``key`` (a hash of the viewer and what was viewed) was
        noted in the last ``ttl`` seconds; notes this one. Atomic in the store, so two
        replicas serving the same view at once answer True once."""


# A view is new when its key is not there or has expired (then it is noted again).
_NOTE_VIEW = (
    "INSERT INTO portal_views(key, expires_at) VALUES ({0}, {1})"
    " ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at"
    " WHERE portal_views.expires_at <= {2}"
)


def _record(row: Any) -> TokenRecord:
    return TokenRecord(*row)


def _session_row(row: Any) -> tuple[Principal, Session]:
    token_id, name, role, organization, csrf, expires_at = row
    return Principal(token_id, name, role, organization), Session(token_id, csrf, float(expires_at))


_LIVE_SESSION = (
    "SELECT t.id, t.name, t.role, t.organization, s.csrf, s.expires_at"
    " FROM portal_sessions s JOIN portal_tokens t ON t.id = s.token_id"
    " WHERE s.key = {key} AND s.expires_at > {now} AND t.revoked_at IS NULL"
)
# Expired sessions, and the oldest of this token beyond its share, go when it logs in.
_TRIM_SESSIONS = (
    "DELETE FROM portal_sessions WHERE expires_at <= ? OR key IN ("
    " SELECT key FROM portal_sessions WHERE token_id = ?"
    " ORDER BY expires_at DESC LIMIT -1 OFFSET ?)"
)


class SQLiteAuthStore(AuthStore):
    """Tokens and sessions in the embedded database, on the event store's threads."""

    def __init__(self, events: Any) -> None:  # a SQLiteEventStore
        self.events = events

    async def add(self, record: TokenRecord) -> bool:
        return await self.events._write(self._add_sync, record)

    def _add_sync(self, record: TokenRecord) -> bool:
        conn = self.events._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute(
                "SELECT 1 FROM portal_tokens WHERE id = ? OR hash = ?", (record.id, record.hash)
            ).fetchone():
                conn.execute("COMMIT")
                return False
            if record.active and conn.execute(
                "SELECT 1 FROM portal_tokens WHERE name = ? AND revoked_at IS NULL", (record.name,)
            ).fetchone():
                raise TokenError(f"an active token named {record.name!r} exists; revoke it first")
            conn.execute(
                f"INSERT INTO portal_tokens({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.name, record.role, record.organization, record.hash,
                 record.created_at, record.revoked_at),
            )
            conn.execute("COMMIT")
            return True
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def list(self) -> list[TokenRecord]:
        return await self.events._read(self._list_sync)

    def _list_sync(self) -> list[TokenRecord]:
        rows = self.events._conn().execute(
            f"SELECT {_TOKEN_COLUMNS} FROM portal_tokens ORDER BY created_at, rowid"
        )
        return [_record(r) for r in rows]

    async def revoke(self, name_or_id: str) -> list[TokenRecord]:
        return await self.events._write(self._revoke_sync, name_or_id)

    def _revoke_sync(self, name_or_id: str) -> list[TokenRecord]:
        conn = self.events._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(
                "UPDATE portal_tokens SET revoked_at = ? WHERE revoked_at IS NULL"
                f" AND (name = ? OR id = ?) RETURNING {_TOKEN_COLUMNS}",
                (now_text(), name_or_id, name_or_id),
            ).fetchall()
            conn.executemany(
                "DELETE FROM portal_sessions WHERE token_id = ?", [(r[0],) for r in rows]
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return [_record(r) for r in rows]

    async def _active_by_hash(self, digest: str) -> TokenRecord | None:
        return await self.events._read(self._active_by_hash_sync, digest)

    def _active_by_hash_sync(self, digest: str) -> TokenRecord | None:
        row = self.events._conn().execute(
            f"SELECT {_TOKEN_COLUMNS} FROM portal_tokens WHERE hash = ? AND revoked_at IS NULL",
            (digest,),
        ).fetchone()
        return _record(row) if row else None

    async def principal(self, token_id: str) -> Principal | None:
        return await self.events._read(self._principal_sync, token_id)

    def _principal_sync(self, token_id: str) -> Principal | None:
        row = self.events._conn().execute(
            "SELECT id, name, role, organization FROM portal_tokens"
            " WHERE id = ? AND revoked_at IS NULL",
            (token_id,),
        ).fetchone()
        return Principal(*row) if row else None

    async def _store_session(self, key: str, session: Session) -> None:
        await self.events._write(self._store_session_sync, key, session)

    def _store_session_sync(self, key: str, session: Session) -> None:
        conn = self.events._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO portal_sessions(key, token_id, csrf, expires_at) VALUES (?, ?, ?, ?)",
                (key, session.token_id, session.csrf, session.expires_at),
            )
            conn.execute(
                _TRIM_SESSIONS,
                (time.time(), session.token_id, MAX_SESSIONS_PER_TOKEN),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _live_session(self, key: str, now: float) -> tuple[Principal, Session] | None:
        return await self.events._read(self._live_session_sync, key, now)

    def _live_session_sync(self, key: str, now: float) -> tuple[Principal, Session] | None:
        row = self.events._conn().execute(
            _LIVE_SESSION.format(key="?", now="?"), (key, now)
        ).fetchone()
        return _session_row(row) if row else None

    async def _delete_session(self, key: str) -> None:
        await self.events._write(self._delete_session_sync, key)

    def _delete_session_sync(self, key: str) -> None:
        self.events._conn().execute("DELETE FROM portal_sessions WHERE key = ?", (key,))

    async def first_view(self, key: str, ttl: float) -> bool:
        return await self.events._write(self._first_view_sync, key, ttl)

    def _first_view_sync(self, key: str, ttl: float) -> bool:
        conn = self.events._conn()
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            noted = conn.execute(_NOTE_VIEW.format("?", "?", "?"), (key, now + ttl, now)).rowcount
            if noted:
                conn.execute("DELETE FROM portal_views WHERE expires_at <= ?", (now,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return noted > 0


async def import_token_file(store: AuthStore, path: Path) -> int:
    """Import an earlier version's token file into ``store`` once, then rename it
    ``*.imported`` (kept as a record, never read again). A token whose name is taken by
    another active token is imported under ``<name>-<id>`` so it keeps working. Returns
    how many tokens were added."""
    try:
        records = read_token_file(path)
    except FileNotFoundError:
        return 0
    except (ValueError, TypeError, OSError) as exc:
        raise TokenError(f"cannot import the token file {path}: {exc}") from None
    added = 0
    for record in records:
        try:
            new = await store.add(record)
        except TokenError:
            renamed = TokenRecord(**{**record.__dict__, "name": f"{record.name[:50]}-{record.id}"})
            new = await store.add(renamed)
            log.warning("token %r from %s imported as %r: an active token has its name",
                        record.name, path, renamed.name)
        added += new
    try:
        os.replace(path, path.with_name(path.name + ".imported"))
    except FileNotFoundError:
        pass  # another process imported it at the same time
    lock = path.with_name(f".{path.name}.lock")
    lock.unlink(missing_ok=True)
    if added:
        log.info("imported %d portal tokens from %s into the portal database", added, path)
    return added
