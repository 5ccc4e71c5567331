"""Comparing journal positions (segment key -> cursor): where a sink stands against the
shared pass, whether a sink still needs a segment, a position's offsets as a key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..journal.cursor import CursorState, SegmentCursor

if TYPE_CHECKING:
    from ..journal.reader import JournalReader
    from .batcher import PendingBatch
    from .driver import SinkDriver

__all__ = ["handed_unread", "job_reads", "needs_segment", "offsets", "reader_owes", "reader_position",
           "relation", "starts_at_end"]


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
    return driver.holds_segment(key) or job_reads(driver.job, key)  # or the batch being built


def job_reads(job: PendingBatch, key: str) -> bool:
    """Whether batch ``job`` holds lines of segment ``key`` or moves the cursor in it."""
    return (key in job.marks or key in job.released
            or (job.position is not None and key in job.position))


def reader_position(reader: JournalReader) -> dict[str, SegmentCursor]:
    """Where ``reader`` stands in each segment it reads (after ``prime``: the end)."""
    return {k: s.mark() for k, s in reader.segments.items()}


def starts_at_end(start_at: str, committed: CursorState) -> bool:
    """Whether a sink at ``start_at`` with cursor ``committed`` starts at the journal's
    end: only a fresh one. A sink that started once reads on from its cursor, even an
    empty one (every segment it was in was read and let go)."""
    c = committed
    return start_at == "end" and not (c.segments or c.acked_events or c.started)


def handed_unread(position: Mapping[str, SegmentCursor], *handed: Iterable[str]) -> bool:
    """Whether a segment among the ``handed`` keys (descriptors a sink's driver was
    handed by the one it replaces, or offered since) is outside the sink's ``position``:
    one it never read, which the pass let go and its position no longer names, so
    "level with the pass" does not tell it was read; the sink reads it alone first."""
    return any(key not in position for keys in handed for key in keys)


def reader_owes(reader: JournalReader, position: Mapping[str, SegmentCursor]) -> bool:
    """Whether ``reader`` still has to read a segment handed or offered to it that its
    ``position`` does not name (not adopted yet, or adopted out of the glob and not
    read to its end): joining the pass before would drop its lines."""
    return bool(reader.inherited) or bool(len(reader.offered)) or any(
        key not in position and not seg.in_glob and not seg.at_eof()
        for key, seg in reader.segments.items())
