"""The one delivery loop (auditshipd.delivery.retry.deliver) with a scripted fake sink and a fake
clock: an unexpected exception sets aside only the events that cause it, partial
acceptance and rejection are honoured, attempts are bounded by attempt_timeout."""

from __future__ import annotations

import asyncio

import pytest

from auditshipd.config import RetryConfig
from auditshipd.delivery.batch import Batch
from auditshipd.delivery.retry import Backoff, DeliveryFailure, deliver
from auditshipd.errors import PermanentError, RetryableError


class FakeClock:
    """Monotonic time that moves only when the delivery loop sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


class PoisonSink:
    """Accepts a batch unless it holds a poisoned event; then raises a non-SinkError."""

    def __init__(self, poisoned: set[str], exc: type[Exception] = OverflowError) -> None:
        self.poisoned = poisoned
        self.exc = exc
        self.delivered: list[str] = []
        self.calls = 0

    async def send(self, batch: Batch) -> None:
        self.calls += 1
        bad = [i for i in batch.ids if i in self.poisoned]
        if bad:
            raise self.exc(f"cannot encode {bad[0]}")
        self.delivered += batch.ids


def _batch(n: int) -> Batch:
    return Batch([{"id": f"e{i:04d}", "action": "user.invited"} for i in range(n)])


def _run(sink, batch: Batch, cfg: RetryConfig | None = None, clock: FakeClock | None = None):
    clock = clock or FakeClock()
    failures: list[DeliveryFailure] = []

    async def failed(f: DeliveryFailure) -> None:
        failures.append(f)

    delivered = asyncio.run(deliver(sink.send, batch, Backoff(cfg or RetryConfig()),
                                    on_failed=failed, sleep=clock.sleep, clock=clock))
    return delivered, failures


def test_one_poisoned_event_of_a_thousand_is_the_only_failure():
    """A sink raising OverflowError for one event of 1,000: 999 delivered in order, the
    culprit alone fails, with the exception as its reason; the cost stays logarithmic."""
    sink = PoisonSink({"e0417"})
    batch = _batch(1000)
    delivered, failures = _run(sink, batch)
    assert delivered == 999
    assert sink.delivered == [i for i in batch.ids if i != "e0417"]
    assert [f.batch.ids for f in failures] == [["e0417"]]
    assert isinstance(failures[0].error, PermanentError)
    assert "OverflowError" in str(failures[0].error) and "e0417" in str(failures[0].error)
    assert sink.calls <= 2 * 10 + 2  # two sends per halving level, not one per event


def test_several_culprits_fail_alone_and_in_batch_order():
    """Three poisoned events anywhere in the batch (first, middle, last): only they fail,
    in batch order; every other event is delivered exactly once."""
    sink = PoisonSink({"e0000", "e0050", "e0099"}, exc=KeyError)
    batch = _batch(100)
    delivered, failures = _run(sink, batch)
    assert delivered == 97
    assert [i for f in failures for i in f.batch.ids] == ["e0000", "e0050", "e0099"]
    assert sorted(sink.delivered) == sink.delivered
    assert len(set(sink.delivered)) == 97


def test_accepted_prefix_and_rejected_events_are_honoured():
    """accepted=3, rejected=2: the 3 are not resent, the 2 fail, the rest is resent."""
    answers: list[BaseException | None] = [PermanentError("bad", accepted=3, rejected=2), None]
    sent: list[list[str]] = []

    class Sink:
        async def send(self, batch: Batch) -> None:
            sent.append(batch.ids)
            answer = answers.pop(0)
            if answer is not None:
                raise answer

    batch = _batch(10)
    delivered, failures = _run(Sink(), batch)
    assert delivered == 8
    assert [f.batch.ids for f in failures] == [batch.ids[3:5]]
    assert sent == [batch.ids, batch.ids[5:]]


def test_attempt_timeout_bounds_each_attempt_then_retries_are_exhausted():
    """A sink that hangs: each attempt ends at attempt_timeout (retryable), retries back
    off on the clock, and after max_attempts the batch fails with the timeout reason."""

    class HangingSink:
        async def send(self, batch: Batch) -> None:
            await asyncio.Event().wait()

    cfg = RetryConfig(attempt_timeout=0.05, max_attempts=3, initial_backoff=1.0)
    clock = FakeClock()
    delivered, failures = _run(HangingSink(), _batch(4), cfg, clock)
    assert delivered == 0
    assert len(failures) == 1 and failures[0].attempts == 3
    assert isinstance(failures[0].error, RetryableError)
    assert "timed out" in str(failures[0].error)
    assert len(clock.sleeps) == 2


def test_retryable_then_success_delivers_everything():
    """Retry-After is honoured and a later success delivers the whole batch."""
    answers: list[BaseException | None] = [RetryableError("503", retry_after=7.0), None]

    class Sink:
        async def send(self, batch: Batch) -> None:
            answer = answers.pop(0)
            if answer is not None:
                raise answer

    clock = FakeClock()
    delivered, failures = _run(Sink(), _batch(5), clock=clock)
    assert (delivered, failures) == (5, [])
    assert clock.sleeps and clock.sleeps[0] >= 7.0


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_small_batches_all_poisoned(n):
    """Every event poisoned: each fails alone, none is lost or delivered."""
    batch = _batch(n)
    sink = PoisonSink(set(batch.ids))
    delivered, failures = _run(sink, batch)
    assert delivered == 0
    assert [i for f in failures for i in f.batch.ids] == batch.ids


class _Body(bytearray):
    """A request body (weak-referenceable, to see when it is freed)."""


def test_a_failed_attempt_lets_go_of_what_its_frames_held():
    """A sink whose attempts fail the way a refused connection does (a library error
    caught with ``except ... as`` and turned into a RetryableError) leaves nothing of
    an attempt alive once the loop has moved on: each body is freed at once, with the
    cyclic collector off, not held by the exception's frames until it runs."""
    import gc
    import weakref

    bodies: list[weakref.ref] = []

    class RefusedSink:
        calls = 0

        async def send(self, batch: Batch) -> None:
            self.calls += 1
            body = _Body(64 * 1024)  # what the attempt built and is sending
            bodies.append(weakref.ref(body))
            try:
                raise ConnectionRefusedError(111, "Connect call failed")
            except OSError as exc:  # the name, a local of this frame, closes a cycle
                if self.calls < 5:
                    raise RetryableError(f"cannot connect: {exc}") from exc
            del body

    gc.disable()
    try:
        sink = RefusedSink()
        delivered, failures = _run(sink, _batch(3))
        assert delivered == 3 and failures == [] and sink.calls == 5
        assert [ref() is None for ref in bodies] == [True] * 5
    finally:
        gc.enable()
