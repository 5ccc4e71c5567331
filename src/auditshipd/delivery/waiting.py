"""Waiting on events beside other work, without leaving a waiter behind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["wait_first"]


async def wait_first(events: Iterable[asyncio.Event], others: Iterable[asyncio.Future[Any]] = (),
                     timeout: float | None = None) -> None:
    """Wait until one of ``events`` is set, one of ``others`` is done or ``timeout``
    passes. ``others`` are left as they are; the waits on ``events`` end with the call,
    also when the caller is cancelled (a pending waiter left behind would be destroyed
    pending, which asyncio logs as an error)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait({*waiters, *others}, timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
