"""The per-stream hash chain: every delivered event gets a sequence number and a hash
linked to the previous event of the same stream.

``hash(n) = SHA-256("<n>\\n<prev>\\n" + canonical(event without "integrity"))`` in hex,
``prev`` being ``hash(n-1)``, and for the first event (``seq`` 1) the stream's genesis
``SHA-256("auditshipd stream <name>")``, so two streams never share a chain even when
their events are identical. The result is added to the event as
``"integrity": {"seq": n, "hash": ..., "prev": ...}`` (the first member, the rest of the
line unchanged). :class:`ChainState` is what the sink's cursor commits: after a crash
the same events are read again from the committed offset and get the same numbers.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from .canonical import canonical_event, canonical_line

__all__ = ["ChainState", "StreamChain", "event_hash", "genesis"]


def genesis(stream: str) -> str:
    """The ``prev`` of a stream's first event."""
    return hashlib.sha256(f"auditshipd stream {stream}".encode()).hexdigest()


def event_hash(seq: int, prev: str, canonical_bytes: bytes) -> str:
    h = hashlib.sha256(f"{seq}\n{prev}\n".encode())
    h.update(canonical_bytes)
    return h.hexdigest()


def hash_of_event(event: dict[str, Any], seq: int, prev: str) -> str:
    return event_hash(seq, prev, canonical_event(event))


class ChainState(msgspec.Struct, kw_only=True):
    """A stream's chain and digest position; saved inside the sink's cursor file."""

    stream: str
    seq: int = 0  # the last sequence number given
    head: str = ""  # hash of event ``seq`` (the genesis while ``seq`` is 0)
    digest_seq: int = 0  # last_seq of the last digest
    digest_signature: str = ""  # signature of the last digest ("" before the first)
    digest_time: float = 0.0  # its time (Unix seconds)

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChainState:
        return msgspec.convert(data, cls)


_encode_integrity = msgspec.json.Encoder().encode


class StreamChain:
    """Seals encoded event lines of one stream, in delivery order."""

    __slots__ = ("state",)

    def __init__(self, state: ChainState):
        if not state.head:
            state.head = genesis(state.stream)
        self.state = state

    def seal(self, line: bytes) -> bytes:
        """``line`` (a JSON object) with its ``integrity`` member, the next seq taken.
        A member of that name the event brought along is replaced (it is reserved)."""
        st = self.state
        seq = st.seq + 1
        prev = st.head
        digest = event_hash(seq, prev, canonical_line(line))
        member = b'{"integrity":{"seq":%d,"hash":"%s","prev":"%s"}' % (
            seq, digest.encode(), prev.encode())
        if b'"integrity"' in line:
            line = _without_reserved(line)
        body = line.lstrip()[1:].lstrip()
        st.seq, st.head = seq, digest
        return member + (b"}" if body[:1] == b"}" else b"," + body)

    def snapshot(self) -> ChainState:
        return msgspec.structs.replace(self.state)


def _without_reserved(line: bytes) -> bytes:
    event = msgspec.json.decode(line)
    if isinstance(event, dict) and "integrity" in event:
        del event["integrity"]
        return _encode_integrity(event)
    return line
