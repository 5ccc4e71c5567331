"""One daemon per state directory.

Two daemons sharing a state directory would read the same cursors, both deliver every
event and overwrite each other's cursor, status and dead-letter files. The daemon holds an
exclusive ``flock`` on the state directory for as long as it runs (the kernel drops it
when the process ends, ``kill -9`` included) and a second one is refused at start, naming
the holder's pid (from ``<state_dir>/daemon.lock``).
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["LOCK_NAME", "StateDirLock", "hold_state_dir"]

log = logging.getLogger("auditshipd")

LOCK_NAME = "daemon.lock"


class StateDirLock:
    """``acquire()`` takes the lock (ConfigError when another process holds it);
    ``release()`` lets it go. The lock is on the directory itself, so a state dir the
    daemon cannot write to (full, read-only: the daemon runs on and retries saving) is
    locked all the same; ``daemon.lock`` only names the holder, written when it can be."""

    def __init__(self, state_dir: Path, source: str = "") -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / LOCK_NAME
        self.source = source
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(f"cannot open the state dir {self.dir}: {exc.strerror}",
                              file=self.source or None, key="journal.state_dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{self.dir} is the state dir of another running auditshipd (pid"
                f" {self._holder()}): one daemon per state dir, or each would deliver every"
                " event again", file=self.source or None, key="journal.state_dir") from None
        except OSError as exc:  # a file system without flock (some network ones)
            os.close(fd)
            log.warning("cannot lock the state dir %s (%s): a second daemon started on it"
                        " would not be refused", self.dir, exc.strerror)
            return
        self._fd = fd
        try:
            self.path.write_text(f"{os.getpid()}\n", "ascii")
        except OSError:
            pass  # best effort: the lock holds without it

    def _holder(self) -> str:
        try:
            return self.path.read_text("ascii", "replace").strip() or "unknown"
        except OSError:
            return "unknown"

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def hold_state_dir(config: Any) -> Coroutine[Any, Any, None]:
    """Take ``config``'s state dir for this process (ConfigError when another daemon
    holds it); the coroutine returned lets it go."""
    lock = StateDirLock(config.state_dir, config.source)
    lock.acquire()
    return lock.release()
