"""The daemon run in the test's own event loop (no signal handlers), so that a test can
call ``reload()`` at a chosen moment and look at its drivers; and waiting on conditions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from auditshipd.service.daemon import Daemon


@contextlib.asynccontextmanager
async def running_daemon(config: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(config)
    await daemon.startup()
    loop_task = asyncio.create_task(daemon.main_loop())
    try:
        yield daemon
    finally:
        daemon.should_exit.set()
        try:
            await asyncio.wait_for(loop_task, 10)
        finally:
            await daemon.shutdown()


async def until(condition: Callable[[], object], message: str, timeout: float = 20.0) -> None:
    """Wait until ``condition()`` is true; AssertionError naming ``message`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for: {message}"
        await asyncio.sleep(0.05)
