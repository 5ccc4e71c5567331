"""Delivering one batch to one sink: retries, partial acceptance, culprit isolation.

:func:`deliver` is the one delivery loop, used by the pipeline's sink driver and by
``dlq replay`` alike, so both honour the same rules:

- each attempt is bounded by ``attempt_timeout`` (a timeout is retryable);
- ``SinkError.accepted`` events at the start are never sent again;
- a :class:`~auditshipd.errors.PermanentError` with ``rejected=N`` fails only those N
  events, the rest are sent again; without ``rejected`` it fails all that remain;
- retryable failures wait (exponential backoff with full jitter, honouring the
  receiver's ``Retry-After``) until :meth:`Backoff.exhausted`;
- an exception that is not a ``SinkError`` (a bug in the sink, a value it cannot
  encode, a ``CancelledError`` of the sink's own making) says nothing about which event
  caused it: the batch is halved and each half sent on its own, down to single events,
  so only the events that make the sink raise fail, with the exception as the reason,
  and the rest of the batch is delivered. Only the caller's own cancellation,
  ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` go through;
- an ``accepted`` or ``rejected`` that is not a count of events of the part sent (a
  negative number, a float, a bool, more than were sent) is a bug in the sink: it is
  reported (``on_bad_count``) and read as "none accepted" / "all the rest rejected",
  so no event is skipped.

Failures are handed to the caller (``on_failed``) as they happen, in batch order: the
caller decides what failing means (dead-letter file for the pipeline, letters kept
for a replay).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..config import RetryConfig
from ..errors import PermanentError, RetryableError, SinkError
from ..scrub import scrub_secrets
from ..timestamps import epoch_rfc3339, now_rfc3339
from .batch import Batch


class _Now:
    """The time it was made, formatted (RFC 3339) only if asked for: most batches are
    delivered at the first attempt and never need their first attempt's time as text."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = time.time()

    def __str__(self) -> str:
        return epoch_rfc3339(self.at)

__all__ = ["GOES_THROUGH", "Backoff", "DeliveryFailure", "bad_count_reporter", "being_cancelled",
           "deliver", "describe"]

# One generator for every sink's jitter (a Random holds 2.5 KB of state: a thousand
# sinks each with their own took 2.8 MB).
_RANDOM = random.Random()


class Backoff:
    __slots__ = ("cfg", "_rand")

    def __init__(self, cfg: RetryConfig, rand: random.Random | None = None):
        self.cfg = cfg
        self._rand = rand or _RANDOM

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed)."""
        cap = min(self.cfg.max_backoff, self.cfg.initial_backoff * (2 ** min(attempt - 1, 32)))
        delay = self._rand.uniform(0, cap)
        if retry_after is not None:
            delay = max(delay, min(retry_after, max(self.cfg.max_backoff, 300.0)))
        return delay

    def exhausted(self, attempts: int, elapsed: float) -> bool:
        if self.cfg.max_attempts and attempts >= self.cfg.max_attempts:
            return True
        return bool(self.cfg.max_elapsed and elapsed >= self.cfg.max_elapsed)


@dataclass(frozen=True)
class DeliveryFailure:
    """Events that could not be delivered, with the last error and its history."""

    batch: Batch
    error: SinkError
    attempts: int
    first_attempt_at: str
    last_attempt_at: str



def _release_frames(exc: BaseException | None) -> None:
    """Let go of the frames ``exc`` and the exceptions it chains passed through. A failed
    attempt's traceback reaches the frames that built and sent the batch (its body among
    their locals), and an ``except ... as`` name in one of them closes a reference cycle:
    kept until the cyclic collector runs, so a sink retrying against a refused connection
    would pile up a body per attempt. The message and the type of each stay; the
    traceback is dropped (log it first)."""
    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)  # finished frames only: the locals go
        e.__traceback__ = None
        stack += [e.__cause__, e.__context__]


def describe(exc: BaseException) -> str:
    """``TYPE: message``, or the type alone when it has no message (a CancelledError)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unexpected(exc: BaseException) -> PermanentError:
    return PermanentError(f"the sink raised an unexpected {describe(exc)}")


# Never a sink's failure: the process is asked to stop, or the coroutine is closed.
GOES_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)


def being_cancelled() -> bool:
    """Whether the running task was asked to stop (``Task.cancel``): a ``CancelledError``
    is then the caller's own, not a sink's failure."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _count(err: SinkError, field: str, default: int | None, low: int, high: int,
           report: Callable[[str], None]) -> int | None:
    """``err``'s ``field`` if it is an int in ``low``..``high``; else ``default``, the
    sink's bug reported."""
    value = getattr(err, field, default)
    if value is default or (type(value) is not bool and isinstance(value, int)
                            and low <= value <= high):
        return value
    report(f"{type(err).__name__} with {field}={repr(value)[:40]}: not a whole number from"
           f" {low} to {high} (the events sent); taken as "
           + ("none accepted" if field == "accepted" else f"all {high} rejected"))
    return default


def bad_count_reporter(logger: logging.Logger, sink: str, secrets: Sequence[str] = ()
                       ) -> Callable[[str], None]:
    """An ``on_bad_count`` for sink ``sink``: its first problem is logged as a bug in its
    plugin, the ones after it are not (the same bug would fill the log)."""
    said: list[str] = []

    def report(problem: str) -> None:
        if not said:
            said.append(problem)
            logger.error("sink %s raised %s (a bug in the sink's plugin; said once)", sink,
                         scrub_secrets(problem, secrets))
    return report


async def deliver(
    send: Callable[[Batch], Awaitable[object]],
    batch: Batch,
    backoff: Backoff,
    *,
    on_failed: Callable[[DeliveryFailure], Awaitable[None]],
    on_delivered: Callable[[int], None] = lambda n: None,
    on_retry: Callable[[int, float, SinkError], None] = lambda attempt, delay, err: None,
    on_unexpected: Callable[[BaseException, int], None] = lambda exc, events: None,
    on_bad_count: Callable[[str], None] = lambda problem: None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Send ``batch`` until every event is delivered or has failed; return how many
    were delivered. Every event ends in exactly one of ``on_delivered`` (counts, in
    order) or ``on_failed``; nothing is dropped. Exceptions raised by ``on_failed`` or
    ``sleep`` (cancellation) propagate: the caller then keeps the whole batch."""
    timeout = backoff.cfg.attempt_timeout
    delivered = 0
    # Parts still to send, the next one last. Halving pushes the two halves of a part.
    todo = [batch]
    while todo:
        remaining = todo.pop()
        attempts = 0
        first_at = _Now()
        started = clock()
        while len(remaining):
            attempts += 1
            try:
                async with asyncio.timeout(timeout or None):
                    await send(remaining)
            except asyncio.TimeoutError as exc:
                _release_frames(exc)
                err: SinkError = RetryableError(f"attempt timed out after {timeout}s")
            except SinkError as exc:
                _release_frames(exc)
                err = exc
            except BaseException as exc:
                if isinstance(exc, GOES_THROUGH) or being_cancelled():
                    raise
                on_unexpected(exc, len(remaining))
                _release_frames(exc)
                if len(remaining) > 1:
                    half = len(remaining) // 2
                    todo += [remaining[half:], remaining[:half]]
                    break
                await on_failed(DeliveryFailure(remaining, _unexpected(exc), attempts,
                                                str(first_at), now_rfc3339()))
                break
            else:
                delivered += len(remaining)
                on_delivered(len(remaining))
                break
            accepted = _count(err, "accepted", 0, 0, len(remaining), on_bad_count)
            if accepted:
                delivered += accepted
                on_delivered(accepted)
                remaining = remaining[accepted:]
                if not len(remaining):
                    break
            if not err.retryable:
                rejected = _count(err, "rejected", None, 1, len(remaining), on_bad_count)
                n = len(remaining) if rejected is None else rejected
                await on_failed(DeliveryFailure(remaining[:n], err, attempts, str(first_at),
                                                now_rfc3339()))
                remaining = remaining[n:]
                attempts, first_at, started = 0, _Now(), clock()
                continue
            if backoff.exhausted(attempts, clock() - started):
                await on_failed(DeliveryFailure(remaining, err, attempts, str(first_at),
                                                now_rfc3339()))
                break
            delay = backoff.delay(attempts, getattr(err, "retry_after", None))
            on_retry(attempts, delay, err)
            await sleep(delay)
    return delivered
