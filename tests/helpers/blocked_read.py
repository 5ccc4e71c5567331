"""A journal reader whose reads wait in their worker thread: what a test needs to stop or
close it while a read is in progress."""

from __future__ import annotations

import os
import threading
from typing import Any

from auditshipd.journal.reader import JournalReader


def block_reads(reader: JournalReader) -> tuple[threading.Event, threading.Event, list[int | None]]:
    """Make each read of ``reader`` wait: ``entered`` is set once one has begun, it goes on
    once ``go`` is set, and ``seen`` gets the inode its segment's descriptor then had (None:
    the descriptor was closed under it). Returns ``(entered, go, seen)``."""
    entered, go = threading.Event(), threading.Event()
    seen: list[int | None] = []
    read = reader._read

    def blocked_read(seg: Any) -> Any:
        entered.set()
        go.wait(10)
        try:
            seen.append(os.fstat(seg.fd).st_ino)
        except OSError:
            seen.append(None)
        return read(seg)

    reader._read = blocked_read  # type: ignore[method-assign]
    return entered, go, seen
