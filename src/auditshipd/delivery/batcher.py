"""Cutting what the reader hands out into batches of at most ``max_events`` events and
about ``max_bytes`` bytes, and the batch being built with the cursor marks it covers.

No Python loop per line: cumulative sizes and ``bisect`` find the cut points.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from typing import Any

from ..journal.cursor import SegmentCursor
from ..journal.segments import Chunk
from .lines import ProcessedChunk
from .quarantine import QuarantineRecord

__all__ = ["Part", "PendingBatch", "add_lines", "cut_chunk"]

# (redacted lines, their bytes, the cursor mark after them, quarantine records)
Part = tuple[list[bytes], int, SegmentCursor, list[QuarantineRecord]]

class PendingBatch:
    """Redacted lines on their way to one batch, the cursor marks and released segments
    they cover, and the quarantine records read with them."""

    __slots__ = ("batch", "payloads", "marks", "released", "done", "quarantine",
                 "integrity", "position", "nbytes", "sent_at")

    def __init__(self) -> None:
        self.batch: list[bytes] = []  # redacted events, encoded
        self.payloads: list[bytes] = []  # the same in the sink's format (not native)
        self.marks: dict[str, SegmentCursor] = {}
        self.released: list[str] = []
        self.done = False
        self.quarantine: list[QuarantineRecord] = []
        # The chain state after these lines (integrity on): committed with the marks.
        self.integrity: dict[str, Any] | None = None
        # Read through the shared pass: the pass's whole position after the last line
        # taken (shared by every sink, never modified), applied before ``marks``.
        self.position: dict[str, SegmentCursor] | None = None
        # Set when dispatched: the bytes of its lines (what it holds in memory until
        # committed) and the loop time it was handed to the outbox.
        self.nbytes = 0
        self.sent_at = 0.0

    def holds_anything(self) -> bool:
        return bool(self.batch or self.marks or self.released or self.quarantine
                    or self.position is not None)


def add_lines(job: PendingBatch, lines: list[bytes], encoder: Any, sealing: Any,
              payloads: list[bytes] | None = None) -> None:
    """Add redacted ``lines`` to ``job``. With a format (``encoder``), their encoding goes
    beside them in ``payloads`` (given when the shared pass encoded them already). With
    integrity on (``sealing``), what the sink is handed is sealed: the payloads with a
    format, else the lines."""
    if encoder is not None:
        if payloads is None:
            payloads = encoder.encode_lines(lines)
        job.payloads.extend(payloads if sealing is None else sealing.seal(payloads))
    elif sealing is not None:
        lines = sealing.seal(lines)
    job.batch.extend(lines)


def cut_chunk(chunk: Chunk, p: ProcessedChunk, quarantined: list[QuarantineRecord],
              max_events: int, max_bytes: int, used_events: int, used_bytes: int) -> Iterator[Part]:
    """Yield (lines, bytes, mark, quarantined) parts of the processed chunk ``p``, each
    filling at most the room left in the batch being built (``used_*`` for the first part;
    the caller dispatches a full batch before asking for the next part)."""
    lines = p.lines
    if used_events + len(lines) < max_events:
        total = sum(map(len, lines))
        if used_bytes + total < max_bytes:
            yield lines, total, chunk.mark, quarantined
            return
    # cum[k]: bytes of lines[:k]. A part takes lines while it holds fewer than the
    # events left and fewer bytes than the room left (its last line may cross it).
    cum = [0, *itertools.accumulate(map(len, lines))]
    begin = 0
    while True:
        end = min(len(lines), begin + max(0, max_events - used_events),
                  bisect.bisect_left(cum, cum[begin] + max_bytes - used_bytes, begin))
        size = cum[end] - cum[begin]
        if end == len(lines):
            yield lines[begin:end], size, chunk.mark, quarantined
            return
        # A part that fills the batch: its mark is just after its last line.
        mark = chunk.mark_at(p.end_offset(p.index[end - 1]))
        yield lines[begin:end], size, mark, quarantined
        quarantined = []
        begin, used_events, used_bytes = end, 0, 0
