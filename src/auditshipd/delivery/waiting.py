"""Waiting on an event beside other work, without leaving a waiter behind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["wait_or_event"]


async def wait_or_event(event: asyncio.Event, others: Iterable[asyncio.Future[Any]],
                        timeout: float | None = None) -> None:
    """Wait until one of ``others`` is done, ``event`` is set or ``timeout`` passes.
    ``others`` are left as they are; the wait on ``event`` ends with the call, also when
    the caller is cancelled (a pending waiter left behind would be destroyed pending)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter, *others}, timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
