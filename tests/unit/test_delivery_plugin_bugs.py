"""A sink plugin's bugs never lose events nor stall its sink: nonsensical ``accepted`` /
``rejected`` counts, a ``CancelledError`` (or another BaseException) of its own making
escaping ``send``, a secret in an unexpected error's traceback; and a failure in the
delivery bookkeeping itself fails the driver (the daemon restarts it) instead of leaving
a batch neither committed nor failed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest
from tests.unit.test_delivery_driver import FakeClock, ScriptedSink, make_driver, run, stop, until

from auditshipd.config import RetryConfig
from auditshipd.delivery.batch import Batch
from auditshipd.delivery.retry import Backoff, DeliveryFailure, deliver
from auditshipd.errors import PermanentError, RetryableError


class Clock:
    """Monotonic time that moves only when the delivery loop sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay


class Scripted:
    """Answers each send with the next of ``answers`` (an exception is raised; None or
    nothing left: the part is accepted)."""

    def __init__(self, *answers: BaseException | None) -> None:
        self.answers = list(answers)
        self.sent: list[list[str]] = []
        self.accepted: list[str] = []

    async def send(self, batch: Batch) -> None:
        self.sent.append(batch.ids)
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        self.accepted += batch.ids


def _batch(n: int) -> Batch:
    return Batch([{"id": f"e{i}", "action": "user.invited"} for i in range(n)])


def _deliver(sink: Scripted, n: int, **kwargs: Any) -> tuple[int, list[DeliveryFailure], list[str]]:
    failures: list[DeliveryFailure] = []
    problems: list[str] = []
    clock = Clock()

    async def failed(f: DeliveryFailure) -> None:
        failures.append(f)

    delivered = asyncio.run(deliver(sink.send, _batch(n), Backoff(RetryConfig()),
                                    on_failed=failed, on_bad_count=problems.append,
                                    sleep=clock.sleep, clock=clock, **kwargs))
    return delivered, failures, problems


@pytest.mark.parametrize("accepted", [-1, 1.0, True, 6, "2", None])
def test_an_accepted_count_that_is_not_one_is_taken_as_none_accepted(accepted):
    """accepted=-1 once took only the batch's last event as left to send (four events
    counted delivered, never sent again); 1.0 raised a TypeError inside the loop. Any
    value but an int from 0 to the events sent: the whole part is sent again, and the
    plugin's bug is reported."""
    sink = Scripted(RetryableError("partial", accepted=accepted))
    delivered, failures, problems = _deliver(sink, 5)
    ids = [f"e{i}" for i in range(5)]
    assert sink.sent == [ids, ids] and sink.accepted == ids
    assert delivered == 5 and failures == []
    assert len(problems) == 1 and f"accepted={accepted!r}" in problems[0]
    assert "taken as none accepted" in problems[0]


@pytest.mark.parametrize("rejected", [-1, 0, 1.0, True, 9, "1"])
def test_a_rejected_count_that_is_not_one_fails_all_that_remain(rejected):
    """PermanentError(accepted=2, rejected=nonsense): the two accepted are delivered, the
    three others all dead-lettered (as without ``rejected``), none skipped."""
    sink = Scripted(PermanentError("bad", accepted=2, rejected=rejected))
    delivered, failures, problems = _deliver(sink, 5)
    assert delivered == 2 and sink.sent == [[f"e{i}" for i in range(5)]]
    assert [f.batch.ids for f in failures] == [["e2", "e3", "e4"]]
    assert len(problems) == 1 and f"rejected={rejected!r}" in problems[0]


def test_valid_counts_are_not_reported():
    sink = Scripted(RetryableError("partial", accepted=5))
    delivered, failures, problems = _deliver(sink, 5)
    assert (delivered, failures, problems, len(sink.sent)) == (5, [], [], 1)
    sink = Scripted(PermanentError("bad", accepted=0, rejected=5))
    delivered, failures, problems = _deliver(sink, 5)
    assert (delivered, len(failures[0].batch), problems) == (0, 5, [])


@pytest.mark.parametrize("exc", [asyncio.CancelledError(),
                                 type("PluginStop", (BaseException,), {})("stop")])
def test_a_base_exception_of_the_sinks_own_is_an_unexpected_error(exc):
    """A CancelledError from a plugin cancelling its own helper task (or another
    BaseException) escaping send() is not the caller's cancellation: the part is sent
    again in halves, as for any unexpected error, and all is delivered."""
    sink = Scripted(exc)
    unexpected: list[BaseException] = []
    delivered, failures, _ = _deliver(sink, 4, on_unexpected=lambda e, n: unexpected.append(e))
    assert delivered == 4 and failures == [] and sink.accepted == ["e0", "e1", "e2", "e3"]
    assert unexpected == [exc]


def test_a_single_event_raising_cancelled_error_is_dead_lettered():
    sink = Scripted(asyncio.CancelledError())
    delivered, failures, _ = _deliver(sink, 1)
    assert delivered == 0 and [f.batch.ids for f in failures] == [["e0"]]
    assert str(failures[0].error) == "the sink raised an unexpected CancelledError"


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()])
def test_keyboard_interrupt_system_exit_and_generator_exit_go_through(exc):
    with pytest.raises(type(exc)):
        _deliver(Scripted(exc), 3)


async def test_the_callers_own_cancellation_goes_through():
    """Cancelling the task that delivers (the shutdown deadline) cancels it: deliver
    does not take its own CancelledError for the sink's."""
    started = asyncio.Event()

    async def send(batch: Batch) -> None:
        started.set()
        await asyncio.Event().wait()

    async def failed(f: DeliveryFailure) -> None:
        raise AssertionError("nothing fails")

    task = asyncio.create_task(deliver(send, _batch(3), Backoff(RetryConfig()), on_failed=failed))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancelled_error_from_the_sink_does_not_stall_the_cursor(tmp_path):
    """The first send raises the CancelledError of a helper task the plugin cancelled:
    the cursor used to stay where it was for good (every later batch kept in memory).
    Now its events are sent again, the cursor covers everything and the status says
    what happened."""
    calls: list[list[str]] = []

    def script(batch: Batch) -> Any:
        calls.append(batch.ids)
        return asyncio.CancelledError() if len(calls) == 1 else None

    sink = ScriptedSink(script)
    driver = make_driver(tmp_path, sink, FakeClock(), 6, sink_table="""[sinks.batch]
max_events = 3""")
    task = await run(driver)
    await until(lambda: driver.committed.acked_events == 6)
    await stop(driver, task)
    assert sorted(sink.accepted) == [f"e{i}" for i in range(6)]
    assert driver.stats.last_error is not None
    assert "unexpected CancelledError" in driver.stats.last_error


async def test_a_secret_in_an_unexpected_errors_traceback_is_masked(tmp_path, caplog):
    """The traceback of an unexpected error is the sink author's bug report: logged as
    text with the sink's secrets masked (the dead letter always was)."""
    secret = "Zq9-very-private-value"

    def script(batch: Batch) -> Any:
        return RuntimeError(f"upstream said: credential {secret} not valid here")

    driver = make_driver(tmp_path, ScriptedSink(script), FakeClock(), 1)
    driver.secrets = [secret]
    driver.health.secrets = [secret]
    caplog.set_level(logging.WARNING)
    task = await run(driver)
    await until(lambda: driver.committed.acked_events == 1)
    await stop(driver, task)
    assert "sink fake raised an unexpected error for one event" in caplog.text
    assert "Traceback" in caplog.text and "credential *** not valid here" in caplog.text
    assert secret not in caplog.text
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_failure_in_the_delivery_bookkeeping_fails_the_driver(tmp_path, caplog):
    """Something of the core's failing once a batch was sent (here the latency
    observer): the batch is neither committed nor left in flight for ever unnoticed. The
    driver stops and fails with the error (the daemon restarts the sink), its saved
    cursor does not cover the batch: its events are read and sent again."""

    def broken_observer(seconds: float) -> None:
        raise RuntimeError("observer bug")

    sink = ScriptedSink(lambda b: None)
    driver = make_driver(tmp_path, sink, FakeClock(), 3)
    driver.observe_batch_latency = broken_observer
    task = await run(driver)
    with pytest.raises(RuntimeError, match="observer bug"):
        await asyncio.wait_for(task, 10)
    assert sink.accepted == ["e0", "e1", "e2"] and sink.closed
    saved = msgspec.json.decode((tmp_path / "state" / "cursors" / "fake.json").read_bytes())
    assert saved["acked_events"] == 0 and saved["segments"] == {}
    assert "delivering a batch failed" in caplog.text and "observer bug" in caplog.text


async def test_a_secret_in_a_failing_close_is_masked(tmp_path, caplog):
    secret = "Zq9-very-private-value"

    class ClosingBadly(ScriptedSink):
        async def close(self) -> None:
            raise RuntimeError(f"logout with {secret} refused")

    driver = make_driver(tmp_path, ClosingBadly(lambda b: None), FakeClock(), 1)
    driver.secrets = [secret]
    task = await run(driver)
    await until(lambda: driver.committed.acked_events == 1)
    await stop(driver, task)
    assert "closing sink fake failed: RuntimeError: logout with *** refused" in caplog.text
    assert secret not in caplog.text


async def test_a_generator_exit_from_the_sink_fails_the_driver_instead_of_stalling(tmp_path):
    """GeneratorExit goes through (a coroutine being closed must not carry on), but the
    batch it left neither done nor failed used to stall the cursor for good, silently.
    Now the driver fails (the daemon restarts the sink) without committing the batch."""
    calls: list[list[str]] = []

    def script(batch: Batch) -> Any:
        calls.append(batch.ids)
        return GeneratorExit() if len(calls) == 1 else None

    sink = ScriptedSink(script)
    driver = make_driver(tmp_path, sink, FakeClock(), 3)
    task = await run(driver)
    with pytest.raises(RuntimeError, match="GeneratorExit"):
        await asyncio.wait_for(task, 10)
    saved = msgspec.json.decode((tmp_path / "state" / "cursors" / "fake.json").read_bytes())
    assert saved["acked_events"] == 0
    assert driver.stats.last_error and "GeneratorExit" in driver.stats.last_error
