"""The requests of one batch within the receiver's limits: consecutive ranges of items
that fit a body (:func:`pack_ranges`), sent in order, and a range the receiver refuses
as too large (413) halved and sent again (:func:`send_halving`, :class:`RequestQueue`);
for a sink that sends a batch as it is, :func:`send_batch_halving`."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..plugin import PermanentError, SinkError

__all__ = ["RequestQueue", "TooLarge", "pack_ranges", "send_batch_halving", "send_halving"]


class TooLarge(Exception):
    """The receiver answered 413 to one request."""


def pack_ranges(sizes: list[int], limit: int, *, overhead: int = 0, separator: int = 0,
                max_items: int | None = None,
                alone: Callable[[int], bool] | None = None) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` ranges of items whose request body stays within
    ``limit`` bytes: ``overhead`` per body (brackets), ``separator`` per item (commas), at
    most ``max_items`` items. An item for which ``alone(i)`` holds (too large to send
    at all) always ends up in a range of its own, as does one larger than ``limit``."""
    ranges: list[tuple[int, int]] = []
    start, size = 0, overhead
    for i, n in enumerate(sizes):
        n += separator
        if i > start and (
            size + n > limit
            or (max_items is not None and i - start >= max_items)
            or (alone is not None and (alone(i) or alone(start)))
        ):
            ranges.append((start, i))
            start, size = i, overhead
        size += n
    ranges.append((start, len(sizes)))
    return ranges


async def send_halving(todo: RequestQueue, post: Callable[[int, int], Awaitable[None]], *,
                       one_too_large: Callable[[int], SinkError],
                       halving: Callable[[int], None]) -> None:
    """Send the ranges of ``todo`` in order with ``post(start, end)``. A range the receiver
    answers 413 to (``post`` raises :class:`TooLarge`) is sent again in two halves
    (``halving(count)`` first, to say so); a single item still refused raises
    ``one_too_large(index)``. A failure counts the items of the ranges before it as
    accepted, so the core never sends them again."""
    while todo:
        start, end = todo.pop()
        try:
            try:
                await post(start, end)
            except TooLarge:
                if end - start <= 1:
                    raise one_too_large(start) from None
                halving(end - start)
                todo.halve(start, end)
        except SinkError as err:
            err.accepted += start
            raise


async def send_batch_halving(batch: Any, post: Callable[[Any], Awaitable[None]], *, sink: str,
                             receiver: str, logger: logging.Logger,
                             noun: tuple[str, str] = ("event", "events")) -> None:
    """Send ``batch`` with ``post(batch)`` as one request, halved while the receiver answers
    413 (:func:`send_halving`): for a sink that sends a batch's events as they are. ``noun``:
    what an item is called in messages, singular and plural."""

    async def part(start: int, end: int) -> None:
        await post(batch if end - start == len(batch) else batch[start:end])

    def one_too_large(i: int) -> PermanentError:
        size = len(batch.lines[i]) if i < len(batch) else 0
        return PermanentError(f"{receiver} answered HTTP 413 to a single {noun[0]} of"
                              f" {size} bytes", rejected=min(1, len(batch)))

    def halving(count: int) -> None:
        logger.warning("sink %s: %s answered 413 to %d %s; sending them in two halves",
                       sink, receiver, count, noun[1])

    await send_halving(RequestQueue([(0, len(batch))]), part,
                       one_too_large=one_too_large, halving=halving)


class RequestQueue:
    """The ranges of a batch still to send, in order. :meth:`halve` puts the two halves
    of a range the receiver refused as too large back in front."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        self._todo = deque(ranges)

    def __bool__(self) -> bool:
        return bool(self._todo)

    def pop(self) -> tuple[int, int]:
        return self._todo.popleft()

    def halve(self, start: int, end: int) -> None:
        mid = (start + end) // 2
        self._todo.extendleft([(mid, end), (start, mid)])
