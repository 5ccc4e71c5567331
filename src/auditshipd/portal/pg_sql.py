"""The SQL text of the PostgreSQL event store: the ``tsvector`` of an event (in its binary
form) and the ``tsquery`` of a keyword query (the tokens of :func:`~auditshipd.portal.query.tokenize`,
diacritics folded like FTS5's ``unicode61``), its page cursor (``occurred_at`` and
``ingest``, format version 2), literals, and the query of a page of events.

A token's lexeme is the token itself up to 2,030 bytes (UTF-8). A longer token, which a
lexeme (at most 2,047 bytes) cannot hold, is its first 2,030 bytes or fewer (whole
characters), ``#`` and 16 hex digits of a hash of the whole token: no token holds a
``#``, so that lexeme equals no shorter token's, and starts with every prefix of the
token up to 2,030 bytes. A query's token matches a stored one exactly as FTS5 matches it
(the same token, or its prefix for the last), but for a last token of more than 2,030
bytes, which matches that token whole only (never more than FTS5 finds)."""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import struct
import unicodedata
from collections.abc import Iterable
from itertools import chain, repeat
from typing import Any

from .event_rows import ACCESS_ACTIONS
from .query import EventFilter, tokenize

__all__ = [
    "PG_EPOCH", "decode_cursor", "encode_cursor", "pg_text", "search_vector", "select_events",
    "tsquery",
]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
# PostgreSQL's timestamps count microseconds from here (binary form).
PG_EPOCH = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)
# tsvector limits: positions stop at 16383, a lexeme has at most 2047 bytes: a token of
# more bytes than _WHOLE keeps that many or fewer, "#" and a 16-digit hash (module doc).
_MAX_POSITION = 16383
_WHOLE = 2030


# The letters FTS5 folds (Unicode case folding) that lower-casing leaves: final sigma,
# micro sign, long s, the Greek letter symbols.
_CASE_FOLDS = str.maketrans("\u03c2\u00b5\u017f\u03d0\u03d1\u03d5\u03d6\u03f0\u03f1\u03f5",
                            "\u03c3\u03bcs\u03b2\u03b8\u03c6\u03c0\u03ba\u03c1\u03b5")


def _fold(token: str) -> str:
    """A token without accents: decomposed, its combining marks left out, composed again
    (Hangul syllables stay syllables), case-folded where lower case is not enough."""
    if token.isascii():
        return token
    decomposed = unicodedata.normalize("NFD", token)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", bare).translate(_CASE_FOLDS)


def _cut(token: bytes) -> bytes:
    """The lexeme of a token of more than _WHOLE bytes (valid UTF-8)."""
    head = token[:_WHOLE].decode("utf-8", "ignore").encode()  # whole characters
    return head + b"#" + hashlib.blake2b(token, digest_size=8).hexdigest().encode()


def _lexemes(text: str) -> list[bytes]:
    """The lexemes of ``text``, in order: its folded tokens, those too long cut."""
    tokens = [f.encode() for f in (_fold(t) for t in tokenize(text)) if f]
    if tokens and max(map(len, tokens)) > _WHOLE:
        tokens = [_cut(t) if len(t) > _WHOLE else t for t in tokens]
    return tokens


# The ASCII tokenizer: letters lower-cased, digits kept, everything else a separator.
_ASCII_TOKENS = bytes(
    c + 32 if 65 <= c <= 90 else c if 48 <= c <= 57 or 97 <= c <= 122 else 32 for c in range(256)
)
# A tsvector's binary form: the number of lexemes, then per lexeme (each once) the lexeme,
# NUL, the number of its positions and the positions (ascending, at most 256, each at most
# 16383: what the server's text input keeps of longer lists). The lexemes go in the
# server's order (bytes, a prefix first), so it does not sort them again, and neither
# does the keyword index, which takes them in that order.
_COUNT = struct.Struct(">i").pack
_MAX_POSITIONS = 256
# One position's bytes as an entry starts them (NUL, count 1, position), for 1 to 16383.
_ONE_POSITION = [b"\x00\x00\x01" + p.to_bytes(2, "big") for p in range(1, _MAX_POSITION + 1)]


def _tokens(text: str) -> list[bytes]:
    if text.isascii():
        tokens = text.encode().translate(_ASCII_TOKENS).split()
        if tokens and max(map(len, tokens)) > _WHOLE:
            tokens = [_cut(t) if len(t) > _WHOLE else t for t in tokens]
        return tokens
    return _lexemes(text)


def _one_more(entry: bytes, size: int, one: bytes) -> bytes:
    """``entry`` (a lexeme of ``size`` bytes and its positions) with the position of
    ``one`` added."""
    count = entry[size + 1] << 8 | entry[size + 2]
    position = one[3:]
    if count >= _MAX_POSITIONS or entry[-2:] == position:
        return entry
    return entry[: size + 1] + (count + 1).to_bytes(2, "big") + entry[size + 3 :] + position


def search_vector(text: str) -> bytes:
    """The ``tsvector`` of an event's keyword text
    (:func:`~auditshipd.portal.event_rows.line_text`) in PostgreSQL's binary form: every
    token with its positions, lexemes in byte order, so the server stores it without
    parsing or sorting anything (the C tier, :mod:`~auditshipd.portal.pg_vectors`, writes
    the same bytes straight from the line)."""
    tokens = _tokens(text)
    ones: Iterable[bytes] = _ONE_POSITION
    if len(tokens) > _MAX_POSITION:  # the last position stands for all the rest
        ones = chain(_ONE_POSITION, repeat(_ONE_POSITION[-1]))
    entries: dict[bytes, bytes] = {}
    get = entries.get
    for token, one in zip(tokens, ones):  # noqa: B905 - positions outnumber tokens
        entry = get(token)
        if entry is None:
            entries[token] = token + one
        else:
            entries[token] = _one_more(entry, len(token), one)
    return _COUNT(len(entries)) + b"".join([entries[k] for k in sorted(entries)])


def tsquery(phrases: list[list[str]]) -> str:
    """The ``tsquery`` literal of a keyword query: each phrase's tokens adjacent, the last
    one a prefix (unless cut: a lexeme with a hash is matched whole), every phrase
    required. Tokens hold no quote or backslash: each lexeme is quoted as it is."""
    out = []
    for phrase in phrases:
        toks = [t for t in (_fold(t).encode() for t in phrase) if t]
        if not toks:
            continue
        *head, last = [(_cut(t) if len(t) > _WHOLE else t).decode() for t in toks]
        prefix = "" if len(toks[-1]) > _WHOLE else ":*"
        out.append(" <-> ".join([*(f"'{t}'" for t in head), f"'{last}'{prefix}"]))
    return " & ".join(f"({p})" for p in out)


_CURSOR = struct.Struct(">Bqq")
_CURSOR_VERSION = 2


def _micros(when: _dt.datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_cursor(when: _dt.datetime, ingest: int) -> str:
    raw = _CURSOR.pack(_CURSOR_VERSION, _micros(when), ingest)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[_dt.datetime, int]:
    """``(occurred_at, ingest)`` of a cursor; ValueError when it is not one of ours."""
    if len(cursor) > 64:
        raise ValueError("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, micros, ingest = _CURSOR.unpack(raw)
        when = _EPOCH + _dt.timedelta(microseconds=micros)
    except (ValueError, struct.error, OverflowError):
        raise ValueError("invalid cursor") from None
    if version != _CURSOR_VERSION:
        raise ValueError("invalid cursor")
    return when, ingest


def pg_text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: stored values and filters map it alike."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def select_events(
    f: EventFilter, phrases: list[list[str]], before: tuple[_dt.datetime, int] | None, columns: str
) -> tuple[str, list[Any]]:
    params: list[Any] = []
    conds: list[str] = []

    def arg(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if phrases:
        query = tsquery(phrases)
        if not query:
            conds.append("false")
        else:
            conds.append(f"search @@ {arg(query)}::tsquery")
    if f.target:
        conds.append(f"targets @> ARRAY[{arg(pg_text(f.target.strip().lower()))}::text]")
    if before is not None:
        conds.append(f"(occurred_at, ingest) < ({arg(before[0])}, {arg(before[1])})")
    if f.since is not None:
        conds.append(f"occurred_at >= {arg(f.since)}")
    if f.until is not None:
        conds.append(f"occurred_at < {arg(f.until)}")
    if len(f.actions) == 1:
        # Equality, not ``= ANY``: the planner can then walk the (action, time) index in
        # time order and stop at the page's end.
        conds.append(f"action = {arg(pg_text(f.actions[0]))}")
    elif f.actions:
        conds.append(f"action = ANY({arg([pg_text(a) for a in f.actions])}::text[])")
    if f.actor:
        conds.append(f"actor = {arg(pg_text(f.actor.strip().lower()))}")
    if f.organization is not None:
        conds.append(f"organization_slug = {arg(pg_text(f.organization))}")
    if f.hides(ACCESS_ACTIONS):
        conds.append(f"action <> ALL({arg(sorted(ACCESS_ACTIONS))}::text[])")
    sql = f"SELECT {columns} FROM events"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    return sql, params
