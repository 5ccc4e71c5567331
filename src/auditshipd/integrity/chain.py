"""The per-stream hash chain: every delivered event gets a sequence number and a hash
linked to the previous event of the same stream.

A sealed event line is the redacted line with one member put first::

    {"integrity":{"seq":41,"hash":"<64 hex>","prev":"<64 hex>"},"id":...,...}

Its **event bytes** are the line exactly as delivered with that member (and the comma
after it) removed, i.e. ``b"{" + line[len(member) + 1:]``: the redacted bytes the
receiver gets. ``hash(n) = SHA-256("<n>\\n<prev>\\n" + event bytes)`` in hex; ``prev`` is
``hash(n-1)``, and for ``seq`` 1 the stream's genesis ``SHA-256("auditshipd stream
<name>")``, so two streams never share a chain. Hashing the bytes, not a re-encoded
form, keeps the cost to one SHA-256 per event. :class:`ChainState` is what the sink's
cursor commits: after a crash the same events are read again from the committed offset
and get the same numbers.

:meth:`StreamChain.seal` is the reference; :meth:`StreamChain.seal_lines` seals a batch's
lines through the C extension ``_chain_c`` (the same bytes, a fraction of the cost) when
it is built and not switched off (``AUDITSHIPD_CHAIN_C=0``), else through ``seal``.
"""

from __future__ import annotations

import hashlib
import os
import re
from binascii import hexlify as _hexlify
from typing import Any

import msgspec

__all__ = ["MAX_SEQ", "SEALED_RE", "ChainState", "StreamChain", "chain_c", "event_hash",
           "genesis", "unseal"]

try:
    from . import _chain_c as _built_c
except ImportError:  # built without a C compiler: seal() does every line
    _built_c = None


def chain_c() -> object | None:
    """The C extension that seals runs of lines, or None (not built, or switched off with
    ``AUDITSHIPD_CHAIN_C=0``)."""
    if os.environ.get("AUDITSHIPD_CHAIN_C", "1") == "0":
        return None
    return _built_c

# The integrity member of a sealed line, as the sealer writes it (and nothing else).
SEALED_RE = re.compile(
    rb'\{"integrity":\{"seq":([1-9][0-9]*),"hash":"([0-9a-f]{64})","prev":"([0-9a-f]{64})"\}'
    rb"(,|(?=\}))")


# The largest seq a stream reaches (at a billion events a second, in 146 years): a line
# claiming a larger one was not written by a sealer.
MAX_SEQ = 1 << 62
_SEQ_DIGITS = len(str(MAX_SEQ))


def genesis(stream: str) -> str:
    """The ``prev`` of a stream's first event."""
    return hashlib.sha256(f"auditshipd stream {stream}".encode()).hexdigest()


def event_hash(seq: int, prev: str, event_bytes: bytes) -> str:
    h = hashlib.sha256(b"%d\n%s\n" % (seq, prev.encode()))
    h.update(event_bytes)
    return h.hexdigest()


def unseal(line: bytes) -> tuple[int, str, str, bytes] | None:
    """``(seq, hash, prev, event bytes)`` of a sealed line, None if it is not one. A seq
    of more digits than ``MAX_SEQ`` has is returned as ``10 ** _SEQ_DIGITS`` (beyond
    ``MAX_SEQ`` all the same; ``int`` of thousands of digits is slow, then refused)."""
    m = SEALED_RE.match(line)
    if m is None:
        return None
    digits = m.group(1)
    seq = int(digits) if len(digits) <= _SEQ_DIGITS else 10 ** _SEQ_DIGITS
    return seq, m.group(2).decode(), m.group(3).decode(), b"{" + line[m.end():]


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


_sha256 = hashlib.sha256
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class StreamChain:
    """Seals encoded event lines (compact JSON objects) of one stream, in order."""

    __slots__ = ("state", "_seq", "_head", "_c")

    def __init__(self, state: ChainState, *, use_c: bool = True):
        if not state.head:
            state.head = genesis(state.stream)
        self.state = state
        # The hot copies; ``state`` is brought up to date by :meth:`sync`.
        self._seq = state.seq
        self._head = state.head.encode()
        self._c: Any = chain_c() if use_c else None

    def seal_lines(self, lines: list[bytes]) -> list[bytes]:
        """``[self.seal(line) for line in lines]``, in C where the extension can: it
        stops at a line it leaves to :meth:`seal` (one not starting with ``{`` or one
        holding ``"integrity"``), which seals it, and goes on after it."""
        c = self._c
        if c is None or self._seq >= 1 << 62:
            return list(map(self.seal, lines))
        if type(lines) is not list:
            lines = list(lines)
        out: list[bytes] = []
        i, n = 0, len(lines)
        while True:
            i, self._seq, self._head = c.seal_run(lines, i, self._seq, self._head, out)
            if i >= n:
                return out
            out.append(self.seal(lines[i]))
            i += 1

    def seal(self, line: bytes) -> bytes:
        """``line`` with its ``integrity`` member first, the next seq taken. A member of
        that name the event brought along is removed (the name is reserved)."""
        if b'"integrity"' in line:
            line = _without_reserved(line)
        body = line[1:] if line[:1] == b"{" else line.lstrip()[1:]
        seq = self._seq + 1
        prev = self._head
        h = _sha256(b"%d\n%s\n{" % (seq, prev))
        h.update(body)
        digest = _hexlify(h.digest())
        self._seq, self._head = seq, digest
        return b'{"integrity":{"seq":%d,"hash":"%s","prev":"%s"}%s%s' % (
            seq, digest, prev, b"" if body[:1] == b"}" else b",", body)

    def sync(self) -> ChainState:
        """The state, with the position of the last sealed line."""
        self.state.seq, self.state.head = self._seq, self._head.decode()
        return self.state

    def snapshot(self) -> ChainState:
        return msgspec.structs.replace(self.sync())


def _without_reserved(line: bytes) -> bytes:
    try:
        event = _decode(line)
    except msgspec.DecodeError:  # not JSON (sinks only ever seal redacted events): as is
        return line
    if isinstance(event, dict) and "integrity" in event:
        del event["integrity"]
        return _encode(event)
    return line
