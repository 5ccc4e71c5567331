"""The daemon's reading core, built on one config's ``[journal]`` settings: the journal
watcher, the shared pass that reads for the sinks, and the cursor saver.

A reload that changes ``[journal]`` (other than ``state_dir``) retunes the running core
instead of replacing it: the watcher follows the new globs, and every reader (the pass's
and those of sinks reading alone) takes the new globs and tunables before its next
read. Nothing is read again or dropped: a file the new globs no longer match is, for
the readers, a segment that left the glob, read to its end and let go after
``rotate_wait`` as a rotated one is; a file they newly match is a new segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from ..config import Config
from ..config.tables import JournalConfig
from ..delivery.commits import CommitSaver
from ..delivery.fanout import SharedPass, pass_block
from ..journal.reader import JournalReader
from ..journal.watch import ChangeSignal, JournalWatcher

__all__ = ["JournalCore"]


def _retune_reader(reader: JournalReader, j: JournalConfig, block_bytes: int) -> None:
    """``reader`` on ``j``'s globs and tunables, and ``block_bytes`` (its owner's choice:
    a pass reads in larger blocks than a sink catching up alone), from its next scan
    and read on."""
    reader.patterns = list(j.paths)
    reader.block_bytes = block_bytes
    for name, value in j.reader_tunables().items():
        setattr(reader, name, value)


class JournalCore:
    """Watcher, shared pass and cursor saver of one ``[journal]`` configuration.

    ``watch()`` first (no write after it goes unnoticed), then the sinks' drivers are
    built on ``shared`` and ``saver``, then ``begin()`` starts reading where they are.
    To stop: ``halt()`` (nothing more is read; the sinks then stop and hand in their
    last acknowledgements), then ``close()`` (cursors saved, watcher stopped)."""

    def __init__(self, cfg: Config, signal: ChangeSignal,
                 sharing: Callable[[], list[Any]]) -> None:
        j = cfg.journal  # its directory exists: the start-up checks made it
        self.signal = signal
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

    async def retune(self, j: JournalConfig, drivers: list[Any]) -> None:
        """Apply ``j`` to the running pass, the ``drivers`` (their readers, and the
        settings they build readers and line checks from) and the watcher (the reload
        checked, and made, the directory of a new ``j.path``)."""
        readers = [(self.shared.reader, pass_block(j)),
                   *((d.own_reader, d.reader_block(j)) for d in drivers)]
        for owner in (self.shared, *drivers):  # a copy: the old Config stays as it was
            owner.config = dataclasses.replace(owner.config, journal=j)
        self.shared.memory_bytes = j.pass_memory_bytes
        for processor in (*self.shared.processors(), *(d.processor for d in drivers)):
            processor.max_line_bytes = j.max_line_bytes  # lines inside a read block
        for reader, block in readers:
            if reader is not None:
                async with reader.reading:  # between two reads, never during one
                    _retune_reader(reader, j, block)
        await self._stop_watcher()
        self.watcher = JournalWatcher(j.paths, self.signal, force_polling=j.force_polling)
        self.watch()
        self.signal.notify()  # scan the new globs now

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
            await self._stop_watcher()

    async def _stop_watcher(self) -> None:
        if self._watch is not None:
            self.watcher.stop()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._watch, 2)
