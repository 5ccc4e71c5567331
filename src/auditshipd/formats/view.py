"""A typed view of a redacted line: what the fast encoders read, decoded in C.

The fast encoders decode each redacted line into :class:`EventView`: ``id``, ``action``
and ``occurred_at`` as strings (msgspec checks the types), the objects (``actor``,
``organization``, ``context``, ``targets``, ``metadata``) as :class:`msgspec.Raw`, the
line's own bytes. Those bytes are the keys of bounded caches (:class:`BytesCache`) of
what a format writes for them: organizations, people and user agents repeat from event
to event, so most objects are never decoded at all. A format that copies an object
verbatim (``metadata``, ``targets``) copies the bytes: byte for byte what decoding and
re-encoding would write, because the line is msgspec's compact JSON (the redactor's
output, or a batch's ``lines``), the encoders' input contract.

A line the view cannot answer for exactly (a field of an unexpected type, a target that
is not an object, an unreadable time) raises :class:`msgspec.DecodeError` or makes an
encoder return None: the reference encoder then answers from the decoded dict.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

from .event import _fast_ms, epoch_ms

__all__ = ["MISS", "ContextView", "EventView", "OrganizationView", "PartyView",
           "decode_context", "decode_event", "decode_organization", "decode_party",
           "decode_targets", "epoch_ms_fast", "first_entity", "jstr", "target_user", "truthy"]

# Target types that stand for a person (as event.PERSON_TYPES).
_PERSON_TYPES = frozenset({"user", "invitation", "member", "admin", "organization_membership"})
MISS = object()  # not in a cache (a cached value may be None)


class PartyView(Struct, gc=False):
    """An actor or a target. Empty strings count as absent, as ``event.text`` has it:
    every use tests a field's truth, never ``is None``."""

    type: str | None = None
    email: str | None = None
    name: str | None = None


class OrganizationView(Struct, gc=False):
    slug: str | None = None
    name: str | None = None


class ContextView(Struct, gc=False):
    location: str | None = None
    user_agent: str | None = None


class EventView(Struct, gc=False):
    id: str | UnsetType = UNSET
    action: str | None = None
    occurred_at: str | UnsetType = UNSET
    actor: Raw = Raw(b"")  # empty: absent
    organization: Raw = Raw(b"")
    context: Raw = Raw(b"")
    targets: Raw = Raw(b"")
    metadata: Raw = Raw(b"")


decode_event = msgspec.json.Decoder(EventView).decode
_party = msgspec.json.Decoder(PartyView | None).decode
_organization = msgspec.json.Decoder(OrganizationView | None).decode
_context = msgspec.json.Decoder(ContextView | None).decode
_targets = msgspec.json.Decoder(list[PartyView] | None).decode
jstr = msgspec.json.Encoder().encode  # a str as a JSON string (escaped as msgspec does)


def decode_party(raw: bytes) -> PartyView | None:
    """``actor`` or a target as event.party sees it: None when absent, null or empty."""
    p = _party(raw) if raw else None
    return p if p is not None and (p.type or p.email or p.name) else None


def decode_organization(raw: bytes) -> OrganizationView | None:
    return _organization(raw) if raw else None


def decode_context(raw: bytes) -> ContextView | None:
    return _context(raw) if raw else None


def decode_targets(raw: bytes) -> list[PartyView] | None:
    """``targets`` as a list (None when absent or null); anything but a list of objects
    of strings raises ValidationError (the reference encoder answers)."""
    return _targets(raw) if raw else None


# The JSON values Python finds false, as msgspec writes them (a Raw of another spelling
# cannot come from a compact msgspec line).
_FALSY = frozenset({b"null", b"false", b"0", b"0.0", b"-0.0", b'""', b"{}", b"[]"})


def truthy(raw: bytes | Raw) -> bool:
    """Whether the value ``raw`` holds is true for Python (and present at all)."""
    n = len(raw)
    return n > 5 or (n > 0 and bytes(raw) not in _FALSY)


def target_user(targets: list[PartyView] | None) -> PartyView | None:
    """As event.target_user: the first target of type ``user``, else the first of a
    person type (or with no type and an email)."""
    found = None
    for p in targets or ():
        t = p.type
        if t == "user":
            return p
        if found is None and (t in _PERSON_TYPES or (not t and p.email)):
            found = p
    return found


def first_entity(targets: list[PartyView] | None) -> PartyView | None:
    """As event.first_entity: the first target that is not a person."""
    for p in targets or ():
        if p.type not in _PERSON_TYPES and (p.type or p.email or p.name):
            return p
    return None


# (second as text, its ms) of the last event: events come in time order, so one entry
# answers for runs of them. One slot holding a tuple: replaced whole, never half-written.
_last_second: list[tuple[str, int]] = [("", 0)]


def epoch_ms_fast(occurred_at: str | UnsetType) -> int | None:
    """event.epoch_ms, with the parse of ``YYYY-MM-DDTHH:MM:SS`` reused while the second
    stays the same (``_fast_ms`` of the second plus the milliseconds is what ``_fast_ms``
    of the whole string computes)."""
    if occurred_at is UNSET:
        return None
    s = occurred_at
    if len(s) == 24 and s[19] == "." and s[23] == "Z":
        frac = s[20:23]
        if frac.isascii() and frac.isdecimal():  # "²".isdigit() is true, int() refuses it
            second = s[:19]
            last, base = _last_second[0]
            if second == last:
                return base + int(frac)
            fresh = _fast_ms(second + "Z")
            if fresh is not None:
                _last_second[0] = (second, fresh)
                return fresh + int(frac)
    return epoch_ms(s)
