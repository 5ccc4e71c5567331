"""The delivery core as a unit: SinkDriver and Backoff with a scripted fake sink and a fake
clock (the driver's sleeps are recorded and return at once). The journal is a real file."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.helpers.blocked_read import block_reads

from auditshipd.config import RetryConfig, parse_config
from auditshipd.delivery.batch import Batch
from auditshipd.delivery.driver import SinkDriver
from auditshipd.delivery.retry import Backoff
from auditshipd.errors import PermanentError, RetryableError
from auditshipd.journal.watch import ChangeSignal
from auditshipd.journal.writer import AuditJournal
from auditshipd.redaction.redactor import DEFAULT_POLICY
from auditshipd.testing import wait_for_async


class FakeClock:
    """Sleeps return at once; the delays asked for are recorded."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        await asyncio.sleep(0)


class ScriptedSink:
    """``script(batch) -> None | Exception | "hang" | asyncio.Event``: what one send does
    (None: accept; an exception: raise it; an Event: wait for it, then accept)."""

    def __init__(self, script: Callable[[Batch], Any]) -> None:
        self.script = script
        self.accepted: list[str] = []
        self.closed = False

    async def start(self) -> None:
        pass

    async def send(self, batch: Batch) -> None:
        answer = self.script(batch)
        if answer == "hang":
            await asyncio.Event().wait()
        if isinstance(answer, asyncio.Event):
            await answer.wait()
            answer = None
        if isinstance(answer, BaseException):
            raise answer
        self.accepted += batch.ids

    async def close(self) -> None:
        self.closed = True


def make_driver(tmp_path: Path, sink: ScriptedSink, clock: FakeClock, n: int, *,
                sink_table: str = "") -> SinkDriver:
    journal = tmp_path / "audit.jsonl"
    with AuditJournal(journal) as j:
        for i in range(n):
            assert j.record("user.invited", id=f"e{i}", actor={"type": "user", "email": "a@b.test"})
    config = parse_config(f"""
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{tmp_path / 'state'}"
force_polling = true
poll_interval = 0.05

[[sinks]]
name = "fake"
type = "fake"
{sink_table}
""", str(tmp_path / "auditshipd.toml"))
    sc = config.sinks[0]
    return SinkDriver(config, sc, sink, signal=ChangeSignal(), redactor=DEFAULT_POLICY,
                      sleep=clock.sleep)


until = functools.partial(wait_for_async, timeout=10.0, interval=0.01)


async def run(driver: SinkDriver) -> asyncio.Task[None]:
    await driver.start()
    return asyncio.create_task(driver.run())


async def stop(driver: SinkDriver, task: asyncio.Task[None]) -> None:
    driver.stop()
    await asyncio.wait_for(task, 10)


async def test_cursor_commits_only_the_contiguous_prefix_with_concurrency_2(tmp_path):
    """Two batches in flight; the second one is acknowledged first: the cursor does not
    move until the first is acknowledged too, then covers both."""
    gates = {"e0": asyncio.Event(), "e1": asyncio.Event()}
    sink = ScriptedSink(lambda b: gates.get(b.first_id))
    driver = make_driver(tmp_path, sink, FakeClock(), 2, sink_table="""concurrency = 2
[sinks.batch]
max_events = 1""")
    task = await run(driver)
    await until(lambda: driver.inflight == 2)
    gates["e1"].set()
    await until(lambda: sink.accepted == ["e1"])
    # counted delivered: its job is done and the cursor had its chance to move
    await until(lambda: driver.stats.delivered == 1)
    assert driver.committed.acked_events == 0 and driver.committed.segments == {}
    gates["e0"].set()
    await until(lambda: driver.committed.acked_events == 2)
    size = (tmp_path / "audit.jsonl").stat().st_size
    assert [c.offset for c in driver.committed.segments.values()] == [size]
    await stop(driver, task)


async def test_accepted_prefix_and_rejected_events_split_the_batch(tmp_path):
    """accepted=2, rejected=1 on a batch of 5: two delivered, one dead-lettered, the last
    two sent again and delivered; the cursor covers all five."""
    calls: list[list[str]] = []

    def script(batch: Batch) -> Any:
        calls.append(batch.ids)
        return PermanentError("bad event", accepted=2, rejected=1) if len(calls) == 1 else None

    sink = ScriptedSink(script)
    driver = make_driver(tmp_path, sink, FakeClock(), 5)
    task = await run(driver)
    await until(lambda: driver.committed.acked_events == 5)
    await stop(driver, task)
    assert calls == [["e0", "e1", "e2", "e3", "e4"], ["e3", "e4"]]
    assert sink.accepted == ["e3", "e4"]  # e0, e1 were accepted by the failing call
    letters = driver.dlq.read()
    assert [e["id"] for letter in letters for e in letter.events] == ["e2"]
    assert driver.stats.delivered == 4 and driver.stats.dead_lettered == 1


async def test_dead_letter_storage_full_blocks_then_advances(tmp_path):
    """Permanent failure with dead-letter storage full: the sink is blocked and its cursor
    holds (nothing discarded); once there is room, the batch is written and it advances."""
    sink = ScriptedSink(lambda b: PermanentError("HTTP 400"))
    clock = FakeClock()
    driver = make_driver(tmp_path, sink, clock, 3, sink_table="""[sinks.dead_letter]
max_bytes = 10""")
    task = await run(driver)
    await until(lambda: driver.stats.state == "blocked")
    await until(lambda: len(clock.sleeps) >= 3)
    assert driver.committed.acked_events == 0 and driver.dlq.read() == []
    driver.dlq.max_bytes = 1 << 20
    await until(lambda: driver.committed.acked_events == 3)
    await stop(driver, task)
    assert [e["id"] for letter in driver.dlq.read() for e in letter.events] == ["e0", "e1", "e2"]


async def test_abort_at_the_shutdown_deadline_keeps_the_cursor_before_the_batch(tmp_path):
    """A sink that never answers: stop, then abort (the deadline passed): run() returns,
    the sink is closed, and the saved cursor does not cover the undelivered events."""
    sink = ScriptedSink(lambda b: "hang")
    driver = make_driver(tmp_path, sink, FakeClock(), 3)
    task = await run(driver)
    await until(lambda: driver.inflight == 1)
    driver.stop()
    await asyncio.sleep(0.05)
    assert not task.done()  # still flushing: the batch is in flight
    driver.abort()
    await asyncio.wait_for(task, 10)
    assert sink.closed and sink.accepted == []
    saved = msgspec.json.decode((tmp_path / "state" / "cursors" / "fake.json").read_bytes())
    assert saved["acked_events"] == 0 and saved["segments"] == {}


async def test_retry_after_is_waited_then_the_batch_is_delivered(tmp_path):
    """Two retryable failures with Retry-After: 7 s: the driver waits at least 7 s each
    time (on the fake clock), counts two retries, then delivers the batch."""
    answers = [RetryableError("HTTP 503", retry_after=7.0), RetryableError("HTTP 503", retry_after=7.0)]
    sink = ScriptedSink(lambda b: answers.pop(0) if answers else None)
    clock = FakeClock()
    driver = make_driver(tmp_path, sink, clock, 2)
    task = await run(driver)
    await until(lambda: driver.committed.acked_events == 2)
    await stop(driver, task)
    assert sink.accepted == ["e0", "e1"] and driver.stats.retries == 2
    assert [d for d in clock.sleeps if d >= 7.0][:2] == [d for d in clock.sleeps if d >= 7.0]
    assert len([d for d in clock.sleeps if d >= 7.0]) == 2


def test_backoff_is_full_jitter_under_a_doubling_cap():
    """Delays are uniform in [0, min(max_backoff, initial * 2**(n-1))]: the cap doubles
    per attempt and stops at max_backoff."""
    cfg = RetryConfig(initial_backoff=1.0, max_backoff=8.0)
    b = Backoff(cfg, random.Random(1))
    for attempt, cap in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0), (200, 8.0)):
        delays = [b.delay(attempt) for _ in range(300)]
        assert all(0 <= d <= cap for d in delays), attempt
        assert max(delays) > cap * 0.9  # full jitter reaches up to the cap


def test_backoff_honours_retry_after_within_bounds():
    """Retry-After raises the delay to at least its value, capped at max(max_backoff,
    300 s) so a hostile receiver cannot park the sink for a day."""
    b = Backoff(RetryConfig(initial_backoff=0.1, max_backoff=30.0), random.Random(2))
    assert all(b.delay(1, retry_after=12.0) >= 12.0 for _ in range(50))
    assert b.delay(1, retry_after=86400.0) == 300.0
    assert Backoff(RetryConfig(max_backoff=600.0)).delay(1, retry_after=86400.0) == 600.0


@pytest.mark.parametrize(("max_attempts", "max_elapsed", "attempts", "elapsed", "done"), [
    (0, 0.0, 10_000, 1e9, False),  # unlimited: the journal is the buffer
    (3, 0.0, 2, 0.0, False),
    (3, 0.0, 3, 0.0, True),
    (0, 60.0, 100, 59.0, False),
    (0, 60.0, 1, 60.0, True),
])
def test_backoff_exhausted(max_attempts, max_elapsed, attempts, elapsed, done):
    """Retries end at max_attempts or max_elapsed, whichever comes first; 0 = unlimited."""
    b = Backoff(RetryConfig(max_attempts=max_attempts, max_elapsed=max_elapsed))
    assert b.exhausted(attempts, elapsed) is done


async def test_a_plugin_hook_that_raises_never_stops_delivery(tmp_path, caplog):
    """batch_delivered and batch_dead_lettered hooks that raise are logged; batches are
    still counted done, dead letters written, and the cursor covers everything."""

    class RaisingHooks:
        def batch_delivered(self, **kwargs: Any) -> None:
            raise RuntimeError("delivered hook bug")

        def batch_dead_lettered(self, **kwargs: Any) -> None:
            raise RuntimeError("dead-letter hook bug")

        def event_quarantined(self, **kwargs: Any) -> None:
            raise RuntimeError("quarantine hook bug")

    calls: list[list[str]] = []

    def script(batch: Batch) -> Any:
        calls.append(batch.ids)
        return PermanentError("refused") if len(calls) == 1 else None

    sink = ScriptedSink(script)
    driver = make_driver(tmp_path, sink, FakeClock(), 6, sink_table="""[sinks.batch]
max_events = 2""")
    driver.hooks = RaisingHooks()
    task = await run(driver)
    await until(lambda: driver.committed.acked_events == 6)
    await stop(driver, task)
    assert driver.stats.dead_lettered == 2 and sink.accepted == ["e2", "e3", "e4", "e5"]
    assert "plugin hook batch_dead_lettered failed for sink fake" in caplog.text
    assert "plugin hook batch_delivered failed for sink fake" in caplog.text


async def test_stopping_closes_the_reader_once_a_read_in_progress_is_done(tmp_path):
    """A read runs on in its worker thread when the driver stops (a reload stopping the
    sink): the reader's descriptors are closed after it, not under it."""
    sink = ScriptedSink(lambda b: None)
    driver = make_driver(tmp_path, sink, FakeClock(), 1)
    task = await run(driver)
    await until(lambda: sink.accepted == ["e0"])
    reader = driver.own_reader
    assert reader is not None
    entered, go, seen = block_reads(reader)
    try:
        await until(entered.is_set)
        driver.stop()
        await until(lambda: reader._closed)
        assert not sink.closed
    finally:
        go.set()
    await asyncio.wait_for(task, 10)
    assert seen[0] == (tmp_path / "audit.jsonl").stat().st_ino
    assert reader.segments == {} and sink.closed
