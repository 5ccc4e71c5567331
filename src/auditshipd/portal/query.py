"""What a search asks for, and the small pure functions the stores share.

Ordering key: every stored event has an integer ``seq`` = microseconds of its
``occurred_at`` since the epoch x 1024 + a tie-breaker (insertion order among events of
the same microsecond). Sorting by ``seq`` is sorting by time; a cursor is one ``seq``;
``since``/``until`` are ``seq`` ranges. A signed 64-bit integer (SQLite's INTEGER) holds
that only for 1827-2112; beyond, out to every RFC 3339 time (years 0001-9999), a
microsecond gets 16 ties instead of 1024 (see :func:`seq_base`), so the key stays
monotonic over the whole range and every ``seq`` written by earlier versions keeps its
meaning. Keyset pagination on a unique, immutable key
never repeats an event, and never skips one that was stored before the first page.

Keyword search: each whitespace-separated word of ``q`` is a phrase of its tokens
(letters and digits, lower-cased; the last token may be a prefix), and every word must
match. Words with no letters or digits are ignored; a query made only of such words
matches nothing. User text never reaches the FTS5 parser as syntax: the phrases are
rebuilt from tokens and quoted.
"""

from __future__ import annotations

import base64
import datetime as _dt
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..timestamps import format_rfc3339, parse_rfc3339

__all__ = [
    "EventFilter",
    "MAX_QUERY_CHARS",
    "TIE_BITS",
    "decode_cursor",
    "encode_cursor",
    "format_time",
    "fts_query",
    "parse_time",
    "query_phrases",
    "search_text",
    "seq_base",
    "tie_span",
    "tokenize",
]

TIE_BITS = 10
# Microseconds either side of the epoch where a microsecond has 1 << TIE_BITS ties.
_NEAR_MICROS = 1 << 52
_FAR_TIE_BITS = 4
_FAR_START = _NEAR_MICROS << TIE_BITS  # 1 << 62
MAX_QUERY_CHARS = 512
MAX_QUERY_WORDS = 16
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
# A token: letters, digits and private-use characters (FTS5 unicode61's "L* N* Co"); the
# combining accents unicode61 folds away (25 of U+0300-U+0331: acute, grave, dot above,
# cedilla...) continue a token without starting one, so a decomposed "e\u0301cole", or the
# "i\u0307" that lower-casing makes of "\u0130", stays one token.
_PRIVATE = "\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd"
_ACCENTS = "\u0300-\u0304\u0306-\u030c\u030f\u0311\u031b\u0323-\u0328\u032d\u032e\u0330\u0331"
# (\w is a letter, a digit or "_": tokenize() turns "_" into a separator first.)
_TOKEN_RE = re.compile(f"[\\w{_PRIVATE}][\\w{_PRIVATE}{_ACCENTS}]*")
_ASCII_TOKEN_RE = re.compile("[a-z0-9]+")
_FRACTION_RE = re.compile(r"(\.\d{6})\d+")
_SPACED_OFFSET_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}:?\d{2})", re.ASCII)


@dataclass(frozen=True)
class EventFilter:
    """Filters of a search. Empty values mean "no constraint".

    ``actor`` / ``target``: the e-mail address (or the name when there is no e-mail),
    matched case-insensitively. ``since`` is inclusive, ``until`` exclusive.
    ``organization``: the caller's scope; ``None`` sees every organization.
    ``include_access``: also the portal's own access records (``audit_log.viewed``,
    ``.exported``, ``.purged``), which are left out unless asked for or named in
    ``actions``.
    """

    q: str = ""
    actions: tuple[str, ...] = ()
    actor: str = ""
    target: str = ""
    since: _dt.datetime | None = None
    until: _dt.datetime | None = None
    organization: str | None = None
    include_access: bool = False

    def hides(self, access_actions: frozenset[str]) -> bool:
        """Whether the access records are left out: not asked for, none named in
        ``actions``."""
        return not self.include_access and not access_actions.intersection(self.actions)

    def as_metadata(self) -> dict[str, Any]:
        """The filters as recorded in ``audit_log.viewed`` / ``audit_log.exported``: an
        operator's search or export of one organization says which."""
        out: dict[str, Any] = {}
        if self.organization:
            out["organization"] = self.organization
        if self.q:
            out["q"] = self.q
        if self.actions:
            out["action"] = list(self.actions)
        if self.actor:
            out["actor"] = self.actor
        if self.target:
            out["target"] = self.target
        if self.since:
            out["since"] = format_time(self.since)
        if self.until:
            out["until"] = format_time(self.until)
        if self.include_access:
            out["include_access"] = True
        return out


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: the words FTS5's unicode61 tokenizer
    indexes, before it folds them (a combining accent it folds away is still there)."""
    if text.isascii():
        return _ASCII_TOKEN_RE.findall(text.lower())
    return _TOKEN_RE.findall(text.lower().replace("_", " "))


def _query_words(q: str) -> list[str]:
    if len(q) > MAX_QUERY_CHARS:
        raise ValueError(f"at most {MAX_QUERY_CHARS} characters")
    words = q.split()
    if len(words) > MAX_QUERY_WORDS:
        raise ValueError(f"at most {MAX_QUERY_WORDS} words")
    return words


def query_phrases(q: str) -> list[list[str]]:
    """The phrases of a keyword query (each word's tokens); ValueError when it is too long."""
    return [toks for toks in (tokenize(w) for w in _query_words(q)) if toks]


def fts_query(q: str) -> str:
    """The FTS5 MATCH expression of a keyword query: each word with tokens a quoted phrase,
    its last token a prefix, joined by AND. The words go in as typed, so FTS5 splits and
    folds them with the index's own tokenizer: a word copied from an event finds it
    whatever its letters (a decomposed accent, a dotted capital I). A NUL, which would end
    FTS5's string, splits tokens as any other separator does."""
    words = [w.replace("\x00", " ") for w in _query_words(q) if tokenize(w)]
    return " AND ".join(f'"{w.replace(chr(34), chr(34) * 2)}" *' for w in words)


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        yield str(value)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)


def search_text(event: Mapping[str, Any]) -> str:
    """What keyword search looks at: every string and number in the event, in order."""
    out: list[str] = []
    _collect(event, out.append)
    return "\n".join(out)


def _collect(value: Any, add: Callable[[str], None]) -> None:
    # The hot path of indexing: decoded JSON holds exact dicts, lists, strs and numbers,
    # dispatched on their exact type; anything else takes the general walk.
    kind = type(value)
    if kind is dict or kind is list:
        for v in value.values() if kind is dict else value:
            vkind = type(v)
            if vkind is str:
                add(v)
            elif vkind is dict or vkind is list:
                _collect(v, add)
            elif vkind is int or vkind is float:
                add(str(v))
            elif v is not None and vkind is not bool:
                for leaf in _leaves(v):
                    add(leaf)
    else:
        for leaf in _leaves(value):
            add(leaf)


def parse_time(value: str) -> _dt.datetime:
    """A time given by a user (``since``, ``until``): RFC 3339, a date alone or a time
    without offset taken as UTC (:func:`auditshipd.timestamps.parse_rfc3339`); a space
    before the offset's digits stands for the ``+`` a URL's query string made a space.

    ValueError for text that is not a time, and for a time whose UTC instant falls
    outside the years 0001-9999 (``0001-01-01T00:00:00+01:00``)."""
    when = parse_rfc3339(value)
    if when is None:
        # "+01:00" typed into a URL as it is arrives as " 01:00" (a query string's "+" is
        # a space): after a time, a space and an offset's digits can only be that.
        spaced = _SPACED_OFFSET_RE.fullmatch(value.strip())
        when = parse_rfc3339(f"{spaced[1]}+{spaced[2]}") if spaced else None
    if when is None:
        raise ValueError("not an RFC 3339 time of the years 0001-9999 (UTC)")
    return when


def format_time(value: _dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``, sorting as the time does."""
    return format_rfc3339(value, digits=6)


def seq_base(when: _dt.datetime) -> int:
    """The smallest ``seq`` of an event that occurred at ``when`` (any datetime of
    years 0001-9999). Within 2**52 microseconds of the epoch (1827-2112): microseconds
    << TIE_BITS. Beyond, each side continues from +-2**62 with 16 ties a microsecond, so
    that 9999-12-31 and 0001-01-01 still fit in a signed 64-bit integer."""
    delta = when - _EPOCH
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if -_NEAR_MICROS <= micros < _NEAR_MICROS:
        return micros << TIE_BITS
    if micros >= _NEAR_MICROS:
        return _FAR_START + ((micros - _NEAR_MICROS) << _FAR_TIE_BITS)
    return -_FAR_START - ((-_NEAR_MICROS - micros) << _FAR_TIE_BITS)


def tie_span(base: int) -> int:
    """How many ``seq`` values one microsecond has, from the ``seq_base`` ``base``."""
    if -_FAR_START <= base < _FAR_START:
        return 1 << TIE_BITS
    return 1 << _FAR_TIE_BITS


_CURSOR = struct.Struct(">Bq")
_CURSOR_VERSION = 1


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(_CURSOR.pack(_CURSOR_VERSION, seq)).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The ``seq`` in an opaque cursor; ValueError when it is not one of ours."""
    if len(cursor) > 64:
        raise ValueError("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, seq = _CURSOR.unpack(raw)
    except (ValueError, struct.error):
        raise ValueError("invalid cursor") from None
    if version != _CURSOR_VERSION:
        raise ValueError("invalid cursor")
    return seq
