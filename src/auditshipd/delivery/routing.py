"""Routing one chunk's lines to the joined sinks of one redaction policy.

A :class:`Policy` groups the sinks of the shared pass that share a redactor (so the
same redacted bytes): per chunk it redacts only the lines some member needs (all of
them when a member is unscoped), encodes once per format, and hands each member the
lines in its scope (organizations, ``start_at``), with the pass's position after them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..journal.cursor import SegmentCursor
from ..journal.segments import Chunk
from .lines import LineProcessor, ProcessedChunk

if TYPE_CHECKING:
    from .driver import SinkDriver

__all__ = ["Policy"]


class Policy:
    """The joined sinks sharing one redaction policy (redactor identity)."""

    __slots__ = ("processor", "members", "everything", "by_org", "unscoped")

    def __init__(self, processor: LineProcessor) -> None:
        self.processor = processor
        self.members: list[SinkDriver] = []
        self.unscoped: list[SinkDriver] = []  # members without organizations
        self.by_org: dict[Any, list[SinkDriver]] = {}
        self.everything = 0  # members without organizations: every line is needed

    def route(self, chunk: Chunk, raw: list[bytes], lines_of: dict[Any, list[int]],
              odd: list[int], times: list[Any] | None, before: dict[str, SegmentCursor],
              snap: dict[str, SegmentCursor], scoped: bool,
              evict: Callable[[SinkDriver, dict[str, SegmentCursor]], None]) -> None:
        """Hand this policy's members their lines of ``chunk`` (``lines_of``: raw line
        numbers per organization; ``odd``: lines that are not objects; ``scoped``: some
        joined sink has a scope). A member that cannot take them is evicted, with
        ``before`` (the pass's position before the chunk) to read from alone."""
        # The members with something in this chunk: the unscoped ones, and those of the
        # organizations present (all scoped ones when a line is not even an object).
        if odd or not scoped:
            targets = self.members
        else:
            seen: set[SinkDriver] = set()
            targets = []
            for org in lines_of:
                for m in self.by_org.get(org, ()):
                    if m not in seen:
                        seen.add(m)
                        targets.append(m)
            if not targets and not self.everything:
                return
            targets = self.unscoped + targets
        if self.everything or not scoped:
            pc = self.processor.process_lines(raw)
        else:
            wanted: set[int] = set(odd)
            for m in targets:
                for org in m.scope.organizations or ():
                    wanted.update(lines_of.get(org, ()))
            if not wanted:
                return
            # Every line wanted (streams covering every organization): the chunk's
            # fast path, without per-line bookkeeping.
            pc = self.processor.process_lines(
                raw, None if len(wanted) == len(raw) else sorted(wanted))
        if isinstance(pc.index, range):
            red: list[bytes | None] = pc.lines  # type: ignore[assignment]
        else:
            red = [None] * len(raw)
            for k, i in enumerate(pc.index):
                red[i] = pc.lines[k]
        at: dict[int, int] | None = None
        bad = {b[0]: b for b in pc.bad}
        encoded: dict[str, list[bytes]] = {}
        now = asyncio.get_running_loop().time()
        for m in targets:
            orgs = m.scope.organizations
            simple = m.simple and not odd and orgs is not None and len(orgs) == 1
            if simple:
                # The common case, a stream of one organization: its lines straight into
                # the batch being built when they fit.
                rows = lines_of.get(next(iter(orgs)))  # type: ignore[arg-type]
                if not rows:
                    continue
                lines = [red[i] for i in rows]
                if None not in lines:
                    taken = m.take_lines(lines, snap, now)  # type: ignore[arg-type]
                    if taken:
                        continue
                    if taken is False:
                        evict(m, before)
                        continue
            sub = pc
            if orgs is not None or m.scope.since is not None:
                if at is None:
                    at = {i: k for k, i in enumerate(pc.index)}
                if orgs is not None:
                    rows = [i for org in orgs for i in lines_of.get(org, ())]
                    if odd:
                        rows += odd
                    if len(orgs) > 1 or odd:
                        rows.sort()
                else:
                    rows = sorted([*pc.index, *bad])
                if m.scope.since is not None:
                    # Lines at or after the sink's time (bad lines: all, to be quarantined).
                    on_time = m.scope.on_time
                    rows = [i for i in rows if i in bad or on_time(times[i] if times else None)]
                if not rows:
                    continue
                # Raw line numbers picked from the whole chunk (``at`` maps them into pc).
                sub = _subset(pc, rows, at, bad)
            if not sub.lines and not sub.bad:
                continue
            payloads = None
            if m.encoder is not None:
                fmt = m.sc.format
                if fmt not in encoded:
                    encoded[fmt] = m.encoder.encode_lines(pc.lines)
                payloads = encoded[fmt] if sub is pc else _pick(encoded[fmt], sub, at or {})
            if not m.take(chunk, sub, payloads, snap):
                evict(m, before)


def _subset(pc: ProcessedChunk, rows: list[int], at: dict[int, int],
            bad: dict[int, tuple[int, str, bytes]]) -> ProcessedChunk:
    """The part of ``pc`` at raw indices ``rows``."""
    sub = ProcessedChunk(pc.raw)
    sub._ends = pc._ends
    lines, index = sub.lines, sub.index
    assert isinstance(index, list)
    for i in rows:
        k = at.get(i)
        if k is not None:
            lines.append(pc.lines[k])
            index.append(i)
        elif i in bad:
            sub.bad.append(bad[i])
    return sub


def _pick(payloads: list[bytes], sub: ProcessedChunk, at: dict[int, int]) -> list[bytes]:
    return [payloads[at[i]] for i in sub.index]
