"""What both event stores keep of a batch, built in one pass from the redacted JSON lines.

The ``portal`` sink hands the stores the lines it was given (never decoded dicts): each
line is decoded once into a small typed head (id, action, time, actor, organization,
targets; every other field skipped by the decoder), and its keyword text is cut from the
line's bytes (the JSON without its keys and literals), which holds exactly the tokens of
:func:`~auditshipd.portal.query.search_text` over the decoded event. Lines that the typed
decode or the byte cut cannot answer for (an actor that is not an object, a string with
an escape, a float written with an exponent) take the reference path over the decoded
event, which gives the same row. The C extension ``_tsvector_c`` cuts a whole batch's
keyword texts in one call, with the same result (:func:`texts_c`).

The portal's own access records (:data:`ACCESS_ACTIONS`) are stored and listed but not
keyword-indexed: their text is empty, so searching never digs through them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import msgspec

from .query import format_time, parse_time, search_text
from .store import _organization, actor_key, target_keys

__all__ = ["ACCESS_ACTIONS", "EventRow", "event_row", "first_of_each", "indexed_text", "line_text",
           "line_texts", "rows_c", "texts_c", "tsvector_c_on"]

# What the portal records about itself: who viewed, exported or purged the audit log.
ACCESS_ACTIONS = frozenset({"audit_log.viewed", "audit_log.exported", "audit_log.purged"})

_UTC = _dt.timezone.utc


class EventRow(NamedTuple):
    """One event as the stores keep it. ``occurred_at`` is the stored text of ``when``;
    ``timeless``: the event had no usable time (``when`` is when it arrived)."""

    id: str
    when: _dt.datetime
    occurred_at: str
    timeless: bool
    action: str
    actor: str
    organization: str | None
    targets: list[str]
    text: str
    body: str


class _Party(msgspec.Struct):
    email: Any = None
    name: Any = None


class _Organization(msgspec.Struct):
    slug: Any = None


class _Head(msgspec.Struct):
    id: Any = None
    action: Any = None
    occurred_at: Any = None
    actor: _Party | None = None
    organization: _Organization | None = None
    targets: list[_Party | None] | None = None


try:  # a batch's keyword texts, or SQLite rows, in one call (the same; see texts_c, rows_c)
    from ._tsvector_c import rows as _rows_c
    from ._tsvector_c import texts as _texts_c
except ImportError:
    _texts_c = _rows_c = None

_decode_head = msgspec.json.Decoder(_Head).decode
_decode = msgspec.json.Decoder().decode
# A time as the journal writes it: decoded by ``fromisoformat`` (C) instead of the general
# parser; anything else (offsets, a date alone, nanoseconds) goes to ``parse_time``.
_CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(\d{1,6}))?Z")
# Each match skips punctuation, literals and keys (a string and its colon) and captures
# the next value string or number, if any (possessive: one pass, no backtracking). Only
# used on lines without a backslash, so a string is quotes around anything but quotes.
_VALUES = re.compile(rb'[^"\d]*+(?:"[^"]*+"\s*+:[^"\d]*+)*+("[^"]*+"|\d[-+.\deE]*+)?')
# Among those, one per line after a newline: a number whose JSON text may differ from
# Python's ``str()`` of its value (1.50, 1e5); strings start with their quote, never with
# a digit. A literal first character lets the engine skip to each newline.
_ODD_NUMBER = re.compile(rb"\n\d++[.eE]")


def line_text(line: bytes, event: Mapping[str, Any] | None = None) -> str:
    """The keyword text of a redacted line: the tokens of every string and number in it,
    in order (see the module docstring). ``event``: the line decoded, if at hand."""
    if b"\\" not in line:
        text = b"\n".join([b"", *filter(None, _VALUES.findall(line))])
        if _ODD_NUMBER.search(text) is None:
            return text.decode("utf-8", "replace")
    return search_text(event if event is not None else _decode(line))


def indexed_text(action: str, line: bytes, event: Mapping[str, Any] | None = None) -> str:
    """What the keyword index holds for an event: nothing for the portal's access records."""
    return "" if action in ACCESS_ACTIONS else line_text(line, event)


def _key(party: Any) -> str:
    if party is None:
        return ""
    value = party.email or party.name or ""
    return (value if type(value) is str else str(value)).strip().lower()


def _when(value: Any) -> tuple[_dt.datetime, str, bool]:
    """(instant, stored text, timeless) of an ``occurred_at`` value."""
    if type(value) is str:
        m = _CANONICAL_TIME.fullmatch(value)
        if m is not None:
            try:
                when = _dt.datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                frac = m.group(1) or ""
                return when, f"{value[:19]}.{frac.ljust(6, '0')}Z", False
        try:
            when = parse_time(value)
            return when, format_time(when), False
        except ValueError:
            pass
    when = _dt.datetime.now(_UTC)  # no usable time: indexed as received rather than refused
    return when, format_time(when), True


def event_row(line: bytes, text: bool = True) -> EventRow:
    """The row of one line. ``text=False``: its ``text`` is left empty, for a store that
    builds its keyword index from the body itself (the PostgreSQL store, see
    :mod:`~auditshipd.portal.pg_vectors`)."""
    try:
        head = _decode_head(line)
    except msgspec.ValidationError:  # an actor or target that is not an object, ...
        return _reference_row(line, text)
    event_id = head.id
    event_id = event_id if type(event_id) is str else str(event_id or "")
    if not event_id:
        event_id = "sha256-" + hashlib.sha256(line).hexdigest()[:32]
    when, text_time, timeless = _when(head.occurred_at)
    action = head.action
    action = action if type(action) is str else str(action or "")
    org = head.organization
    slug = None if org is None or org.slug is None else str(org.slug)
    targets = sorted({k for k in map(_key, head.targets or ()) if k})
    keywords = "" if not text or action in ACCESS_ACTIONS else line_text(line)
    return EventRow(event_id, when, text_time, timeless, action, _key(head.actor), slug, targets,
                    keywords, line.decode("utf-8"))


def _reference_row(line: bytes, text: bool = True) -> EventRow:
    """The row of a line the typed decode refused, from the decoded event."""
    event = _decode(line)
    if not isinstance(event, dict):
        event = {}
    event_id = str(event.get("id") or "") or ("sha256-" + hashlib.sha256(line).hexdigest()[:32])
    when, text_time, timeless = _when(event.get("occurred_at"))
    action = str(event.get("action") or "")
    return EventRow(event_id, when, text_time, timeless, action, actor_key(event),
                    _organization(event), sorted(target_keys(event)),
                    indexed_text(action, line, event) if text else "", line.decode("utf-8"))


def texts_c() -> Callable[[list[bytes]], list[str | None]] | None:
    """The C extension's ``texts`` (each line's :func:`line_text`, None where that takes
    its reference path), or None: not built, or switched off with
    ``AUDITSHIPD_TSVECTOR_C=0``."""
    return _texts_c if tsvector_c_on() else None


def line_texts(lines: list[bytes]) -> list[str]:
    """:func:`line_text` of each line: the C extension's in one call, Python's for the
    lines it hands back (or every line without it)."""
    c = texts_c()
    cut = c(lines) if c is not None else [None] * len(lines)
    return [line_text(line) if text is None else text for line, text in zip(lines, cut, strict=True)]


def rows_c() -> Callable[[list[bytes], int, frozenset[str]], list[tuple[Any, ...] | None]] | None:
    """The C extension's ``rows`` (each line's row as the SQLite store writes it, None
    where Python must answer; see sqlite_ingest.prepare_rows), or None: not built, or
    switched off with ``AUDITSHIPD_TSVECTOR_C=0``."""
    return _rows_c if tsvector_c_on() else None


def tsvector_c_on() -> bool:
    """Whether the C extension ``_tsvector_c`` may be used: ``AUDITSHIPD_TSVECTOR_C=0``
    switches every part of it off (rows, texts, vectors, PostgreSQL records)."""
    return os.environ.get("AUDITSHIPD_TSVECTOR_C", "1") != "0"


def first_of_each(ids: list[str]) -> list[int] | None:
    """The index of each id's first occurrence, in order; None when no id is given twice
    (the common batch: one set built, no Python statement per id)."""
    if len(set(ids)) == len(ids):
        return None
    seen: set[str] = set()
    keep = []
    for k, event_id in enumerate(ids):
        if event_id not in seen:
            seen.add(event_id)
            keep.append(k)
    return keep
