"""The per-sink consumer: journal -> scope -> redact -> format -> batch -> deliver.

A :class:`SinkDriver` owns one sink and its durable cursor. It gets its lines one of two
ways (docs/architecture.md):

- **joined** to the :class:`~auditshipd.delivery.fanout.SharedPass`: the pass reads,
  scope-checks and redacts each line once for every sink and hands this one its lines
  (:meth:`SinkDriver.take`) with the pass's position after them; the driver keeps no
  reader, task or timer of its own while joined;
- **alone** (:mod:`auditshipd.delivery.solo`): its own reader from its own position,
  when there is no shared pass, or while it is behind the pass (it could not take lines,
  it starts behind); it rejoins as soon as it has read to the pass's position.

Delivery (batches in flight, retries, dead letters, the contiguous-prefix commit) is the
:class:`~auditshipd.delivery.outbox.Outbox`'s, the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import Config, JournalConfig, SinkConfig
from ..errors import PermanentError, SinkError
from ..formats.registry import encoder_for_sink
from ..journal.cursor import CursorState, SegmentCursor
from ..journal.held import KeptSegments, keep_only, take_held
from ..journal.reader import JournalReader
from ..journal.segments import Chunk, OversizeLine
from ..journal.watch import ChangeSignal
from ..plugin import Sink
from ..timestamps import parse_time
from .batcher import PendingBatch, add_lines, cut_chunk
from .commits import CommitSaver
from .fanout import SharedPass
from .lines import LineProcessor, ProcessedChunk
from .outbox import Outbox
from .positions import handed_unread, reader_position, starts_at_end
from .quarantine import QuarantineRecord
from .scope import SinkScope
from .sealing import sealing_for
from .solo import read_alone
from .waiting import wait_first

__all__ = ["SinkDriver"]

_SOLO_BLOCK = 256 * 1024


class SinkDriver(Outbox):
    def __init__(
        self,
        config: Config,
        sink_config: SinkConfig,
        sink: Sink,
        *,
        signal: ChangeSignal,
        redactor: Callable[[dict[str, Any]], dict[str, Any]],
        hooks: Any = None,
        observe_batch_latency: Callable[[float], None] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        shared: SharedPass | None = None,
        saver: CommitSaver | None = None,
        inherit: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        super().__init__(config, sink_config, sink, hooks=hooks,
                         observe_batch_latency=observe_batch_latency, sleep=sleep)
        self.signal = signal
        self.redactor = redactor
        since = None
        if sink_config.start_at not in ("beginning", "end"):
            since = parse_time(sink_config.start_at)
        self.scope = SinkScope(sink_config.organizations, since)
        self.processor = LineProcessor(
            redactor, max_line_bytes=config.journal.max_line_bytes,
            organizations=sink_config.organizations, since=since)
        # The sink's format (None: native): runs on the redacted lines, before batching.
        self.encoder = encoder_for_sink(config, sink_config)
        self.shared = shared
        self.saver = saver
        if saver is not None:
            self.cursors = saver.cursors  # one store: its saves never race each other
        self.job = PendingBatch()  # the batch being built
        self.nbytes = 0  # its size
        self.own_reader: JournalReader | None = None  # while it reads alone
        # Descriptors of segments that left the glob: the replaced driver's, its successor's
        self.inherit, self.leftover = dict(inherit or {}), {}
        self._joined = False
        self._left = asyncio.Event()  # set when the pass sends the driver off alone
        self._solo_from: dict[str, SegmentCursor] = {}
        self._pass_base = 0  # the pass's lines_read when it joined (for its stats)
        self._taken = 0  # lines the pass handed it since then
        self.flush_pending = False  # the pass holds a flush deadline for the batch being built
        # Lines go straight into the batch (no format to encode, no chain to seal).
        self.simple = self.encoder is None and not sink_config.integrity and since is None

    @property
    def stopping(self) -> asyncio.Event:
        return self._stopping

    @property
    def started(self) -> bool:
        """Whether the sink's ``start()`` succeeded (readiness: False while it cannot)."""
        return self._sink_ready.is_set()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Load the cursor; alone, or starting at the journal's end, open the reader. "end"
        is the end now, before the daemon reports it started (lines appended once it is
        reported are read, even when the sink takes longer to start), saved as a position."""
        self.committed = await asyncio.to_thread(self.cursors.load, self.name)
        self.sealing = sealing_for(self.config, self.sc, self.committed.integrity)
        at_end = starts_at_end(self.sc.start_at, self.committed)
        if self.shared is None:
            self.own_reader = self._new_reader(self.committed, self.signal, at_end,
                                            inherit=take_held({}, self.inherit))
        elif at_end:
            self.own_reader = self._new_reader(self.committed, self.shared.advanced, True)
        if self.own_reader is not None and self.own_reader.start_at_end:
            await asyncio.to_thread(self.own_reader.prime)
            self.committed.segments = reader_position(self.own_reader)
        self.committed.started = True

    def start_point(self) -> CursorState | str:
        """Where this sink starts: its cursor, or "end" / "beginning" without one."""
        if self.committed.segments:
            return self.committed
        return "end" if starts_at_end(self.sc.start_at, self.committed) else "beginning"

    def reader_block(self, j: JournalConfig) -> int:
        """The block size of this sink's own reader on ``j``. Beside a shared pass, a sink
        reads alone only to catch up: smaller blocks keep many such sinks (each holding
        a chunk while it waits for a slot) small."""
        return min(j.read_block_bytes, _SOLO_BLOCK) if self.shared is not None else j.read_block_bytes

    def _new_reader(self, state: CursorState, signal: ChangeSignal, end: bool, *,
                    inherit: dict[str, tuple[str, int]] | None = None) -> JournalReader:
        j = self.config.journal
        return JournalReader(j.paths, state, start_at_end=end, block_bytes=self.reader_block(j),
                             signal=signal, name=self.name, inherit=inherit, **j.reader_tunables())

    async def run(self) -> None:
        """Read (or take from the pass), batch and dispatch until :meth:`stop`; then
        flush within the deadline."""
        saver = self.saver or CommitSaver(self.config.state_dir)
        saver.add(self)
        own = None if self.saver is not None else asyncio.create_task(saver.run())
        # Joined at once, while the sink starts: the pass does not read ahead of the
        # sinks of a fresh start (each would then catch up alone). Batches wait for the
        # start; a sink that cannot start leaves the pass when its queue is full.
        starting = asyncio.create_task(self._start_sink())
        try:
            await self._follow()
            self.raise_if_broken()  # a delivery's bookkeeping failed: crash, restart
        finally:
            # What it still needs of segments that left the glob, while the pass keeps
            # them for it, and what it was handed (all of it when it stopped before
            # reading): its successor (a reload, a restart) reads on from these.
            held = take_held(await self.shared.held_for(self) if self.shared else {}, self.inherit)
            # and those the pass lets go from now on, which it does not read: up to its
            # end here, then until its successor takes them
            offered = self.shared.kept.hand_over(self.name) if self.shared else KeptSegments()
            self._leave_pass()
            if not self._sink_ready.is_set():
                starting.cancel()
                for task in list(self._tasks):  # never sent: read again on the next start
                    task.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            if self.job.holds_anything() and self._sink_ready.is_set():
                self._send_current()  # flush what was read (the deadline bounds it)
            await self._drain(self.config.shutdown_timeout if sys.exc_info()[0] else None)
            if own is not None:
                own.cancel()
                await asyncio.gather(own, return_exceptions=True)
            saver.remove(self)
            try:
                await asyncio.to_thread(self.cursors.save, self.cursor_snapshot())
            except Exception as exc:  # the saved cursor is older: events are resent
                self.status.persist_failed(exc, 1)
            if self.own_reader is not None:  # stopped or crashed: a successor may read on
                held = take_held(await self.own_reader.aclose(hand_over=True), held)
            self.leftover = take_held(held, offered.take())
            try:
                await self.sink.close()
            except Exception as exc:
                self.logger.warning("closing sink %s failed: %s", self.name, self._masked(exc))
            self.stats.state = "stopped"
            self.sync_stats()
            try:
                await asyncio.to_thread(self.status.write, True)
            except Exception as exc:
                self.status.persist_failed(exc, 1)

    def stop(self) -> None:
        self._stopping.set()

    def abort(self) -> None:
        """The shutdown deadline passed: cancel in-flight deliveries and start no new
        one. Their events stay after the committed cursor and are read again on the next
        start; :meth:`run` still persists the cursor and closes the sink."""
        self._stopping.set()
        super().abort()

    async def until_ready(self) -> None:
        """Wait until the sink started (or the driver stops)."""
        if self._sink_ready.is_set():
            return
        await wait_first((self._sink_ready, self._stopping))

    async def _start_sink(self) -> None:
        """Start the sink, retrying whatever the failure: a sink that cannot start (broker
        down, credentials refused) stays in error and falls behind; the others go on."""
        attempt = 0
        while not self._stopping.is_set():
            attempt += 1
            try:
                await self.sink.start()
                self.health.started()
                self._sink_ready.set()
                return
            except Exception as exc:
                kind = "" if isinstance(exc, SinkError) else f"{type(exc).__name__}: "
                self._error(f"start failed (attempt {attempt}): {kind}{exc}")
                delay = self.backoff.delay(attempt, getattr(exc, "retry_after", None))
                if isinstance(exc, PermanentError):
                    delay = max(delay, self.sc.retry.max_backoff)
                await self._sleep(delay)
        # stopping before the sink ever started: nothing in flight

    async def _follow(self) -> None:
        shared = self.shared
        if shared is None:
            assert self.own_reader is not None
            await read_alone(self, self.own_reader, None, dict(self.committed.segments))
            return
        position = dict(self.committed.segments)
        primed = self.own_reader  # starting at the end: primed by start()
        while not self._stopping.is_set():
            if (primed is None and shared.relation(position) == "at" and shared.admits(self)
                    and not handed_unread(position, self.inherit, shared.kept.waiting(self.name))):
                self.join_pass()
            else:
                # Segments the pass holds that left the glob: read on from its descriptors
                # (deleted, no name reaches them), taken before the sink's start ends (it
                # may take a while), as are those it lets go meanwhile (read_alone).
                reader = primed or self._new_reader(
                    CursorState(segments=dict(position)), shared.advanced, False,
                    inherit=take_held(await shared.held_segments(position), self.inherit))
                primed = None
                self.own_reader = reader
                # Stopped or crashed, run() closes it: its successor may read on from
                # the segments it holds that left the glob.
                if not await read_alone(self, reader, shared, position):
                    return
                self.own_reader = None
                reader.close()
            await wait_first((self._left, self._stopping))
            self._left.clear()
            position = self._solo_from

    # -- joined to the shared pass ----------------------------------------------------

    def join_pass(self) -> None:
        assert self.shared is not None
        self._joined = True
        self._pass_base, self._taken = self.shared.lines_read, 0
        self.shared.join(self)
        keep_only(self.inherit, lambda _key: False)  # level with the pass: not needed
        self.shared.kept.forget(lambda name: name != self.name)

    def go_solo(self, position: dict[str, SegmentCursor]) -> None:
        """Called by the pass, which no longer hands this sink lines: read alone from
        ``position`` (the pass's position before the lines it could not take)."""
        self.sync_stats()
        self._joined = False
        self._solo_from = dict(position)
        self._left.set()

    def _leave_pass(self) -> None:
        if self._joined and self.shared is not None:
            self.sync_stats()
            self._joined = False
            self.shared.leave(self)

    def sync_stats(self) -> None:
        """Bring the stats up to date: the lines the pass read for this sink (in scope
        or not), the last success."""
        super().sync_stats()
        if self._joined and self.shared is not None:
            seen = self.shared.lines_read - self._pass_base
            self.stats.read_events += seen
            self.stats.filtered += max(0, seen - self._taken)
            self._pass_base, self._taken = self.shared.lines_read, 0

    def can_take(self, events: int = 0, nbytes: int = 0) -> bool:
        """Room for ``events`` more lines (``nbytes``) now. Lines that fit in the batch
        being built always do (it is bounded by the batch size); lines that fill it need
        a batch slot: at most one batch may wait for an in-flight slot. A sink retrying
        a failure takes nothing (it would only pile up)."""
        if self.health.failures or self._stopping.is_set():
            return False
        bcfg = self.sc.batch
        if len(self.job.batch) + events < bcfg.max_events and self.nbytes + nbytes < bcfg.max_bytes:
            return True
        return len(self._tasks) <= self.sc.concurrency

    async def room_for_pass(self) -> None:
        """Wait until at most one batch waits for an in-flight slot (or a failure is
        being retried, or the driver stops: the pass then lets it go)."""
        while (len(self._tasks) > self.sc.concurrency and not self.health.failures
               and not self._stopping.is_set()):
            self._room.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._room.wait(), 0.5)

    def take(self, chunk: Chunk, lines: ProcessedChunk, payloads: list[bytes] | None,
             position: dict[str, SegmentCursor]) -> bool:
        """Add this sink's ``lines`` of ``chunk`` (``payloads``: in its format), after
        which the pass is at ``position``; False (nothing taken) if it has no room."""
        if not self.can_take(len(lines.lines), sum(map(len, lines.lines))):
            return False
        self._taken += len(lines.lines) + len(lines.bad)
        bcfg = self.sc.batch
        quarantined = [self.quarantine_file.record(chunk.segment, chunk.path,
                                                   chunk.start + lines.line_start(i), reason,
                                                   line)
                       for i, reason, line in lines.bad]
        done = 0
        for part, size, mark, bad in cut_chunk(chunk, lines, quarantined, bcfg.max_events,
                                               bcfg.max_bytes, len(self.job.batch), self.nbytes):
            job = self.job
            job.quarantine.extend(bad)
            add_lines(job, part, self.encoder, self.sealing,
                      None if payloads is None else payloads[done:done + len(part)])
            done += len(part)
            self.nbytes += size
            if mark is chunk.mark:  # the chunk's last part: the pass's whole position
                job.position = position
                job.marks.clear()
            else:
                job.marks[chunk.segment] = mark
            if len(job.batch) >= bcfg.max_events or self.nbytes >= bcfg.max_bytes:
                self._send_current()
            if self.sealing is not None:  # digest_events: checked as lines are sealed
                self.digest_if_due()
        self._note_partial()
        return True

    def take_lines(self, lines: list[bytes], position: dict[str, SegmentCursor],
                   now: float) -> bool | None:
        """The common case of :meth:`take` (native format, no integrity, no bad line):
        ``lines`` go into the batch being built if they fit. None: they do not fit (the
        caller uses :meth:`take`); False: no room at all."""
        if self.health.failures or self._stopping.is_set():
            return False
        job = self.job
        size = sum(map(len, lines))
        bcfg = self.sc.batch
        if len(job.batch) + len(lines) >= bcfg.max_events or self.nbytes + size >= bcfg.max_bytes:
            return None
        job.batch += lines
        self.nbytes += size
        self._taken += len(lines)
        job.position = position
        if job.marks:
            job.marks.clear()
        if not self.flush_pending:
            self.flush_pending = True
            assert self.shared is not None
            self.shared.pending(self, now + bcfg.timeout)
        return True

    def take_oversize(self, item: OversizeLine, position: dict[str, SegmentCursor]) -> bool:
        if not self.can_take(1):
            return False
        self._taken += 1
        self.job.quarantine.append(self.oversize_record(item))
        self.job.position = position
        self.job.marks.clear()
        self._note_partial()
        return True

    def _note_partial(self) -> None:
        if (self.job.batch or self.job.quarantine) and self.shared is not None:
            loop = asyncio.get_running_loop()
            self.flush_pending = True
            self.shared.pending(self, loop.time() + self.sc.batch.timeout)

    def flush(self) -> bool:
        """The batch timeout passed (the pass keeps the clock): send the batch, unless
        a batch already waits for a slot (this one keeps filling meanwhile); False then."""
        if len(self._tasks) > self.sc.concurrency:
            return False
        if self.job.batch or self.job.quarantine:
            self._send_current()
        self.flush_pending = False
        return True

    def digest_if_due(self) -> None:
        """Integrity on: send the signed digest when it is due (the pass keeps the clock)."""
        if self.sealing is not None and self.sealing.due():
            if self.job.holds_anything():
                self._send_current()
            self._dispatch_nowait(self.sealing.digest())

    def _send_current(self) -> None:
        job = self.job
        self.renew()
        if self.shared is not None and self.flush_pending:
            self.flush_pending = False
            self.shared.flushed(self)
        self._dispatch_nowait(job)

    # -- alone (solo.py) --------------------------------------------------------------

    def renew(self) -> None:
        self.job, self.nbytes = PendingBatch(), 0

    async def dispatch(self, job: PendingBatch) -> None:
        await self._dispatch(job)

    async def dispatch_current(self) -> None:
        job = self.job
        self.renew()
        await self._dispatch(job)

    def oversize_record(self, item: OversizeLine) -> QuarantineRecord:
        return self.quarantine_file.record(
            item.segment, item.path, item.offset,
            item.reason or f"line of {item.length} bytes is over max_line_bytes"
            f" ({self.config.journal.max_line_bytes})", item.preview, item.length)

    def lag_bytes(self) -> int:
        if self.own_reader is not None:
            return self.own_reader.lag_bytes()
        return self.shared.lag_bytes() if self.shared is not None and self._joined else 0
