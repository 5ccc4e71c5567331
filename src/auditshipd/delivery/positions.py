"""Comparing journal positions (segment key -> cursor): where a sink stands against the
shared pass, whether a sink still needs a segment, a position's offsets as a key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..journal.cursor import CursorState, SegmentCursor

if TYPE_CHECKING:
    from ..journal.reader import JournalReader
    from .driver import SinkDriver

__all__ = ["needs_segment", "offsets", "reader_position", "relation", "starts_at_end"]


def relation(position: Mapping[str, SegmentCursor], pass_position: Mapping[str, SegmentCursor],
             released: Mapping[str, SegmentCursor]) -> str:
    """Where a sink that read to ``position`` stands against a pass at ``pass_position``
    (``released``: final positions of the segments it let go recently): "at" the pass,
    "behind" it (it may read up to the pass's bounds), or "apart" (ahead on some
    segment: it reads freely until both meet)."""
    behind = False
    for key, cur in pass_position.items():
        mine = position.get(key)
        offset = mine.offset if mine is not None else 0
        if offset > cur.offset:
            return "apart"
        behind = behind or offset < cur.offset
    for key, mine in position.items():
        if key in pass_position or not mine.offset:
            continue
        final = released.get(key)
        if final is None or mine.offset > final.offset:
            return "apart"
        behind = behind or mine.offset < final.offset
    return "behind" if behind else "at"


def offsets(segments: Mapping[str, SegmentCursor]) -> tuple[tuple[str, int], ...]:
    """The non-zero offsets of ``segments``, sorted: equal for positions at the same place."""
    return tuple(sorted((k, c.offset) for k, c in segments.items() if c.offset))


def needs_segment(driver: SinkDriver, key: str) -> bool:
    """Whether segment ``key`` is in the position of a batch of ``driver`` not committed
    yet (in flight, or being built)."""
    job = driver.job  # the batch being built
    return driver.holds_segment(key) or (job.position is not None and key in job.position)


def reader_position(reader: JournalReader) -> dict[str, SegmentCursor]:
    """Where ``reader`` stands in each segment it reads (after ``prime``: the end)."""
    return {k: s.mark() for k, s in reader.segments.items()}


def starts_at_end(start_at: str, committed: CursorState) -> bool:
    """Whether a sink at ``start_at`` with cursor ``committed`` starts at the journal's
    end: only a fresh one. A sink that started once reads on from its cursor, even an
    empty one (every segment it was in was read and let go)."""
    c = committed
    return start_at == "end" and not (c.segments or c.acked_events or c.started)
