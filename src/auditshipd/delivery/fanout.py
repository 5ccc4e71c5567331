"""The shared pass: one read, one scope decode and one redaction per journal line,
whatever the number of sinks.

A :class:`SharedPass` owns one :class:`~auditshipd.journal.reader.JournalReader` and the
position it has read to. Per chunk it finds each line's organization (and time) once,
redacts once per distinct redaction policy (sinks with the same policy share the bytes),
encodes once per policy and format, and hands each joined sink only the lines in its
scope together with the pass's position after them, which the sink's batches carry to
its own durable cursor.

A sink that cannot take lines now (its in-flight batches are full, it is retrying) or
starts behind the pass (``start_at``, an older cursor) reads alone from its own cursor
(:mod:`auditshipd.delivery.solo`), no further than the pass, and rejoins when it has
reached the pass's position. The pass never waits for a sink: memory stays bounded by
each sink's batch size x in-flight batches.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..journal.cursor import CursorState, SegmentCursor
from ..journal.reader import JournalReader
from ..journal.segments import Chunk, OversizeLine, Release
from ..journal.watch import ChangeSignal
from .lines import LineProcessor, ProcessedChunk, split_lines
from .scope import NOT_AN_OBJECT, line_scope

if TYPE_CHECKING:
    from .driver import SinkDriver

__all__ = ["SharedPass"]

log = logging.getLogger("auditshipd.pipeline")

# Final positions of released segments kept for sinks still draining them alone.
_RELEASED_KEEP = 64
# While the pass is busy with a backlog, partial batches of joined sinks are flushed at
# most this often (not every batch timeout): thousands of sinks each sending a few lines
# ten times a second would cost more than the lines themselves.
_BACKLOG_FLUSH = 1.0
# ... and all of them at once when the lines they hold pass this many bytes, so memory
# stays bounded however fast the pass goes.
_HELD_BYTES = 32 << 20
# The pass reads larger blocks than a lone reader: each joined sink is visited once per
# chunk that holds its lines, so with thousands of streams fewer, larger chunks cost less.
_PASS_BLOCK = 4 << 20


class _Policy:
    """The joined sinks sharing one redaction policy (redactor identity)."""

    __slots__ = ("processor", "members", "everything", "by_org", "unscoped")

    def __init__(self, processor: LineProcessor) -> None:
        self.processor = processor
        self.members: list[SinkDriver] = []
        self.unscoped: list[SinkDriver] = []  # members without organizations
        self.by_org: dict[Any, list[SinkDriver]] = {}
        self.everything = 0  # members without organizations: every line is needed


class SharedPass:
    """One journal, read once for every sink joined to it."""

    def __init__(self, config: Config, signal: ChangeSignal) -> None:
        self.config = config
        self.signal = signal
        # The position after every item handed out (live segments).
        self.position: dict[str, SegmentCursor] = {}
        # position plus the final positions of recently released segments: how far a
        # sink catching up may read (a reader's ``limit``).
        self.bounds: dict[str, SegmentCursor] = {}
        self._released: collections.OrderedDict[str, SegmentCursor] = collections.OrderedDict()
        # Notified after each item: wakes the sinks catching up alone.
        self.advanced = ChangeSignal()
        self.members: set[SinkDriver] = set()
        self._policies: dict[int, _Policy] = {}
        self._scoped = 0  # members with organizations or a start_at time
        self._partial: dict[SinkDriver, float] = {}  # member -> flush deadline
        self._sealed: set[SinkDriver] = set()  # members with integrity (digest timers)
        self.reader: JournalReader | None = None
        self.lines_read = 0
        self._last_flush = 0.0
        self._kick = asyncio.Event()  # a sink joined: look at the timeouts again
        self._behind = False  # the last read filled its block: more is waiting
        # The pass's reads have a thread of their own: with many sinks, the default
        # pool is busy with their writes, and every joined sink waits on the pass.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="shared-pass")

    # -- lifecycle --------------------------------------------------------------------

    def begin(self, starts: Iterable[CursorState | str]) -> None:
        """Start at the most common of the sinks' start points (a cursor, "beginning" or
        "end"): after a restart most sinks are where the others are and join at once."""
        counts: collections.Counter[Any] = collections.Counter()
        by_key: dict[Any, CursorState | str] = {}
        for start in starts:
            key = start if isinstance(start, str) else _offsets(start.segments)
            counts[key] += 1
            by_key.setdefault(key, start)
        start = by_key[counts.most_common(1)[0][0]] if counts else "beginning"
        state = start if isinstance(start, CursorState) else CursorState()
        j = self.config.journal
        self.reader = JournalReader(
            j.paths, state, start_at_end=start == "end", max_line_bytes=j.max_line_bytes,
            block_bytes=max(j.read_block_bytes, _PASS_BLOCK), signal=self.signal,
            poll_interval=j.poll_interval,
            rotate_wait=j.rotate_wait, follow_symlinks=j.follow_symlinks, name="shared pass",
            executor=self._executor)
        if isinstance(start, CursorState):
            self.position.update(start.segments)
        elif start == "end":
            self.reader.prime()
            self.position.update({k: s.mark() for k, s in self.reader.segments.items()})
        self.bounds.update(self.position)

    async def run(self) -> None:
        """Read and route until cancelled."""
        assert self.reader is not None
        loop = asyncio.get_running_loop()
        # A read is never cancelled (its chunk would be lost with the reader's offset
        # already past it): batch timeouts and joins wait beside it.
        read: asyncio.Future[Any] | None = None
        try:
            while True:
                if read is None:
                    read = asyncio.ensure_future(self.reader.next_item(None))
                self._kick.clear()
                kick = asyncio.ensure_future(self._kick.wait())
                await asyncio.wait({read, kick}, timeout=self._wait(loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
                kick.cancel()
                if not read.done():
                    self._flush_due(loop.time(), caught_up=not self._behind)
                    continue
                item, read = read.result(), None
                self._behind = not self._caught_up(item)
                if len(self.members) == 1 and not isinstance(item, Release):
                    # A sink alone in the pass holds no one back: the pass waits for its
                    # room rather than sending it off to read the same lines again alone.
                    await next(iter(self.members)).room_for_pass()
                if isinstance(item, Release):
                    self._release(item.segment)
                elif isinstance(item, OversizeLine):
                    before = dict(self.position)
                    self._set(item.segment, item.mark)
                    snap = dict(self.position)
                    for member in list(self.members):
                        if not member.take_oversize(item, snap):
                            self.leave(member)
                            member.go_solo(before)
                else:
                    self._route(item)
                self.advanced.notify()
                self._flush_due(loop.time(), caught_up=not self._behind)
        finally:
            if read is not None:
                read.cancel()
            self.reader.close()
            self._executor.shutdown(wait=False)

    def lag_bytes(self) -> int:
        return self.reader.lag_bytes() if self.reader is not None else 0

    # -- membership -------------------------------------------------------------------

    def join(self, member: SinkDriver) -> None:
        """``member`` takes its lines from the pass from now on (its position is the
        pass's)."""
        if member in self.members:
            return
        self.members.add(member)
        pol = self._policies.get(id(member.redactor))
        if pol is None:
            pol = self._policies[id(member.redactor)] = _Policy(LineProcessor(
                member.redactor, max_line_bytes=self.config.journal.max_line_bytes))
        pol.members.append(member)
        if member.scope.organizations is None:
            pol.everything += 1
            pol.unscoped.append(member)
        else:
            for org in member.scope.organizations:
                pol.by_org.setdefault(org, []).append(member)
        self._scoped += not member.scope.everything
        if member.sealing is not None:
            self._sealed.add(member)
        member.flush_pending = bool(member.job.batch or member.job.quarantine)
        if member.flush_pending:
            self._partial.setdefault(member, asyncio.get_running_loop().time()
                                     + member.sc.batch.timeout)
        self._kick.set()

    def leave(self, member: SinkDriver) -> None:
        if member not in self.members:
            return
        self.members.discard(member)
        self._partial.pop(member, None)
        member.flush_pending = False
        self._sealed.discard(member)
        pol = self._policies[id(member.redactor)]
        # A copy: the routing of the current chunk may be iterating over the old list.
        pol.members = [m for m in pol.members if m is not member]
        if member.scope.organizations is None:
            pol.everything -= 1
            pol.unscoped = [m for m in pol.unscoped if m is not member]
        else:
            for org in member.scope.organizations:
                pol.by_org[org] = [m for m in pol.by_org[org] if m is not member]
                if not pol.by_org[org]:
                    del pol.by_org[org]
        self._scoped -= not member.scope.everything
        if not pol.members:
            del self._policies[id(member.redactor)]

    def relation(self, position: dict[str, SegmentCursor]) -> str:
        """Where a sink that read to ``position`` stands: "at" the pass, "behind" it
        (it may read up to the pass's bounds), or "apart" (ahead on some segment: it
        reads freely until both meet)."""
        behind = False
        for key, cur in self.position.items():
            mine = position.get(key)
            offset = mine.offset if mine is not None else 0
            if offset > cur.offset:
                return "apart"
            behind = behind or offset < cur.offset
        for key, mine in position.items():
            if key in self.position or not mine.offset:
                continue
            final = self._released.get(key)
            if final is None or mine.offset > final.offset:
                return "apart"
            behind = behind or mine.offset < final.offset
        return "behind" if behind else "at"

    def commit_idle(self) -> list[SinkDriver]:
        """Commit the pass's position for joined sinks with nothing in flight or being
        built (nothing in scope lately): otherwise a restart would read again what they
        never needed. Returns the sinks whose cursor moved."""
        moved = []
        here = _offsets(self.position)
        for m in self.members:
            if m.inflight or m.job.holds_anything():
                continue
            if _offsets(m.committed.segments) != here:
                m.committed.segments = dict(self.position)
                m.dirty = True
                moved.append(m)
        return moved

    # -- routing ----------------------------------------------------------------------

    def _set(self, key: str, mark: SegmentCursor) -> None:
        self.position[key] = mark
        self.bounds[key] = mark

    def _release(self, key: str) -> None:
        final = self.position.pop(key, None)
        if final is not None:
            self._released[key] = final
            while len(self._released) > _RELEASED_KEEP:
                old, _ = self._released.popitem(last=False)
                self.bounds.pop(old, None)

    def _route(self, chunk: Chunk) -> None:
        raw = split_lines(chunk.data)
        self.lines_read += len(raw)
        before = dict(self.position)
        self._set(chunk.segment, chunk.mark)
        if not self.members or not raw:
            return  # (an empty chunk moves the position only: see commit_idle)
        snap = dict(self.position)
        slugs: list[Any] = []
        times: list[Any] = []
        if self._scoped:
            for line in raw:
                slug, t = line_scope(line)
                slugs.append(slug)
                times.append(t)
        lines_of: dict[Any, list[int]] = {}
        for i, slug in enumerate(slugs):
            lines_of.setdefault(slug, []).append(i)
        odd = lines_of.get(NOT_AN_OBJECT, [])
        for pol in list(self._policies.values()):
            self._route_policy(pol, chunk, raw, lines_of, odd, times, before, snap)

    def _route_policy(self, pol: _Policy, chunk: Chunk, raw: list[bytes],
                      lines_of: dict[Any, list[int]], odd: list[int], times: list[Any],
                      before: dict[str, SegmentCursor], snap: dict[str, SegmentCursor]) -> None:
        # The members with something in this chunk: the unscoped ones, and those of the
        # organizations present (all scoped ones when a line is not even an object).
        if odd or not self._scoped:
            targets = pol.members
        else:
            seen: set[SinkDriver] = set()
            targets = []
            for org in lines_of:
                for m in pol.by_org.get(org, ()):
                    if m not in seen:
                        seen.add(m)
                        targets.append(m)
            if not targets and not pol.everything:
                return
            targets = pol.unscoped + targets
        if pol.everything or not self._scoped:
            pc = pol.processor.process_lines(raw)
        else:
            wanted: set[int] = set(odd)
            for m in targets:
                for org in m.scope.organizations or ():
                    wanted.update(lines_of.get(org, ()))
            if not wanted:
                return
            pc = pol.processor.process_lines(raw, sorted(wanted))
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
                        self.leave(m)
                        m.go_solo(before)
                        continue
            sub = pc
            if orgs is not None or m.scope.since is not None:
                if at is None:
                    at = {i: k for k, i in enumerate(pc.index)}
                if orgs is not None:
                    rows = [i for org in orgs for i in lines_of.get(org, ())]
                    if odd:
                        rows += odd
                    if not rows:
                        continue
                    if len(orgs) > 1 or odd:
                        rows.sort()
                    sub = _subset(pc, rows, at, bad)
                if m.scope.since is not None:
                    sub = _on_time(sub, m.scope, times, at, bad)
            if not sub.lines and not sub.bad:
                continue
            payloads = None
            if m.encoder is not None:
                fmt = m.sc.format
                if fmt not in encoded:
                    encoded[fmt] = m.encoder.encode_lines(pc.lines)
                payloads = encoded[fmt] if sub is pc else _pick(encoded[fmt], sub, at or {})
            if not m.take(chunk, sub, payloads, snap):
                self.leave(m)
                m.go_solo(before)

    # -- batch timeouts and digests ----------------------------------------------------

    def _caught_up(self, item: Any) -> bool:
        """Whether the read that gave ``item`` reached the journal's end (a block not
        filled): partial batches then go out on their timeout."""
        assert self.reader is not None
        return not isinstance(item, Chunk) or len(item.data) < self.reader.block_bytes // 2

    def _wait(self, now: float) -> float | None:
        soonest = min(self._partial.values(), default=None)
        for m in self._sealed:
            assert m.sealing is not None
            due = now + m.sealing.wait(None)
            soonest = due if soonest is None else min(soonest, due)
        return None if soonest is None else max(0.0, soonest - now)

    def _flush_due(self, now: float, *, caught_up: bool) -> None:
        held = False
        if not caught_up and now - self._last_flush < _BACKLOG_FLUSH:
            held = sum(m.nbytes for m in self._partial) > _HELD_BYTES
            if not held:
                return
        self._last_flush = now
        for m in [m for m, due in self._partial.items() if held or due <= now]:
            if m.flush():
                self._partial.pop(m, None)
            else:  # its previous batches are still in flight: look again later
                self._partial[m] = now + m.sc.batch.timeout
        for m in list(self._sealed):
            m.digest_if_due()

    def pending(self, member: SinkDriver, deadline: float) -> None:
        """``member`` holds a partial batch that must go out by ``deadline``."""
        self._partial.setdefault(member, deadline)

    def flushed(self, member: SinkDriver) -> None:
        self._partial.pop(member, None)


def _offsets(segments: dict[str, SegmentCursor]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((k, c.offset) for k, c in segments.items() if c.offset))


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


def _on_time(pc: ProcessedChunk, scope: Any, times: list[Any], at: dict[int, int],
             bad: dict[int, tuple[int, str, bytes]]) -> ProcessedChunk:
    rows = [i for i in pc.index if scope.on_time(times[i] if times else None)]
    rows += [b[0] for b in pc.bad]
    rows.sort()
    return _subset(pc, rows, at, bad)


def _pick(payloads: list[bytes], sub: ProcessedChunk, at: dict[int, int]) -> list[bytes]:
    return [payloads[at[i]] for i in sub.index]
