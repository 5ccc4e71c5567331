"""Portal access tokens: what is known about one, who it makes a request come from.

A token is ``asd_`` + 32 random bytes, shown once when created; the store keeps only its
SHA-256 (:mod:`auditshipd.portal.auth_store`). Earlier versions kept tokens in
``<state_dir>/portal-tokens.json``: :func:`read_token_file` reads that file so its tokens
can be imported into the store once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..timestamps import now_rfc3339

__all__ = [
    "ALL_ORGANIZATIONS",
    "ROLES",
    "TOKEN_PREFIX",
    "Principal",
    "TokenError",
    "TokenRecord",
    "check_token_request",
    "legacy_token_path",
    "new_token",
    "read_token_file",
    "token_hash",
]

TOKEN_PREFIX = "asd_"
ROLES = ("admin", "viewer")
ALL_ORGANIZATIONS = "*"
MAX_TOKEN_CHARS = 256
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


def legacy_token_path(config: Any) -> Path:
    """Where earlier versions kept the tokens (imported into the store when present)."""
    return Path(config.state_dir) / "portal-tokens.json"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def now_text() -> str:
    """Now, as token records write it (whole seconds, UTC)."""
    return now_rfc3339(digits=0)


def check_token_request(name: str, role: str, organization: str) -> None:
    """TokenError unless a token of this name, role and organization may be created."""
    if not _NAME_RE.match(name):
        raise TokenError("name must be 1-64 letters, digits or '_.@+-', starting with a letter or digit")
    if role not in ROLES:
        raise TokenError(f"role must be one of: {', '.join(ROLES)}")
    if organization != ALL_ORGANIZATIONS and not _ORG_RE.match(organization):
        raise TokenError("organization must be '*' or an organization slug")


def new_token(name: str, role: str, organization: str) -> tuple[str, TokenRecord]:
    """A fresh token (clear text, shown once) and the record the store keeps of it."""
    check_token_request(name, role, organization)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = TokenRecord(
        id=secrets.token_hex(6), name=name, role=role, organization=organization,
        hash=token_hash(token), created_at=now_text(),
    )
    return token, record


def read_token_file(path: Path) -> list[TokenRecord]:
    """The records of an earlier version's token file (ValueError when it is not one)."""
    data = msgspec.json.decode(path.read_bytes())
    if not isinstance(data, dict) or not isinstance(data.get("tokens", []), list):
        raise ValueError(f"{path}: not a portal token file")
    return [TokenRecord(**r) for r in data.get("tokens", [])]


def principal_of(record: TokenRecord) -> Principal:
    return Principal(record.id, record.name, record.role, record.organization)
