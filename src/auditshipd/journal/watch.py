"""Wakes the readers when the journal's directories change (inotify via watchfiles).

When inotify is unavailable (or ``force_polling`` is set) the readers simply poll every
``poll_interval``: the same read path, only woken by a timer.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
from collections.abc import Iterable

__all__ = ["ChangeSignal", "JournalWatcher", "watch_dirs"]

log = logging.getLogger("auditshipd.watch")


def watch_dirs(patterns: Iterable[str]) -> list[str]:
    """The directories that hold the files the glob patterns can match."""
    dirs = set()
    for pattern in patterns:
        head = pattern
        while glob.has_magic(head):
            head = os.path.dirname(head)
        d = os.path.dirname(head) if head == pattern else head
        dirs.add(os.path.abspath(d or "."))
    return sorted(dirs)


class JournalWatcher:
    def __init__(self, patterns: Iterable[str], signal: ChangeSignal, *, force_polling: bool):
        self.dirs = watch_dirs(patterns)
        self.signal = signal
        self.force_polling = force_polling
        self._stop = asyncio.Event()
        self.mode = "polling" if force_polling else "inotify"

    async def run(self) -> None:
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)
        if self.force_polling:
            await self._stop.wait()
            return
        try:
            from watchfiles import awatch

            async for _changes in awatch(*self.dirs, stop_event=self._stop, debounce=50, step=5,
                                         recursive=False, rust_timeout=1000, yield_on_timeout=False):
                self.signal.notify()
        except Exception as exc:  # inotify limits, unsupported file system...
            self.mode = "polling"
            log.warning("file watching unavailable (%s); polling the journal instead", exc)
            await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


class ChangeSignal:
    """Wakes readers when the journal directory changes (or on a timer when polling)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    @property
    def current(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()
