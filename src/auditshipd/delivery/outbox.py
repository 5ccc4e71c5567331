"""A sink's batches between "built" and "committed": dispatch, delivery with retries,
dead letters, quarantine, and the contiguous-prefix commit of the cursor.

:class:`Outbox` is the delivery half of a :class:`~auditshipd.delivery.driver.SinkDriver`,
the same whichever way the sink reads (joined to the shared pass or on its own). Rules
(docs/architecture.md): the committed cursor advances only over the contiguous prefix of
batches that were acknowledged by the sink or written to its dead-letter file; retries
use exponential backoff with full jitter; permanent failures and exhausted retries are
dead-lettered; bad lines are quarantined. At most ``concurrency`` batches are sent at
once; memory is bounded by batch size x in-flight batches.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import Config, SinkConfig
from ..errors import SinkError
from ..journal.cursor import CursorState, CursorStore
from ..plugin import Sink
from ..scrub import scrub_secrets, sink_secrets
from ..timestamps import now_rfc3339
from .batch import Batch
from .batcher import PendingBatch
from .deadletters import DeadLetterFile, DeadLetterFull, letter_for
from .positions import job_reads
from .quarantine import QuarantineFile, QuarantineRecord
from .recovery import Health
from .retry import (
    GOES_THROUGH,
    Backoff,
    DeliveryFailure,
    bad_count_reporter,
    being_cancelled,
    deliver,
    describe,
)
from .sealing import Sealing
from .status import SinkStats, StatusFile
from .waiting import wait_first

__all__ = ["Outbox"]


class Outbox:
    """Delivery state of one sink: in-flight batches, cursor, dead letters, status."""

    def __init__(
        self,
        config: Config,
        sink_config: SinkConfig,
        sink: Sink,
        *,
        hooks: Any = None,
        observe_batch_latency: Callable[[float], None] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.sc = sink_config
        self.name = sink_config.name
        self.sink = sink
        # Literal values (tokens, a URL's user, password and query values) masked in
        # every error this sink's messages, status and dead letters carry.
        self.secrets = sink_secrets(sink_config)
        self.hooks = hooks
        self._failed_hooks: set[str] = set()  # hooks whose traceback was logged once
        # What broke the delivery bookkeeping (a bug): the driver stops and fails with it.
        self.broken: BaseException | None = None
        state_dir = config.state_dir
        self.cursors = CursorStore(state_dir)
        self.dlq = DeadLetterFile(state_dir, self.name, sink_config.dead_letter.max_bytes)
        self.quarantine_file = QuarantineFile(state_dir, self.name)
        self.backoff = Backoff(sink_config.retry)
        self.logger = logging.getLogger(f"auditshipd.sink.{self.name}")
        # A nonsensical accepted/rejected count: logged once.
        self._bad_count = bad_count_reporter(self.logger, self.name, self.secrets)
        self.stats = SinkStats(sink=self.name, type=sink_config.type, started_at=now_rfc3339())
        self.status = StatusFile(state_dir, self.name, self.stats, self.logger)
        self.health = Health(self.name, self.stats, self.logger, self.secrets)
        self.committed = CursorState(sink=self.name)
        # Set when the committed cursor moved and is not saved yet (the saver clears it).
        self.dirty = False
        self._inflight: collections.deque[PendingBatch] = collections.deque()
        self._slots = asyncio.Semaphore(sink_config.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()  # set whenever a delivery task ends
        self._sink_ready = asyncio.Event()  # the sink started: batches may go out
        self._stopping = asyncio.Event()
        self._aborted = False
        # Called once per delivered batch with its latency (s); the daemon passes one
        # that feeds its metrics (the hot path never imports the metrics server).
        self.observe_batch_latency = observe_batch_latency or _ignore
        # The clock of every wait (backoff, blocked dead letters): a test passes a fake one.
        self.sleep = sleep
        self.sealing: Sealing | None = None  # integrity = true: set by start()
        self.on_commit: Callable[[], None] = _nothing
        # Bytes of the lines of the batches between dispatch and commit, and who to tell
        # when that went down (the shared pass keeps its sinks' total bounded).
        self.inflight_bytes = 0
        self.on_freed: Callable[[], None] = _nothing

    # -- dispatch ---------------------------------------------------------------------

    async def _dispatch(self, job: PendingBatch) -> None:
        """Send ``job`` once a slot is free (the caller waits: a reader of its own stops
        while ``concurrency`` batches are in flight)."""
        while len(self._tasks) >= self.sc.concurrency and not self._aborted:
            self._room.clear()
            await self._room.wait()
        self._dispatch_nowait(job)

    def _dispatch_nowait(self, job: PendingBatch) -> None:
        """Queue ``job`` behind the batches in flight without waiting (the shared pass
        never waits for a sink): its task takes a slot when one frees up, in order. The
        pass stops handing lines to a sink without a free slot, so this stays bounded."""
        if self.sealing is not None:
            job.integrity = self.sealing.snapshot()
        if self._aborted:  # shutdown deadline passed: leave these events to the next start
            return
        job.nbytes = sum(map(len, job.batch)) + sum(map(len, job.payloads))
        job.sent_at = asyncio.get_running_loop().time()
        self.inflight_bytes += job.nbytes
        self._inflight.append(job)
        task = asyncio.ensure_future(self._deliver_when_free(job))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._room.set()

    async def _deliver_when_free(self, job: PendingBatch) -> None:
        await self._sink_ready.wait()
        await self._slots.acquire()
        try:
            await self._deliver(job)
        except BaseException as exc:
            if being_cancelled() or isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise  # abort: the batch stays after the cursor, read again next start
            self._broke(exc)  # the batch is neither done nor failed: the driver restarts
            if isinstance(exc, GOES_THROUGH):
                raise  # a coroutine being closed (GeneratorExit) must not carry on
        finally:
            self._slots.release()

    async def _deliver(self, job: PendingBatch) -> None:
        if job.quarantine:
            await self._write_quarantine(job.quarantine)
            self.stats.quarantined += len(job.quarantine)
            for q in job.quarantine:
                self._notify("event_quarantined", segment=q.path, offset=q.offset,
                             reason=q.reason)
        if job.batch:
            batch = (Batch(lines=job.batch) if not job.payloads
                     else Batch(lines=job.payloads, source=job.batch))
            await self._send_with_retry(batch)
        job.done = True
        self._advance()

    def _broke(self, exc: BaseException) -> None:
        """Delivering a batch failed outside the sink (a bug in the bookkeeping): the
        batch can be counted neither done nor failed. Said loudly, and the driver stops
        and fails with ``exc`` (:meth:`raise_if_broken`): the daemon restarts the sink
        from its committed cursor, which does not cover the batch."""
        if self.broken is None:
            self.broken = exc
        self._stopping.set()
        self.logger.error("sink %s: delivering a batch failed, it is not committed; the sink"
                          " stops, to start again from its cursor:\n%s",
                          self.name, self._traceback(exc))
        self._error(f"delivering a batch failed: {describe(exc)}")

    def raise_if_broken(self) -> None:
        """Raise what broke the delivery bookkeeping, if anything did (an Exception: a
        GeneratorExit or the like is wrapped, so the driver's task fails as a crash)."""
        if isinstance(self.broken, Exception):
            raise self.broken
        if self.broken is not None:
            raise RuntimeError(f"delivering a batch failed: {self._masked(self.broken)}") \
                from self.broken

    def _masked(self, exc: BaseException) -> str:
        """``TYPE: message`` of ``exc``, the sink's secrets masked."""
        return scrub_secrets(describe(exc), self.secrets) or ""

    def _traceback(self, exc: BaseException) -> str:
        """``exc``'s traceback as text, the sink's secrets masked (a client library's
        message, a local shown in it, may hold them)."""
        text = "".join(traceback.format_exception(exc)).rstrip()
        return scrub_secrets(text, self.secrets) or ""

    async def _send_with_retry(self, batch: Batch) -> None:
        started = time.monotonic()

        def retrying(attempt: int, delay: float, err: SinkError) -> None:
            self.stats.retries += 1
            self._error(f"attempt {attempt} failed, retrying in {delay:.2f}s: {err}")

        whole = [True]

        def unexpected(exc: BaseException, events: int) -> None:
            if whole[0]:  # the status says so once per batch, not once per half
                whole[0] = False
                self._error(f"the sink raised an unexpected {describe(exc)}"
                            + ("; sending its events again in halves" if events > 1 else ""))
            # The traceback once per culprit event: it is the sink author's bug report.
            if events == 1:
                self.logger.warning("sink %s raised an unexpected error for one event:\n%s",
                                    self.name, self._traceback(exc))

        async def failed(failure: DeliveryFailure) -> None:
            await self._dead_letter(failure.batch, failure.error, failure.attempts,
                                    failure.first_attempt_at)

        delivered = await deliver(
            self.sink.send, batch, self.backoff, on_failed=failed, on_delivered=self._success,
            on_retry=retrying, on_unexpected=unexpected, on_bad_count=self._bad_count,
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
        await self._write_blocking(lambda: self.dlq.append(letter), (DeadLetterFull, OSError),
                                   str, log=True)
        self.stats.dead_lettered += len(batch)
        self.logger.error("sink %s dead-lettered %d events after %d attempts: %s",
                          self.name, len(batch), attempts, letter.error)
        self._error(f"dead-lettered {len(batch)} events: {letter.error}")
        self._notify("batch_dead_lettered", batch=batch, error=letter.error)

    async def _write_quarantine(self, records: list[QuarantineRecord]) -> None:
        """Write quarantine records, retrying while the state dir cannot take them: the
        cursor must not move past lines that are neither delivered nor quarantined."""
        await self._write_blocking(lambda: self.quarantine_file.write(records), (OSError,),
                                   lambda exc: f"cannot write quarantine, sink NOT advancing: {exc}")

    async def _write_blocking(self, write: Callable[[], None],
                              errors: tuple[type[BaseException], ...],
                              problem: Callable[[BaseException], str], *, log: bool = False
                              ) -> None:
        """Run ``write`` in a worker thread until it succeeds (a dead letter or quarantine
        record: nothing may be dropped), the sink ``blocked`` meanwhile. The problem is
        recorded as its last error every 30 s (``log``: and logged as an error), and again
        at once when a batch delivered meanwhile marked it resolved: it is not."""
        warned = 0.0
        while True:
            try:
                await asyncio.to_thread(write)
                return
            except errors as exc:
                if time.monotonic() - warned > 30:
                    if log:
                        self.logger.error("sink %s is NOT advancing: %s", self.name, exc)
                    warned = time.monotonic()
                    self._error(problem(exc))
                elif self.stats.state != "blocked":
                    self._error(problem(exc))
                self.stats.state = "blocked"
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
        sleeping = asyncio.ensure_future(self.sleep(delay))
        try:
            await wait_first((self._stopping,), {sleeping})
        finally:
            sleeping.cancel()

    def _implemented(self, hook: str) -> bool:
        """Whether a plugin implements ``hook`` (no batch is built for nobody). A hook
        relay without pluggy's ``get_hookimpls`` is always called."""
        if self.hooks is None:
            return False
        impls = getattr(getattr(self.hooks, hook, None), "get_hookimpls", None)
        return impls is None or bool(impls())

    def _notify(self, hook: str, **kwargs: Any) -> None:
        """Call a plugin hook; one that raises is logged, never allowed to stop delivery
        (a batch must still be counted done and the cursor move)."""
        if self.hooks is None:
            return
        try:
            getattr(self.hooks, hook)(sink_name=self.name, **kwargs)
        except Exception as exc:
            first = hook not in self._failed_hooks
            self._failed_hooks.add(hook)
            self.logger.error("plugin hook %s failed for sink %s (delivery goes on): %s: %s",
                              hook, self.name, type(exc).__name__, exc, exc_info=first)

    # -- cursor -----------------------------------------------------------------------

    def _advance(self) -> None:
        """Move the committed cursor over the contiguous prefix of finished jobs."""
        moved = False
        segments = self.committed.segments
        while self._inflight and self._inflight[0].done:
            job = self._inflight.popleft()
            self.inflight_bytes -= job.nbytes
            if job.position is not None:
                # The shared pass's whole position after the job's last line: segments
                # it released are gone from it.
                segments = self.committed.segments = dict(job.position)
            segments.update(job.marks)
            for key in job.released:
                segments.pop(key, None)
            self.committed.acked_events += len(job.batch) + len(job.quarantine)
            self.committed.integrity = job.integrity or self.committed.integrity
            moved = True
            if job.batch and self._implemented("batch_delivered"):
                self._notify("batch_delivered", batch=Batch(lines=job.batch))
        if moved:
            self.dirty = True
            self.on_commit()
            self.on_freed()

    def holds_segment(self, key: str) -> bool:
        """Whether this sink may still need to read segment ``key`` again (after a reload
        or a restart): its acknowledged cursor is in it, or a batch not acknowledged yet
        was read from it (alone: its marks and releases; through the shared pass: the
        pass's position). A segment first read alone after the last acknowledgement (a
        copytruncate copy) is named only by those batches."""
        return key in self.committed.segments or any(job_reads(job, key) for job in self._inflight)

    def cursor_snapshot(self) -> CursorState:
        """A copy of the committed cursor, safe to save from a worker thread."""
        return CursorState(sink=self.name, segments=dict(self.committed.segments),
                           acked_events=self.committed.acked_events,
                           integrity=self.committed.integrity,
                           started=self.committed.started)

    def sync_stats(self) -> None:
        """Bring the stats up to date before they are written or read."""
        self.health.sync()

    async def _drain(self, limit: float | None = None) -> None:
        """Wait for in-flight batches; :meth:`abort` (shutdown deadline) cancels them, as
        does ``limit`` seconds passing (a crashed driver's: its restart must not wait for
        a batch that retries for ever; what it cancels is read again)."""
        loop = asyncio.get_running_loop()
        timer = None if limit is None else loop.call_later(limit, self.abort)
        try:
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            if timer is not None:
                timer.cancel()

    def abort(self) -> None:
        """Cancel in-flight deliveries and start no new one."""
        self._aborted = True
        for task in list(self._tasks):
            task.cancel()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def oldest_sent_at(self) -> float | None:
        """Loop time the oldest batch not yet committed was dispatched (None: none)."""
        return self._inflight[0].sent_at if self._inflight else None


def _ignore(_seconds: float) -> None:
    """No observer: nothing is recorded."""


def _nothing() -> None:
    """No saver to wake."""
