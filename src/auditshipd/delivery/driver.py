"""The per-sink consumer: journal -> decode -> validate -> redact -> batch -> deliver.

A :class:`SinkDriver` owns one sink, one :class:`~auditshipd.journal.reader.JournalReader` and one
durable cursor. Delivery rules (docs/architecture.md): a cursor advances only over the contiguous
prefix of batches that were acknowledged by the sink or written to its dead-letter file;
retries use exponential backoff with full jitter; permanent failures and exhausted
retries are dead-lettered; bad lines are quarantined. Memory is bounded by
``batch size x concurrency``: the reader stops while ``concurrency`` batches are in
flight, the journal is the buffer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ..config import Config, SinkConfig
from ..errors import PermanentError, SinkError
from ..formats.registry import encoder_for_sink
from ..journal.cursor import CursorState, CursorStore
from ..journal.reader import JournalReader
from ..journal.segments import Chunk, OversizeLine, Release
from ..journal.watch import ChangeSignal
from ..plugin import Sink
from ..scrub import scrub_secrets, sink_secrets
from ..timestamps import now_rfc3339, parse_time
from .batch import Batch
from .batcher import Part, PendingBatch, add_lines, cut_chunk
from .deadletters import DeadLetterFile, DeadLetterFull, letter_for
from .lines import LineProcessor
from .quarantine import QuarantineFile, QuarantineRecord
from .recovery import Health
from .retry import Backoff, DeliveryFailure, deliver
from .sealing import Sealing, sealing_for
from .status import SinkStats, StatusFile

__all__ = ["SinkDriver"]

log = logging.getLogger("auditshipd.pipeline")

# Longest wait between two attempts to save a cursor the state dir refused.
_PERSIST_MAX_BACKOFF = 5.0


class SinkDriver:
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
    ) -> None:
        self.config = config
        self.sc = sink_config
        self.name = sink_config.name
        self.sink = sink
        self.signal = signal
        self.redactor = redactor
        # Literal values (tokens, a URL's user, password and query values) masked in
        # every error this sink's messages, status and dead letters carry.
        self.secrets = sink_secrets(sink_config)
        self.hooks = hooks
        state_dir = config.state_dir
        self.cursors = CursorStore(state_dir)
        self.dlq = DeadLetterFile(state_dir, self.name, sink_config.dead_letter.max_bytes)
        self.quarantine_file = QuarantineFile(state_dir, self.name)
        self.backoff = Backoff(sink_config.retry)
        self.logger = logging.getLogger(f"auditshipd.sink.{self.name}")
        self.stats = SinkStats(sink=self.name, type=sink_config.type, started_at=now_rfc3339())
        self.status = StatusFile(state_dir, self.name, self.stats, self.logger)
        self.health = Health(self.name, self.stats, self.logger, self.secrets)
        self.committed = CursorState(sink=self.name)
        since = None
        if sink_config.start_at not in ("beginning", "end"):
            since = parse_time(sink_config.start_at)
        self.processor = LineProcessor(
            redactor, max_line_bytes=config.journal.max_line_bytes,
            organizations=sink_config.organizations, since=since)
        # The sink's format (None: native): runs on the redacted lines, before batching.
        self.encoder = encoder_for_sink(config, sink_config)
        self._inflight: collections.deque[PendingBatch] = collections.deque()
        self._slots = asyncio.Semaphore(sink_config.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._dirty = asyncio.Event()
        self._aborted = False
        self._reader: JournalReader | None = None
        self._started = False
        # Called once per delivered batch with its latency (s); the daemon passes one
        # that feeds its metrics (the hot path never imports the metrics server).
        self.observe_batch_latency = observe_batch_latency or _ignore
        # The clock of every wait (backoff, blocked dead letters): a test passes a fake one.
        self.sleep = sleep
        self.sealing: Sealing | None = None  # integrity = true: set by start()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Load the cursor and start the sink (retrying while the sink is unavailable)."""
        self.committed = await asyncio.to_thread(self.cursors.load, self.name)
        self.sealing = sealing_for(self.config, self.sc, self.committed.integrity)
        j = self.config.journal
        self._reader = JournalReader(
            j.paths, self.committed, start_at_end=self.sc.start_at == "end",
            max_line_bytes=j.max_line_bytes, block_bytes=j.read_block_bytes,
            signal=self.signal, poll_interval=j.poll_interval, rotate_wait=j.rotate_wait,
            follow_symlinks=j.follow_symlinks, name=self.name,
        )
        if self._reader.start_at_end:  # "end" = the journal's end now, before "started"
            await asyncio.to_thread(self._reader.prime)

    async def run(self) -> None:
        """Read, batch and dispatch until :meth:`stop`; then flush within the deadline."""
        assert self._reader is not None
        persister = asyncio.create_task(self._persist_loop(), name=f"persist-{self.name}")
        try:
            await self._start_sink()
            if not self._stopping.is_set():
                await self._read_loop()
        finally:
            await self._drain()
            persister.cancel()
            await asyncio.gather(persister, return_exceptions=True)
            try:
                await asyncio.to_thread(self._persist_now)
            except Exception as exc:  # the saved cursor is older: events are resent
                self.status.persist_failed(exc, 1)
            self._reader.close()
            try:
                await self.sink.close()
            except Exception as exc:
                self.logger.warning("closing sink %s failed: %s", self.name, exc)
            self.stats.state = "stopped"
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
        self._aborted = True
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()

    async def _start_sink(self) -> None:
        """Start the sink, retrying whatever the failure: a sink that cannot start (broker
        down, credentials refused) stays in error and falls behind; the others go on."""
        attempt = 0
        while not self._stopping.is_set():
            attempt += 1
            try:
                await self.sink.start()
                self._started = True
                self.health.started()
                return
            except Exception as exc:
                kind = "" if isinstance(exc, SinkError) else f"{type(exc).__name__}: "
                self._error(f"start failed (attempt {attempt}): {kind}{exc}")
                delay = self.backoff.delay(attempt, getattr(exc, "retry_after", None))
                if isinstance(exc, PermanentError):
                    delay = max(delay, self.sc.retry.max_backoff)
                await self._sleep(delay)
        # stopping before the sink ever started: nothing in flight

    # -- reading and batching ---------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reader = self._reader
        bcfg = self.sc.batch
        job = PendingBatch()
        nbytes = 0
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            if self.sealing is not None:
                timeout = self.sealing.wait(timeout)
            stop_wait = asyncio.ensure_future(self._stopping.wait())
            read = asyncio.ensure_future(reader.next_item(timeout if timeout is not None else 3600))
            done, _ = await asyncio.wait({stop_wait, read}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if read not in done:
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
                break
            item = read.result()
            if self.sealing and (fresh := await self.sealing.digest_if_due(job, self._dispatch)):
                job, nbytes, deadline = fresh, 0, None
            if item is None:
                if job.batch or job.marks or job.released or job.quarantine:
                    await self._dispatch(job)
                    job, nbytes, deadline = PendingBatch(), 0, None
                continue
            if isinstance(item, Release):
                job.released.append(item.segment)
                job.marks.pop(item.segment, None)
                if not job.batch:
                    await self._dispatch(job)
                    job, nbytes, deadline = PendingBatch(), 0, None
                continue
            if isinstance(item, OversizeLine):
                job.quarantine.append(self.quarantine_file.record(
                    item.segment, item.path, item.offset,
                    f"line of {item.length} bytes is over max_line_bytes"
                    f" ({self.config.journal.max_line_bytes})",
                    item.preview, item.length))
                job.marks[item.segment] = item.mark
                if deadline is None:
                    deadline = loop.time() + bcfg.timeout
                continue
            # A chunk: may hold more events than one batch.
            for lines, size, mark, quarantined in self._process(item, len(job.batch), nbytes):
                job.quarantine.extend(quarantined)
                add_lines(job, lines, self.encoder, self.sealing)
                nbytes += size
                job.marks[item.segment] = mark
                if deadline is None:
                    deadline = loop.time() + bcfg.timeout
                if len(job.batch) >= bcfg.max_events or nbytes >= bcfg.max_bytes:
                    await self._dispatch(job)
                    job, nbytes, deadline = PendingBatch(), 0, None
                if self.sealing and (fresh := await self.sealing.digest_if_due(job, self._dispatch)):
                    job, nbytes, deadline = fresh, 0, None
            if deadline is not None and loop.time() >= deadline:
                await self._dispatch(job)
                job, nbytes, deadline = PendingBatch(), 0, None
        # stopping: flush what was read (the shutdown deadline bounds it)
        if job.batch or job.marks or job.released or job.quarantine:
            await self._dispatch(job)

    def _process(self, chunk: Chunk, used_events: int, used_bytes: int) -> Iterator[Part]:
        """Yield (lines, bytes, mark, quarantined) parts of the chunk, each filling at most
        the room left in the batch being built (``used_*`` for the first part; the caller
        dispatches a full batch before asking for the next part)."""
        bcfg = self.sc.batch
        p = self.processor.process(chunk.data)
        self.stats.read_events += len(p.raw)
        self.stats.filtered += p.filtered
        quarantined = [
            self.quarantine_file.record(chunk.segment, chunk.path,
                                        chunk.start + p.line_start(i), reason, line)
            for i, reason, line in p.bad
        ]
        return cut_chunk(chunk, p, quarantined, bcfg.max_events, bcfg.max_bytes, used_events,
                         used_bytes)

    # -- delivery ---------------------------------------------------------------------

    async def _dispatch(self, job: PendingBatch) -> None:
        if self.sealing is not None:
            job.integrity = self.sealing.snapshot()
        await self._slots.acquire()
        if self._aborted:  # shutdown deadline passed: leave these events to the next start
            self._slots.release()
            return
        self._inflight.append(job)
        task = asyncio.create_task(self._deliver(job), name=f"deliver-{self.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, job: PendingBatch) -> None:
        try:
            if job.quarantine:
                await self._write_quarantine(job.quarantine)
                self.stats.quarantined += len(job.quarantine)
                if self.hooks is not None:
                    for q in job.quarantine:
                        self.hooks.event_quarantined(sink_name=self.name, segment=q.path,
                                                     offset=q.offset, reason=q.reason)
            if job.batch:
                batch = (Batch(lines=job.batch) if self.encoder is None
                         else Batch(lines=job.payloads, source=job.batch))
                await self._send_with_retry(batch)
            job.done = True
            self._advance()
        finally:
            self._slots.release()

    async def _send_with_retry(self, batch: Batch) -> None:
        started = time.monotonic()

        def retrying(attempt: int, delay: float, err: SinkError) -> None:
            self.stats.retries += 1
            self._error(f"attempt {attempt} failed, retrying in {delay:.2f}s: {err}")

        def unexpected(exc: BaseException, events: int) -> None:
            # The traceback once per culprit event: it is the sink author's bug report.
            if events == 1:
                self.logger.warning("sink %s raised an unexpected error for one event",
                                    self.name, exc_info=exc)

        async def failed(failure: DeliveryFailure) -> None:
            await self._dead_letter(failure.batch, failure.error, failure.attempts,
                                    failure.first_attempt_at)

        delivered = await deliver(
            self.sink.send, batch, self.backoff, on_failed=failed, on_delivered=self._success,
            on_retry=retrying, on_unexpected=unexpected,
            sleep=lambda delay: self._sleep(delay, interruptible=False))
        if delivered:
            self.observe_batch_latency(time.monotonic() - started)

    async def _dead_letter(self, batch: Batch, err: SinkError, attempts: int, first_at: str
                           ) -> None:
        letter = letter_for(
            batch, sink=self.name, error=scrub_secrets(str(err), self.secrets) or "",
            retryable=err.retryable, attempts=attempts, first_attempt_at=first_at,
            last_attempt_at=now_rfc3339(), dead_lettered_at=now_rfc3339(),
        )
        warned = 0.0
        while True:
            try:
                await asyncio.to_thread(self.dlq.append, letter)
                break
            except (DeadLetterFull, OSError) as exc:
                self.stats.state = "blocked"
                if time.monotonic() - warned > 30:
                    self.logger.error("sink %s is NOT advancing: %s", self.name, exc)
                    warned = time.monotonic()
                    self._error(str(exc))
                await self._sleep(2.0, interruptible=False)
        self.stats.dead_lettered += len(batch)
        self.logger.error("sink %s dead-lettered %d events after %d attempts: %s",
                          self.name, len(batch), attempts, letter.error)
        self._error(f"dead-lettered {len(batch)} events: {letter.error}")
        if self.hooks is not None:
            self.hooks.batch_dead_lettered(sink_name=self.name, batch=batch, error=letter.error)

    async def _write_quarantine(self, records: list[QuarantineRecord]) -> None:
        """Write quarantine records, retrying while the state dir cannot take them: the
        cursor must not move past lines that are neither delivered nor quarantined."""
        warned = 0.0
        while True:
            try:
                await asyncio.to_thread(self.quarantine_file.write, records)
                return
            except OSError as exc:
                self.stats.state = "blocked"
                if time.monotonic() - warned > 30:
                    warned = time.monotonic()
                    self._error(f"cannot write quarantine, sink NOT advancing: {exc}")
                await self._sleep(2.0, interruptible=False)

    def _success(self, n: int) -> None:
        self.health.success(n)

    def _error(self, message: str) -> None:
        self.health.error(message)

    async def _sleep(self, delay: float, interruptible: bool = True) -> None:
        """Wait ``delay`` seconds on the driver's clock (``sleep``); an interruptible wait
        ends early when the driver is stopped."""
        if not interruptible:
            await self.sleep(delay)
            return
        waits = [asyncio.ensure_future(self.sleep(delay)), asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # -- cursor -----------------------------------------------------------------------

    def _advance(self) -> None:
        """Move the committed cursor over the contiguous prefix of finished jobs."""
        moved = False
        while self._inflight and self._inflight[0].done:
            job = self._inflight.popleft()
            self.committed.segments.update(job.marks)
            for key in job.released:
                self.committed.segments.pop(key, None)
            self.committed.acked_events += len(job.batch) + len(job.quarantine)
            self.committed.integrity = job.integrity or self.committed.integrity
            moved = True
            if self.hooks is not None and job.batch:
                self.hooks.batch_delivered(sink_name=self.name, batch=Batch(lines=job.batch))
        if moved:
            self._dirty.set()

    async def _persist_loop(self) -> None:
        """Save the cursor when it moved, refresh the status file otherwise. A failure
        (ENOSPC, EIO, a read-only remount) never ends the loop: it is reported and the
        save is retried with backoff until it succeeds."""
        failures = 0
        while True:
            if failures:
                await asyncio.sleep(min(_PERSIST_MAX_BACKOFF, 0.5 * 2 ** min(failures - 1, 8)))
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._dirty.wait(), 1.0)
            try:
                if failures or self._dirty.is_set():
                    self._dirty.clear()
                    await asyncio.to_thread(self._persist_now)
                else:  # idle: refresh the status file so `auditshipd status` sees it alive
                    await asyncio.to_thread(self.status.write, False)
            except Exception as exc:
                failures += 1
                self.status.persist_failed(exc, failures)
            else:
                if failures:
                    self.status.persist_recovered(failures)
                failures = 0

    def _persist_now(self) -> None:
        snapshot = CursorState(sink=self.name, segments=dict(self.committed.segments),
                               acked_events=self.committed.acked_events,
                               integrity=self.committed.integrity)
        self.cursors.save(snapshot)
        self.status.write(False)

    async def _drain(self) -> None:
        """Wait for in-flight batches; :meth:`abort` (shutdown deadline) cancels them."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def lag_bytes(self) -> int:
        return self._reader.lag_bytes() if self._reader else 0


def _ignore(_seconds: float) -> None:
    """No observer: nothing is recorded."""
