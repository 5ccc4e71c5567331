"""What the encoders read from a redacted event: only what left the machine.

Every encoder starts from the compact JSON line the redactor produced (deny by default:
``actor``/``targets`` emails, names and types, ``organization`` slug and name,
``context``, scanned ``metadata``). Nothing here can reach an internal id because none
is left in its input.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import time
from typing import Any

__all__ = ["Party", "epoch_ms", "failed", "first_entity", "ip_or_none", "now_ms", "party",
           "target_user", "text"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
# Target types that stand for a person (the "user" an IAM event is about).
PERSON_TYPES = frozenset({"user", "invitation", "member", "admin", "organization_membership"})
_FAILED_SUFFIXES = ("failed", "_failed", ".failure", "denied", "rejected")


def text(value: Any) -> str | None:
    """A non-empty string, or None (redacted events may hold anything a policy allowed)."""
    return value if isinstance(value, str) and value else None


class Party:
    """An actor or a target: the customer-facing parts only."""

    __slots__ = ("type", "email", "name")

    def __init__(self, type_: str | None, email: str | None, name: str | None):
        self.type = type_
        self.email = email
        self.name = name

    @property
    def label(self) -> str | None:
        """The best human-readable handle: email, else name."""
        return self.email or self.name


def party(value: Any) -> Party | None:
    if not isinstance(value, dict):
        return None
    p = Party(text(value.get("type")), text(value.get("email")), text(value.get("name")))
    return p if (p.type or p.email or p.name) else None


def target_user(targets: Any) -> Party | None:
    """The person an event is about: the first target of a person type (``user`` first)."""
    if not isinstance(targets, list):
        return None
    found: Party | None = None
    for t in targets:
        p = party(t)
        if p is None:
            continue
        if p.type == "user":
            return p
        if found is None and (p.type in PERSON_TYPES or (p.type is None and p.email)):
            found = p
    return found


def first_entity(targets: Any) -> Party | None:
    """The first target that is not a person (a setting, an API key, a connection...)."""
    if not isinstance(targets, list):
        return None
    for t in targets:
        p = party(t)
        if p is not None and p.type not in PERSON_TYPES:
            return p
    return None


def epoch_ms(occurred_at: Any) -> int | None:
    """Milliseconds since the epoch of an RFC 3339 time; None when it cannot be read."""
    if not isinstance(occurred_at, str) or not occurred_at:
        return None
    s = occurred_at[:-1] + "+00:00" if occurred_at[-1] in "Zz" else occurred_at
    try:
        when = _dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return (when - _EPOCH) // _dt.timedelta(milliseconds=1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ip_or_none(value: Any) -> str | None:
    """``context.location`` when it is an IP address (it may also be a place name)."""
    s = text(value)
    if s is None or len(s) > 45:
        return None
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        return None


def failed(action: str) -> bool:
    """Whether the action names a failure (``user.sign_in_failed``, ``sso.login.denied``)."""
    return action.endswith(_FAILED_SUFFIXES)
