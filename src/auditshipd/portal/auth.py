"""Who is asking: bearer tokens, browser sessions and CSRF tokens.

A browser exchanges a token for an opaque random session id (server-side state, keyed by
its SHA-256) in an HttpOnly, SameSite=Strict cookie, Secure when served over TLS. Every
request re-checks that the session's token is still active, so revoking a token ends its
sessions too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from .tokens import Principal, TokenStore

__all__ = ["Session", "SessionStore", "authenticate", "csrf_matches", "new_csrf_token"]

SESSION_COOKIE = "asd_session"
LOGIN_CSRF_COOKIE = "asd_login_csrf"
MAX_SESSIONS = 10_000


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass
class Session:
    token_id: str
    csrf: str
    expires_at: float


class SessionStore:
    """In-memory sessions (a restart logs browsers out, which is fine for an admin tool)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._sessions: dict[str, Session] = {}

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()

    def create(self, token_id: str) -> tuple[str, Session]:
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].expires_at)
            del self._sessions[oldest]
        session_id = secrets.token_urlsafe(32)
        session = Session(token_id, new_csrf_token(), time.monotonic() + self.ttl)
        self._sessions[self._key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        key = self._key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires_at < time.monotonic():
            del self._sessions[key]
            return None
        return session

    def delete(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(self._key(session_id), None)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if s.expires_at < now]:
            del self._sessions[key]


def authenticate(
    request: web.Request, tokens: TokenStore, sessions: SessionStore
) -> tuple[Principal | None, Session | None]:
    """The principal behind a request (bearer token first, else the session cookie)."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return None, None
        return tokens.authenticate(value.strip()), None
    session_id = request.cookies.get(cookie_name(request))
    session = sessions.get(session_id)
    if session is None:
        return None, None
    principal = tokens.principal(session.token_id)
    if principal is None:
        sessions.delete(session_id)
        return None, None
    return principal, session


def cookie_name(request: web.Request) -> str:
    # __Host- cookies must be Secure, so the prefix is only used over TLS.
    return f"__Host-{SESSION_COOKIE}" if request.secure else SESSION_COOKIE
