"""The hot path: raw journal lines -> redacted compact JSON lines (or a quarantine reason).

Called once per chunk of complete lines, never per event through a hook. With a
redactor that offers ``redact_line`` (decode + redact + encode fused, mostly in C) each
line costs one call; otherwise it falls back to decode -> validate -> redact -> encode.
Organization scope and a ``start_at`` time are checked on a tiny typed decode of the
raw line, before redaction (the filter is the core's, never the sink's).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import DropEvent
from ..redaction.events import check_event
from .scope import SinkScope, unpadded

if TYPE_CHECKING:
    from ..redaction.redactor import Redactor

__all__ = ["LineProcessor", "ProcessedChunk", "decode_lines", "split_lines"]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
# msgspec raises UnicodeDecodeError for invalid UTF-8 inside a string and RecursionError
# for absurd nesting: both mean "not valid JSON" for us, never a crashed consumer.
_UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def split_lines(data: bytes) -> list[bytes]:
    """A chunk's lines (a chunk ends with a newline: no empty last element)."""
    raw = data.split(b"\n")
    raw.pop()
    return raw


class ProcessedChunk:
    """``lines``: redacted events; ``index[k]``: the raw line number ``lines[k]`` came
    from; ``bad``: (raw line number, reason, raw line); ``raw``: the chunk's lines."""

    __slots__ = ("lines", "index", "bad", "filtered", "raw", "_ends")

    def __init__(self, raw: list[bytes]):
        self.raw = raw
        self.lines: list[bytes] = []
        self.index: list[int] | range = []
        self.bad: list[tuple[int, str, bytes]] = []
        self.filtered = 0
        self._ends: list[int] | None = None

    def end_offset(self, raw_index: int) -> int:
        """Bytes from the chunk start to just after raw line ``raw_index``."""
        if self._ends is None:  # cumulative line lengths, computed in C (no genexpr)
            self._ends = list(itertools.accumulate(map(len, self.raw)))
        return self._ends[raw_index] + raw_index + 1

    def line_start(self, raw_index: int) -> int:
        """Bytes from the chunk start to the start of raw line ``raw_index``."""
        return self.end_offset(raw_index - 1) if raw_index else 0


class LineProcessor:
    """Turns raw journal lines into redacted lines. ``redactor`` is required: there is no
    way to ship through this class without one (:meth:`without_redaction` is for local
    inspection tools, which never hand lines to a sink)."""

    def __init__(self, redactor: Redactor, *, max_line_bytes: int,
                 organizations: Iterable[str] | None = None, since: float | None = None):
        if redactor is None or not callable(redactor):
            raise TypeError("LineProcessor needs a redactor: events are never shipped unredacted")
        self._init(redactor, max_line_bytes, organizations, since)

    @classmethod
    def without_redaction(cls, *, max_line_bytes: int) -> LineProcessor:
        """Decode and validate only, for tools that read the journal locally."""
        self = cls.__new__(cls)
        self._init(None, max_line_bytes, None, None)
        return self

    def _init(self, redactor: Redactor | None, max_line_bytes: int,
              organizations: Iterable[str] | None, since: float | None) -> None:
        self.max_line_bytes = max_line_bytes
        self.scope = SinkScope(organizations, since)
        self.redactor = redactor
        fast = getattr(redactor, "redact_line", None)
        self._one: Callable[[bytes], bytes] = fast if fast is not None else self._slow

    def _slow(self, line: bytes) -> bytes:
        obj = _decode(line)
        reason = check_event(obj)
        if reason is not None:
            raise DropEvent(reason)
        if self.redactor is not None:
            obj = self.redactor(obj)
        return _encode(obj)

    def process(self, data: bytes) -> ProcessedChunk:
        return self.process_lines(split_lines(data))

    def process_lines(self, raw: list[bytes], only: Iterable[int] | None = None
                      ) -> ProcessedChunk:
        """Process the chunk's ``raw`` lines; with ``only``, just the lines at those
        (ascending) indices, the others counting as out of scope."""
        out = ProcessedChunk(raw)
        one, limit = self._one, self.max_line_bytes
        scoped = not self.scope.everything
        admits = self.scope.admits_line
        if only is not None:
            return self._careful(out, only, None)
        if not scoped and raw and max(map(len, raw)) <= limit:
            # The common case, every line a good event: one comprehension, no per-line
            # bookkeeping. A bad line anywhere sends the chunk down the careful path.
            try:
                out.lines = [one(line) for line in raw]
                out.index = range(len(raw))
                return out
            except (*_UNDECODABLE, DropEvent):
                out.lines = []
        return self._careful(out, range(len(raw)), admits if scoped else None)

    def _careful(self, out: ProcessedChunk, indices: Iterable[int],
                 admits: Callable[[bytes], bool] | None) -> ProcessedChunk:
        one, limit, raw = self._one, self.max_line_bytes, out.raw
        lines, index = out.lines, out.index
        assert isinstance(index, list)
        for i in indices:
            line = raw[i]
            if len(line) > limit:
                out.bad.append((i, f"line of {len(line)} bytes is over max_line_bytes ({limit})",
                                line))
                continue
            if admits is not None and not admits(line):
                out.filtered += 1
                continue
            try:
                lines.append(one(line))
            except (*_UNDECODABLE, DropEvent) as exc:
                self._retry_or_reject(out, i, line, exc)
                continue
            index.append(i)
        return out

    def _retry_or_reject(self, out: ProcessedChunk, i: int, line: bytes, exc: Exception) -> None:
        stripped = unpadded(line)
        if not stripped:
            return  # an empty line (or \r, NUL padding, a BOM): nothing to ship
        if stripped != line:
            try:
                out.lines.append(self._one(stripped))
                out.index.append(i)
                return
            except (*_UNDECODABLE, DropEvent) as again:
                exc = again
        if isinstance(exc, DropEvent):
            reason = exc.reason
        elif isinstance(exc, msgspec.DecodeError):
            reason = f"invalid JSON: {exc}"
        else:
            reason = f"invalid JSON: {type(exc).__name__}: {exc}"
        if isinstance(exc, DropEvent) and not reason.startswith(("schema", "not a JSON")):
            reason = f"redaction: {reason}"
        out.bad.append((i, reason, line))


def decode_lines(data: bytes, start: int, max_line_bytes: int
                 ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str, bytes]]]:
    """Split a chunk of complete lines without redaction (for tools and tests):
    ([(offset, event)], [(offset, reason, line)])."""
    p = LineProcessor.without_redaction(max_line_bytes=max_line_bytes).process(data)
    good = [(start + p.line_start(i), _decode(line))
            for line, i in zip(p.lines, p.index, strict=True)]
    bad = [(start + p.line_start(i), reason, line) for i, reason, line in p.bad]
    return good, bad
