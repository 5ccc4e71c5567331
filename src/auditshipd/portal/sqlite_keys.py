"""The lookup keys of the SQLite event store: event id, actor and targets.

Each is stored as its real value in the ``events`` row (``id``, ``actor``, ``targets`` as a
JSON array) and found through ``events_keys``, a contentless FTS5 table holding, per event
(``rowid`` = ``seq``), one short term per key: a kind letter and a 32-bit hash of the value
(``i`` id, ``a`` actor, ``t`` target). FTS5 writes each transaction's terms as one new
segment and merges segments in the background of later writes, so indexing a key costs
about the same on a large store as on an empty one; a B-tree keyed by the values (what
version 3 had) dirties one page per event and key once the store outgrows the page cache.
A hash names a few candidates; every lookup compares the real value, so a collision
never changes an answer.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import msgspec

__all__ = [
    "KEYS_TABLE",
    "actor_match",
    "event_terms",
    "id_match",
    "row_terms",
    "target_match",
]

# detail=none: a term's entries are rowids only (no columns, no positions). The per-row
# sizes stay (columnsize=0 would save a small B-tree written in order): without them a
# contentless table cannot be scanned, so the database could not be dumped (`.dump`).
KEYS_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS events_keys USING"
    " fts5(terms, content='', detail=none, tokenize='ascii')"
)

_decode_targets = msgspec.json.Decoder(list[str]).decode


_crc32 = zlib.crc32


def _term(kind: str, value: str) -> str:
    return f"{kind}{_crc32(value.encode('utf-8', 'surrogatepass')):08x}"


def event_terms(event_id: str, actor: str, targets: Iterable[str]) -> str:
    """What ``events_keys`` holds for one event (an empty actor or target has no term)."""
    # Inlined (no call per term): this runs for every event the store indexes.
    terms = f"i{_crc32(event_id.encode('utf-8', 'surrogatepass')):08x}"
    if actor:
        terms += f" a{_crc32(actor.encode('utf-8', 'surrogatepass')):08x}"
    for target in targets:
        if target:
            terms += f" t{_crc32(target.encode('utf-8', 'surrogatepass')):08x}"
    return terms


def row_terms(event_id: str, actor: str, targets_json: str) -> str:
    """:func:`event_terms` of a stored row (``targets`` as the JSON array it is stored as):
    what deleting the row from ``events_keys`` must give back."""
    return event_terms(event_id, actor, _decode_targets(targets_json))


def id_match(event_id: str) -> str:
    """The FTS5 query of the candidates for an event id (compare ``events.id`` too)."""
    return f'"{_term("i", event_id)}"'


def actor_match(actor: str) -> str:
    """The FTS5 query of the candidates for an actor key (compare ``events.actor`` too)."""
    return f'"{_term("a", actor)}"'


def target_match(target: str) -> str:
    """The FTS5 query of the candidates for a target key (compare ``events.targets`` too)."""
    return f'"{_term("t", target)}"'
