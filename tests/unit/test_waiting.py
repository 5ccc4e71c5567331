"""wait_first leaves no waiter behind: a pending task destroyed by the collector is
logged as an error by asyncio (this happened each time a reload stopped the shared pass)."""

from __future__ import annotations

import asyncio
import contextlib

from auditshipd.delivery.waiting import wait_first


def _others() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def test_a_cancelled_wait_leaves_no_task_and_does_not_touch_the_others() -> None:
    async def scenario() -> None:
        event = asyncio.Event()
        work = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(wait_first((event,), {work}))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0)  # the waiter's cancellation runs
        assert _others() == set()
        assert not work.cancelled()

    asyncio.run(scenario())


def test_it_returns_on_the_event_on_a_done_future_or_on_the_timeout() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        work = loop.create_future()
        loop.call_later(0.01, event.set)
        await wait_first((event,), {work})
        assert not work.done()
        event.clear()
        loop.call_later(0.01, work.set_result, 1)
        await wait_first((event,), {work})
        assert work.done()
        t0 = loop.time()
        await wait_first((asyncio.Event(),), {loop.create_future()}, timeout=0.05)
        assert loop.time() - t0 >= 0.04
        await asyncio.sleep(0)
        assert _others() == set()

    asyncio.run(scenario())
