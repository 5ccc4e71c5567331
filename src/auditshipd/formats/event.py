"""What the encoders read from a redacted event: only what left the machine.

Every encoder starts from the compact JSON line the redactor produced (deny by default:
``actor``/``targets`` emails, names and types, ``organization`` slug and name,
``context``, scanned ``metadata``). Nothing here can reach an internal id because none
is left in its input.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from typing import Any

from ..timestamps import parse_rfc3339

__all__ = ["Party", "epoch_ms", "failed", "first_entity", "ip_or_none", "party", "target_user",
           "text"]

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


_DAYS: dict[str, int] = {}  # "YYYY-MM-DD" -> ms at its midnight (UTC), bounded


def _fast_ms(s: str) -> int | None:
    """The journal writer's own form, ``YYYY-MM-DDTHH:MM:SS[.fff]Z``, without datetime.
    ASCII digits only: ``int`` and ``strptime`` would also take other scripts' digits
    (``"٣"``) and ``isdigit`` superscripts (``"²"``) that ``int`` then rejects."""
    n = len(s)
    if not s.isascii() or not (n == 20 or (n == 24 and s[19] == ".")) or s[-1] != "Z" or s[10] != "T" \
            or s[13] != ":" or s[16] != ":":
        return None
    day = _DAYS.get(s[:10])
    if day is None:
        try:
            d = _dt.datetime.strptime(s[:10], "%Y-%m-%d").replace(tzinfo=_dt.timezone.utc)
        except ValueError:
            return None
        day = (d - _EPOCH) // _dt.timedelta(milliseconds=1)
        if len(_DAYS) < 4096:
            _DAYS[s[:10]] = day
    hms, frac = s[11:19], s[20:23] if n == 24 else "0"
    if not (hms[:2] + hms[3:5] + hms[6:8] + frac).isdecimal():
        return None
    h, m, sec = int(hms[:2]), int(hms[3:5]), int(hms[6:8])
    if h > 23 or m > 59 or sec > 59:
        return None
    return day + ((h * 60 + m) * 60 + sec) * 1000 + int(frac)


def epoch_ms(occurred_at: Any) -> int | None:
    """Milliseconds since the epoch of an RFC 3339 time; None when it cannot be read
    (anything but ASCII in it included: RFC 3339 digits are ASCII digits)."""
    if not isinstance(occurred_at, str) or not occurred_at or not occurred_at.isascii():
        return None
    fast = _fast_ms(occurred_at)
    if fast is not None:
        return fast
    when = parse_rfc3339(occurred_at)  # any other RFC 3339 form: the one parser
    if when is None:
        return None
    return (when - _EPOCH) // _dt.timedelta(milliseconds=1)


_IPS: dict[str, str | None] = {}  # addresses repeat (an office, a SCIM client): bounded


def ip_or_none(value: Any) -> str | None:
    """``context.location`` when it is an IP address (it may also be a place name),
    normalised, without an IPv6 zone index (``fe80::1%eth0`` is ``fe80::1``): the zone
    names an interface of the client's own host, and SIEM IP fields refuse it
    (Elasticsearch's ``ip`` type rejects the whole document). An IPv4-mapped IPv6
    address (``::ffff:192.0.2.7``, what a dual-stack server sees of an IPv4 client) is
    that IPv4 client, written dotted (``192.0.2.7``): SIEMs key on that form, and CEF
    writes it to ``src``."""
    s = text(value)
    if s is None or len(s) > 45:
        return None
    if s in _IPS:
        return _IPS[s]
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        ip: str | None = None
    else:
        v4 = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
        ip = str(v4) if v4 is not None else str(addr).partition("%")[0]
    if len(_IPS) >= 8192:
        _IPS.clear()
    _IPS[s] = ip
    return ip


def failed(action: str) -> bool:
    """Whether the action names a failure (``user.sign_in_failed``, ``sso.login.denied``)."""
    return action.endswith(_FAILED_SUFFIXES)
