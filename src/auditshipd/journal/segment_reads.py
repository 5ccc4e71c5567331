"""Reading one journal segment: whole lines in blocks, a line over the limit skipped to
its end, the segment's position and hashes moved along. :mod:`auditshipd.journal.reader`
decides which segments to read; this reads them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatch

from .cursor import HEAD_BYTES, TAIL_BYTES, SegmentCursor, digest
from .segments import (
    Chunk,
    Item,
    OversizeLine,
    _pread,
    _Segment,
    hash_before,
    line_end,
    room_under,
)

__all__ = ["TORN", "TORN_IN_GLOB_AFTER", "advance", "read_lines", "skip_oversize", "skip_torn_tail",
           "tail_abandoned", "written_after"]

log = logging.getLogger("auditshipd.tail")

TORN = "a torn last line: it never got its newline and the writer moved on"
# How long an unfinished last line in a rotated segment still in the glob is waited for.
TORN_IN_GLOB_AFTER = 3600.0


def read_lines(seg: _Segment, limit: Mapping[str, SegmentCursor] | None, block_bytes: int,
               max_line_bytes: int, name: str) -> Item | None:
    """The next whole lines of ``seg`` (a :class:`Chunk`), a line over ``max_line_bytes``
    skipped to its end (an :class:`OversizeLine`), or None: nothing complete yet, or the
    bound ``limit`` reached (see :func:`room_under`)."""
    if seg.skipping_from is not None:
        return skip_oversize(seg, block_bytes)
    want = block_bytes
    while True:
        room = room_under(limit, seg)
        if room <= 0:
            return None
        # Bounded: a read that stops at the bound ends on a line end (the bound is
        # one); "shorter than wanted" below then means "wait", never a partial line.
        data = _pread(seg.fd, min(want, room), seg.offset)
        if not data:
            return None
        if data[0] == 0:
            # A NUL-filled hole: a copytruncate writer kept writing at its old offset.
            stripped = data.lstrip(b"\x00")
            skipped = len(data) - len(stripped)
            log.warning("%s: skipping %d NUL bytes in %s at offset %d",
                        name, skipped, seg.path, seg.offset)
            advance(seg, seg.offset + skipped)
            continue
        nl = data.rfind(b"\n")
        if nl >= 0:
            break
        if len(data) < want:
            return None  # a partial last line: wait for its newline
        if want > max_line_bytes:
            seg.skipping_from = seg.skip_pos = seg.offset
            return skip_oversize(seg, block_bytes)
        want = max_line_bytes + 1
    start = seg.offset
    body = data if nl + 1 == len(data) else data[: nl + 1]
    n = min(TAIL_BYTES, start)
    prefix = _pread(seg.fd, n, start - n) if n else b""
    # Lines over the limit inside a block are reported by the pipeline; a single
    # line longer than the limit never reaches it (skipped above).
    advance(seg, start + nl + 1, body)
    return Chunk(seg.key, seg.path, start, body, seg.mark(), prefix)


def skip_oversize(seg: _Segment, block_bytes: int) -> Item | None:
    """The rest of the line over the limit ``seg`` is in, skipped: its
    :class:`OversizeLine`, or None while its end is not written yet."""
    start = seg.skipping_from
    assert start is not None
    end = line_end(seg, block_bytes)
    if end is None:
        return None  # the rest of the line is not written yet
    preview = _pread(seg.fd, 256, start)
    seg.skipping_from = None
    advance(seg, end)
    return OversizeLine(seg.key, seg.path, start, end - start - 1, preview, seg.mark())


def advance(seg: _Segment, offset: int, data: bytes | None = None) -> None:
    """Move ``seg`` to ``offset`` (``data``: the bytes just read up to it, when at hand),
    its head and tail hashes with it."""
    # Read first, then update: a read error must leave the segment as it was (the
    # caller's chunk is not handed out, so its lines are read again).
    head_len, head_hash = seg.head_len, seg.head_hash
    if head_len < HEAD_BYTES:
        head = _pread(seg.fd, HEAD_BYTES, 0)
        head_len, head_hash = len(head), digest(head)
    if data is not None and len(data) >= TAIL_BYTES:
        tail_hash = digest(data[-TAIL_BYTES:])
    else:
        tail_hash = hash_before(seg.fd, offset)
    seg.offset = offset
    seg.head_len, seg.head_hash, seg.tail_hash = head_len, head_hash, tail_hash


def tail_abandoned(seg: _Segment, now_ns: int, idle_after: float, rotate_wait: float,
                   moved_on: Callable[[], bool]) -> bool:
    """Whether the unfinished last line of ``seg`` (read to where it can be: no complete
    line left after its offset) will never be finished. Out of the glob (renamed away,
    deleted): once untouched for ``idle_after`` seconds and ``rotate_wait`` seconds after
    it left (a writer may still end the line through its old descriptor). In the glob:
    once untouched for :data:`TORN_IN_GLOB_AFTER` seconds while a file of its pattern was
    written after it (``moved_on()``): a writer that leaves half a line for that long in
    a rotated file it still writes to is not waited for."""
    if not seg.in_glob:
        return seg.unchanged_for(now_ns, idle_after) and now_ns - seg.left_ns > rotate_wait * 1e9
    return seg.unchanged_for(now_ns, max(idle_after, TORN_IN_GLOB_AFTER)) and moved_on()


def written_after(seg: _Segment, others: Iterable[tuple[str, int]], patterns: list[str]) -> bool:
    """Whether a file matched by a pattern (of ``patterns``) that matches ``seg`` was
    written after it (``others``: the (path, mtime in ns) of the segments known): the
    journal's writer moved on to it. A file of another pattern (another application's
    journal) says nothing of this one's writer."""
    mine = [p for p in patterns if fnmatch(seg.path, p)]
    return any(mtime > seg.mtime and path != seg.path and any(fnmatch(path, p) for p in mine)
               for path, mtime in others)


def skip_torn_tail(seg: _Segment, name: str) -> OversizeLine:
    """The unfinished last line of ``seg``, skipped to the segment's end: an
    :class:`OversizeLine` with the :data:`TORN` reason, for the quarantine, so that the
    cursor passes it and its bytes count as read, not pending."""
    start = seg.skipping_from if seg.skipping_from is not None else seg.offset
    end = seg.size()
    log.warning("%s: %s ends with %d bytes that never got their newline (a torn last line);"
                " quarantining them", name, seg.path, end - start)
    preview = _pread(seg.fd, 256, start)
    seg.skipping_from = None
    advance(seg, end)
    return OversizeLine(seg.key, seg.path, start, end - start, preview, seg.mark(), TORN)
