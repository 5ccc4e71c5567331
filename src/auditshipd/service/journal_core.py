"""The daemon's reading core, built on one config's ``[journal]`` settings: the journal
watcher, the shared pass that reads for the sinks, and the cursor saver.

A reload that changes ``[journal]`` (other than ``state_dir``) stops the running core
and builds a new one on the new settings; the sinks stop before (taking along what the
pass kept for them) and start after, from their saved cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..config import Config
from ..delivery.commits import CommitSaver
from ..delivery.fanout import SharedPass
from ..journal.watch import ChangeSignal, JournalWatcher

__all__ = ["JournalCore"]


class JournalCore:
    """Watcher, shared pass and cursor saver of one ``[journal]`` configuration.

    ``watch()`` first (no write after it goes unnoticed), then the sinks' drivers are
    built on ``shared`` and ``saver``, then ``begin()`` starts reading where they are.
    To stop for good: ``halt()`` (nothing more is read; the sinks then stop and hand in
    their last acknowledgements), then ``close()`` (cursors saved, watcher stopped). To
    build another core: the sinks stop first, while the pass can still give them the
    segments it keeps for them, then ``close()``."""

    def __init__(self, cfg: Config, signal: ChangeSignal,
                 sharing: Callable[[], list[Any]]) -> None:
        j = cfg.journal
        Path(j.path).parent.mkdir(parents=True, exist_ok=True)
        self.watcher = JournalWatcher(j.paths, signal, force_polling=j.force_polling)
        self.shared = SharedPass(cfg, signal)
        self.shared.sharing = sharing
        self.saver = CommitSaver(cfg.state_dir, self.shared)
        self.tasks: list[asyncio.Task[Any]] = []  # the shared pass and the cursor saver
        self._watch: asyncio.Task[None] | None = None

    def watch(self) -> None:
        self._watch = asyncio.create_task(self.watcher.run(), name="watcher")

    def begin(self, start_points: Iterable[Any]) -> None:
        """Read from where most of the sinks are (``start_points``: their drivers')."""
        self.shared.begin(start_points)
        self.tasks = [asyncio.create_task(self.shared.run(), name="shared pass"),
                      asyncio.create_task(self.saver.run(), name="cursor saver")]

    def halt(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def close(self) -> None:
        """Save the cursors the stopped sinks left and stop the watcher."""
        self.halt()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            await self.saver.flush()
        finally:
            if self._watch is not None:
                self.watcher.stop()
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(self._watch, 2)
