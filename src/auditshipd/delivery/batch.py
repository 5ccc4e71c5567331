"""The unit of delivery: a batch of redacted events handed to one sink."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["Batch"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class Batch:
    """Redacted events, in journal order, as dicts and as compact JSON lines.

    The core builds a batch from the encoded lines it produced on the hot path
    (``Batch(lines=...)``); ``events`` are then decoded on first use only, so sinks
    that send the JSON as it is (file, http) never pay for dicts. ``Batch(events)``
    works the other way round (tests, replays). Either way nothing in a batch holds an
    internal id: redaction happened before. ``batch[i:j]`` gives a sub-batch (used for
    splitting and partial resends).

    A sink with a ``format`` (OCSF, ECS, CEF) gets ``lines`` in that format and
    ``source``, the redacted JSON lines they were encoded from: ``events`` (and so the
    ids, times and organizations sinks put in keys and headers) decode from ``source``.
    """

    __slots__ = ("_events", "_lines", "_source")

    def __init__(self, events: Sequence[dict[str, Any]] | None = None,
                 lines: Sequence[bytes] | None = None, *,
                 source: Sequence[bytes] | None = None):
        if events is None and lines is None:
            raise TypeError("Batch needs events or lines")
        self._events = list(events) if events is not None else None
        self._lines = list(lines) if lines is not None else None
        self._source = list(source) if source is not None else None

    @property
    def events(self) -> list[dict[str, Any]]:
        if self._events is None:
            src = self._source if self._source is not None else self._lines
            assert src is not None
            self._events = [_decode(line) for line in src]
        return self._events

    @property
    def lines(self) -> list[bytes]:
        if self._lines is None:
            assert self._events is not None
            self._lines = [_encode(e) for e in self._events]
        return self._lines

    @property
    def formatted(self) -> bool:
        """Whether ``lines`` are in a sink's format (encoded from ``source``)."""
        return self._source is not None

    @property
    def ids(self) -> list[str]:
        return [str(e.get("id", "")) for e in self.events]

    @property
    def first_id(self) -> str:
        return self._id_at(0)

    @property
    def last_id(self) -> str:
        return self._id_at(-1)

    def _id_at(self, index: int) -> str:
        if not len(self):
            return ""
        if self._events is not None:
            return str(self._events[index].get("id", ""))
        src = self._source if self._source is not None else self.lines
        return str(_decode(src[index]).get("id", ""))

    def jsonl(self) -> bytes:
        """Newline-delimited JSON, one event per line, trailing newline included."""
        return b"\n".join(self.lines) + b"\n" if len(self) else b""

    def json_array(self) -> bytes:
        """A JSON array of the events."""
        return b"[" + b",".join(self.lines) + b"]"

    def nbytes(self) -> int:
        return sum(len(line) for line in self.lines)

    def __len__(self) -> int:
        return len(self._lines) if self._lines is not None else len(self._events or ())

    def __getitem__(self, item: slice) -> Batch:
        if not isinstance(item, slice):
            raise TypeError("Batch supports slicing only; use batch.events[i] for one event")
        events = self._events[item] if self._events is not None else None
        lines = self._lines[item] if self._lines is not None else None
        source = self._source[item] if self._source is not None else None
        return Batch(events, lines, source=source)

    def __repr__(self) -> str:
        return f"<Batch {len(self)} events {self.first_id}..{self.last_id}>"
