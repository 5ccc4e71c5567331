"""The unit of delivery: a batch of redacted events handed to one sink."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["Batch"]

_encode = msgspec.json.Encoder().encode


class Batch:
    """Redacted events, in journal order, plus their JSON encodings.

    ``events`` are plain dicts (already redacted: a sink never sees internal ids).
    ``lines`` are the same events encoded once as compact JSON ``bytes``; sinks that
    send JSON should build their body from ``lines`` rather than encode again.
    A batch is immutable from the sink's point of view; ``batch[i:j]`` gives a
    sub-batch (used for splitting and partial resends).
    """

    __slots__ = ("events", "_lines")

    def __init__(self, events: Sequence[dict[str, Any]], lines: Sequence[bytes] | None = None):
        self.events = list(events)
        self._lines = list(lines) if lines is not None else None

    @property
    def lines(self) -> list[bytes]:
        if self._lines is None:
            self._lines = [_encode(e) for e in self.events]
        return self._lines

    @property
    def ids(self) -> list[str]:
        return [str(e.get("id", "")) for e in self.events]

    @property
    def first_id(self) -> str:
        return str(self.events[0].get("id", "")) if self.events else ""

    @property
    def last_id(self) -> str:
        return str(self.events[-1].get("id", "")) if self.events else ""

    def jsonl(self) -> bytes:
        """Newline-delimited JSON, one event per line, trailing newline included."""
        return b"\n".join(self.lines) + b"\n" if self.events else b""

    def json_array(self) -> bytes:
        """A JSON array of the events."""
        return b"[" + b",".join(self.lines) + b"]"

    def nbytes(self) -> int:
        return sum(len(line) for line in self.lines)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, item: slice) -> Batch:
        if not isinstance(item, slice):
            raise TypeError("Batch supports slicing only; use batch.events[i] for one event")
        lines = self._lines[item] if self._lines is not None else None
        return Batch(self.events[item], lines)

    def __repr__(self) -> str:
        return f"<Batch {len(self)} events {self.first_id}..{self.last_id}>"
