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
reached the pass's position (a sink alone in the pass is waited for instead, as long as
it stays alone). Memory stays bounded by ``[journal] pass_memory_bytes``: the
lines handed to joined sinks and not committed yet (in the batches being built and in
flight), whatever the number of sinks; past it the pass sends the batches being built
and reads on once deliveries brought them under 3/4 of it, and sends a sink whose batch
has been in flight for :data:`_STALL` seconds to read alone rather than wait for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..config import Config, JournalConfig
from ..journal.cursor import CursorState, SegmentCursor
from ..journal.held import Held, KeptSegments
from ..journal.reader import JournalReader
from ..journal.segments import Chunk, OversizeLine, Release
from ..journal.watch import ChangeSignal
from .lines import LineProcessor, split_lines
from .positions import needs_segment, offsets, reader_position, relation
from .routing import Policy
from .scope import NOT_AN_OBJECT, chunk_scopes
from .waiting import wait_first

if TYPE_CHECKING:
    from .driver import SinkDriver

__all__ = ["SharedPass"]

log = logging.getLogger("auditshipd.pipeline")

# Final positions of released segments kept for sinks still draining them alone.
_RELEASED_KEEP = 64
# While the pass is busy with a backlog, partial batches of joined sinks are flushed at
# most this often (not every batch timeout): thousands of sinks each sending a few lines
# ten times a second would cost more than the lines themselves.
_BACKLOG_FLUSH = 5.0
# While the pass waits (under that bound, or for the room of a sink alone in it), a sink
# whose oldest batch has been in flight this long (a slow or stuck destination) is sent
# to read alone: the pass never waits long for one sink.
_STALL = 5.0
# The pass reads larger blocks than a lone reader: each joined sink is visited once per
# chunk that holds its lines, so with thousands of streams fewer, larger chunks cost less.
_PASS_BLOCK = 4 << 20


def pass_block(j: JournalConfig) -> int:
    return max(j.read_block_bytes, _PASS_BLOCK)


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
        self._policies: dict[int, Policy] = {}
        self._scoped = 0  # members with organizations or a start_at time
        self._timed = 0  # members with a start_at time
        self._partial: dict[SinkDriver, float] = {}  # member -> flush deadline
        self._sealed: set[SinkDriver] = set()  # members with integrity (digest timers)
        self.reader: JournalReader | None = None
        self.lines_read = 0
        self.failures = 0  # items whose handling raised (see _failed)
        self._last_flush = 0.0
        self._kick = asyncio.Event()  # a sink joined: look at the timeouts again
        self._freed = asyncio.Event()  # a joined sink committed a batch
        self.memory_bytes = config.journal.pass_memory_bytes
        self._behind = False  # the last read filled its block: more is waiting
        # The pass's reads have a thread of their own: with many sinks, the default
        # pool is busy with their writes, and every joined sink waits on the pass.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="shared-pass")
        self.kept = KeptSegments()  # released segments a sink may need to read again
        # every sink beside the pass, joined or not (the daemon's drivers)
        self.sharing: Callable[[], Iterable[SinkDriver]] = lambda: list(self.members)
        self._next_prune = 0.0

    # -- lifecycle --------------------------------------------------------------------

    def begin(self, starts: Iterable[CursorState | str]) -> None:
        """Start at the most common of the sinks' start points (a cursor, "beginning" or
        "end"): after a restart most sinks are where the others are and join at once."""
        counts: collections.Counter[Any] = collections.Counter()
        by_key: dict[Any, CursorState | str] = {}
        for start in starts:
            key = start if isinstance(start, str) else offsets(start.segments)
            counts[key] += 1
            by_key.setdefault(key, start)
        start = by_key[counts.most_common(1)[0][0]] if counts else "beginning"
        state = start if isinstance(start, CursorState) else CursorState()
        j = self.config.journal
        self.reader = JournalReader(
            j.paths, state, start_at_end=start == "end",
            block_bytes=pass_block(j), signal=self.signal,
            name="shared pass", executor=self._executor, **j.reader_tunables())
        # A segment the reader lets go (left the glob, read to its end): a duplicate is
        # kept until no sink needs it (pruned from the event loop); the readers of sinks
        # reading alone are offered one (kept.watch).
        self.reader.on_release = self.kept.keep
        if isinstance(start, CursorState):
            self.position.update(start.segments)
        elif start == "end":
            self.reader.prime()
            self.position.update(reader_position(self.reader))
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
                if self.kept and loop.time() >= self._next_prune:
                    self._next_prune = loop.time() + 1.0
                    self.kept.prune(self._needed)
                if read is None:
                    if self._held() > self.memory_bytes:
                        await self._relieve(loop)
                    read = asyncio.ensure_future(self.reader.next_item(None))
                self._kick.clear()
                await wait_first((self._kick,), {read}, self._wait(loop.time()))
                if not read.done():
                    self._flush_due(loop.time(), caught_up=not self._behind)
                    continue
                item, read = read.result(), None
                self._behind = not self._caught_up(item)
                if len(self.members) == 1 and not isinstance(item, Release):
                    await self._room_alone(loop)
                before = dict(self.position)
                try:
                    self._take(item)
                except Exception as exc:  # noqa: BLE001 - a bug must not stop every sink
                    self._failed(item, before, exc)
                self.advanced.notify()
                self._flush_due(loop.time(), caught_up=not self._behind)
        finally:
            if read is not None:
                read.cancel()
            await self.reader.aclose()  # once a read running in its thread is done
            self.kept.forget(lambda _name: False)
            self._executor.shutdown(wait=False)

    def _take(self, item: Any) -> None:
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

    def _failed(self, item: Any, before: dict[str, SegmentCursor], exc: Exception) -> None:
        """Handling ``item`` raised (a bug): every joined sink reads it alone from
        ``before`` (each with its own reader and redaction, where an error stays that
        sink's), and the pass goes on past it; the sinks rejoin when they meet it. A
        chunk some sinks already took lines of is sent to them again: at least once."""
        self.failures += 1
        if self.failures == 1 or self.failures % 1000 == 0:
            log.error("shared pass: handling %s failed (%d time(s) so far); its %d sink(s)"
                      " read it alone, the pass goes on", type(item).__name__, self.failures,
                      len(self.members), exc_info=exc)
        for member in list(self.members):
            self._evict(member, before)

    def processors(self) -> list[LineProcessor]:
        return [pol.processor for pol in self._policies.values()]

    def lag_bytes(self) -> int:
        return self.reader.lag_bytes() if self.reader is not None else 0

    async def held_segments(self, keys: Iterable[str]) -> Held:
        """Duplicates of the pass's descriptors of the segments among ``keys`` that left
        the glob, read or kept, taken between two reads (a read closes those it lets go):
        a sink leaving the pass behind them reads on from these (its reader owns them)."""
        keys = list(keys)
        if self.reader is None:
            return self.kept.add_to({}, keys)
        async with self.reader.reading:
            held = self.reader.held_out_of_glob(keys)
        return self.kept.add_to(held, keys)

    async def held_for(self, driver: SinkDriver) -> Held:
        """What a sink that stops (a reload, a crash) may still have to read of the
        segments that left the glob: its successor reads on from these."""
        keys = set(driver.committed.segments)
        keys.update(k for k in self.kept.segment_keys() if needs_segment(driver, k))
        return await self.held_segments(keys)

    def _needed(self, key: str) -> bool:
        return any(needs_segment(m, key) for m in self.sharing())

    def _held(self) -> int:
        """Bytes of lines handed to joined sinks and not committed yet."""
        return sum(m.nbytes + m.inflight_bytes for m in self.members)

    async def _relieve(self, loop: asyncio.AbstractEventLoop) -> None:
        """Over ``memory_bytes``: wait until deliveries bring what is held under 3/4
        of it, sending the batches being built when they hold more than the batches in
        flight (so that batches stay as large as the bound allows). A sink whose oldest
        batch has been in flight for :data:`_STALL` seconds meanwhile is sent to read
        alone (its lines leave the count): slow destinations never hold the pass."""
        next_look = 0.0
        while self.members:
            now = loop.time()
            building = sum(m.nbytes for m in self._partial)
            inflight = sum(m.inflight_bytes for m in self.members)
            if building + inflight <= self.memory_bytes * 3 // 4:
                return
            if building >= inflight and self._flush_all(now):
                continue
            if now >= next_look:
                next_look = now + 0.5
                slow = [m for m in self.members
                        if (t := m.oldest_sent_at()) is not None and now - t >= _STALL]
                here = dict(self.position)
                for m in slow:
                    self._evict(m, here)
                if slow:
                    continue
            self._freed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._freed.wait(), 0.5)
            await asyncio.sleep(0.02)  # let more deliveries end before counting again

    async def _room_alone(self, loop: asyncio.AbstractEventLoop) -> None:
        """A sink alone in the pass holds no one back: the pass waits for its room rather
        than sending it off to read the same lines again alone, but only while it stays
        alone (partial batches go out on their timeout meanwhile), and for at most
        :data:`_STALL` seconds of its oldest batch in flight: then it reads alone."""
        member = next(iter(self.members))
        room = asyncio.ensure_future(member.room_for_pass())
        try:
            while not room.done() and self.members == {member}:
                now, sent = loop.time(), member.oldest_sent_at()
                if sent is not None and now - sent >= _STALL:
                    self._evict(member, dict(self.position))  # from before this chunk
                    return
                self._flush_due(now, caught_up=not self._behind)
                self._kick.clear()  # set by a join
                due = [_STALL if sent is None else sent + _STALL - now, self._wait(now)]
                await wait_first((self._kick,), {room}, min(t for t in due if t is not None))
        finally:
            room.cancel()

    # -- membership -------------------------------------------------------------------

    def join(self, member: SinkDriver) -> None:
        """``member`` takes its lines from the pass from now on (its position is the
        pass's)."""
        if member in self.members:
            return
        self.members.add(member)
        pol = self._policies.get(id(member.redactor))
        if pol is None:
            pol = self._policies[id(member.redactor)] = Policy(LineProcessor(
                member.redactor, max_line_bytes=self.config.journal.max_line_bytes))
        pol.members.append(member)
        if member.scope.organizations is None:
            pol.everything += 1
            pol.unscoped.append(member)
        else:
            for org in member.scope.organizations:
                pol.by_org.setdefault(org, []).append(member)
        self._scoped += not member.scope.everything
        self._timed += member.scope.since is not None
        if member.sealing is not None:
            self._sealed.add(member)
        member.on_freed = self._freed.set
        member.flush_pending = bool(member.job.batch or member.job.quarantine)
        if member.flush_pending:
            self._partial.setdefault(member, asyncio.get_running_loop().time()
                                     + member.sc.batch.timeout)
        self._kick.set()

    def leave(self, member: SinkDriver) -> None:
        if member not in self.members:
            return
        self.members.discard(member)
        member.on_freed = _nothing
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
        self._timed -= member.scope.since is not None
        if not pol.members:
            del self._policies[id(member.redactor)]

    def admits(self, member: SinkDriver) -> bool:
        """Whether ``member`` may join: not while a batch of its has been in flight for
        :data:`_STALL` seconds (it was sent off for that; it reads alone, bounded by its
        own batches in flight, until its destination answers again)."""
        oldest = member.oldest_sent_at()
        return oldest is None or asyncio.get_running_loop().time() - oldest < _STALL

    def relation(self, position: dict[str, SegmentCursor]) -> str:
        """Where a sink that read to ``position`` stands: "at" the pass, "behind" or "apart"."""
        return relation(position, self.position, self._released)

    def commit_idle(self) -> list[SinkDriver]:
        """Commit the pass's position for joined sinks with nothing in flight or being
        built (nothing in scope lately): otherwise a restart would read again what they
        never needed. Returns the sinks whose cursor moved."""
        moved = []
        here = offsets(self.position)
        for m in self.members:
            if m.inflight or m.job.holds_anything():
                continue
            if offsets(m.committed.segments) != here:
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
        lines_of: dict[Any, list[int]] = {}
        times: list[Any] | None = None
        if self._scoped:
            lines_of, times = chunk_scopes(raw, self._timed > 0)
        odd = lines_of.get(NOT_AN_OBJECT, [])
        for pol in list(self._policies.values()):
            pol.route(chunk, raw, lines_of, odd, times, before, snap, bool(self._scoped),
                      self._evict)

    def _evict(self, member: SinkDriver, position: dict[str, SegmentCursor]) -> None:
        """``member`` cannot take lines now: it leaves and reads alone from ``position``."""
        self.leave(member)
        member.go_solo(position)

    # -- batch timeouts and digests ----------------------------------------------------

    def _caught_up(self, item: Any) -> bool:
        """Whether the read that gave ``item`` reached the journal's end (a block not
        filled): partial batches then go out on their timeout."""
        assert self.reader is not None
        return not isinstance(item, Chunk) or len(item.data) < self.reader.block_bytes // 2

    def _wait(self, now: float) -> float | None:
        soonest = min(self._partial.values(), default=None)
        if soonest is not None and self._behind:
            # Behind, partial batches go out every _BACKLOG_FLUSH only (_flush_due):
            # waking at their own timeouts, long past, would spin while a read runs.
            soonest = max(soonest, self._last_flush + _BACKLOG_FLUSH)
        dues = [now + m.sealing.wait(None) for m in self._sealed if m.sealing is not None]
        if self.kept:  # kept segments are pruned every second
            dues.append(self._next_prune)
        soonest = min(dues, default=soonest) if soonest is None else min([soonest, *dues])
        return None if soonest is None else max(0.0, soonest - now)

    def _flush_due(self, now: float, *, caught_up: bool) -> None:
        if not caught_up and now - self._last_flush < _BACKLOG_FLUSH:
            return
        self._last_flush = now
        self._flush([m for m, due in self._partial.items() if due <= now], now)

    def _flush_all(self, now: float) -> int:
        self._last_flush = now
        return self._flush(list(self._partial), now)

    def _flush(self, members: list[SinkDriver], now: float) -> int:
        """Send the batches being built of ``members`` that have a free slot; returns
        how many were sent."""
        sent = 0
        for m in members:
            if m.flush():
                self._partial.pop(m, None)
                sent += 1
            else:  # its previous batches are still in flight: look again later
                self._partial[m] = now + m.sc.batch.timeout
        for m in list(self._sealed):
            m.digest_if_due()
        return sent

    def pending(self, member: SinkDriver, deadline: float) -> None:
        """``member`` holds a partial batch that must go out by ``deadline``."""
        self._partial.setdefault(member, deadline)

    def flushed(self, member: SinkDriver) -> None:
        self._partial.pop(member, None)


def _nothing() -> None:
    """Not joined: nobody to tell."""
