"""Portal access tokens: created once, stored only as a hash, revocable.

The token file (``<state_dir>/portal-tokens.json``, mode 0600) is rewritten atomically
(temp file, fsync, rename, fsync of the directory) under an ``flock`` so the CLI and a
running portal can share it; the portal re-reads it when it changes, so a revocation
takes effect on the next request. Tokens are 32 random bytes; only their SHA-256 is
kept and compared with :func:`hmac.compare_digest` against every active token.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..timestamps import now_rfc3339

__all__ = [
    "ROLES",
    "TOKEN_PREFIX",
    "Principal",
    "TokenError",
    "TokenRecord",
    "TokenStore",
    "default_token_path",
]

TOKEN_PREFIX = "asd_"
ROLES = ("admin", "viewer")
ALL_ORGANIZATIONS = "*"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
_ORG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TokenError(ValueError):
    """A token request that cannot be honoured (bad name, duplicate, unknown role)."""


@dataclass(frozen=True)
class TokenRecord:
    """What is stored about a token (never the token itself)."""

    id: str
    name: str
    role: str
    organization: str
    hash: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """Who is making a portal request."""

    token_id: str
    name: str
    role: str
    organization: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def scope(self) -> str | None:
        """The organization this principal may see, or None for every organization."""
        return None if self.organization == ALL_ORGANIZATIONS else self.organization

    def as_actor(self) -> dict[str, Any]:
        return {"type": "portal_token", "name": self.name, "role": self.role}


def default_token_path(config: Any) -> Path:
    return Path(config.state_dir) / "portal-tokens.json"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _now() -> str:
    return now_rfc3339(digits=0)


class TokenStore:
    """The token file. Safe to share between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._records: list[TokenRecord] = []

    # -- queries ----------------------------------------------------------------------

    def list(self) -> list[TokenRecord]:
        return list(self._load())

    def authenticate(self, token: str) -> Principal | None:
        """The principal of an active token, or None. Compares against every active
        token in constant time each, so timing does not tell which one nearly matched."""
        if not token or len(token) > 256:
            return None
        candidate = _hash(token)
        found: TokenRecord | None = None
        for record in self._load():
            if hmac.compare_digest(record.hash, candidate) and record.active:
                found = record
        return _principal(found) if found else None

    def principal(self, token_id: str) -> Principal | None:
        """The principal of the active token with this id (sessions re-check it)."""
        for record in self._load():
            if record.id == token_id and record.active:
                return _principal(record)
        return None

    # -- changes ----------------------------------------------------------------------

    def create(self, name: str, role: str, organization: str = ALL_ORGANIZATIONS) -> str:
        """Store a new token and return it in clear text: the only time it is shown."""
        if not _NAME_RE.match(name):
            raise TokenError("name must be 1-64 letters, digits or '_.@+-', starting with a letter or digit")
        if role not in ROLES:
            raise TokenError(f"role must be one of: {', '.join(ROLES)}")
        if organization != ALL_ORGANIZATIONS and not _ORG_RE.match(organization):
            raise TokenError("organization must be '*' or an organization slug")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._locked() as records:
            if any(r.name == name and r.active for r in records):
                raise TokenError(f"an active token named {name!r} exists; revoke it first")
            records.append(
                TokenRecord(
                    id=secrets.token_hex(6), name=name, role=role, organization=organization,
                    hash=_hash(token), created_at=_now(),
                )
            )
        return token

    def revoke(self, name_or_id: str) -> list[TokenRecord]:
        """Revoke the active tokens with this name or id; returns them (empty: none)."""
        revoked: list[TokenRecord] = []
        with self._locked() as records:
            for i, r in enumerate(records):
                if r.active and name_or_id in (r.name, r.id):
                    records[i] = TokenRecord(**{**asdict(r), "revoked_at": _now()})
                    revoked.append(records[i])
        return revoked

    # -- file -------------------------------------------------------------------------

    def _load(self) -> list[TokenRecord]:
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._stamp, self._records = None, []
                return self._records
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._records = self._read()
                self._stamp = stamp
            return self._records

    def _read(self) -> list[TokenRecord]:
        data = msgspec.json.decode(self.path.read_bytes())
        return [TokenRecord(**r) for r in data.get("tokens", [])]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[TokenRecord]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            records = self._read() if self.path.exists() else []
            yield records
            self._write(records)
        finally:
            os.close(fd)

    def _write(self, records: list[TokenRecord]) -> None:
        body = msgspec.json.format(
            msgspec.json.encode({"version": 1, "tokens": [asdict(r) for r in records]}), indent=2
        )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _principal(record: TokenRecord) -> Principal:
    return Principal(record.id, record.name, record.role, record.organization)
