"""One daemon per state directory.

Two daemons sharing a state directory would read the same cursors, both deliver every
event and overwrite each other's cursor, status and dead-letter files. The daemon holds an
exclusive ``flock`` on ``<state_dir>/daemon.lock`` for as long as it runs (the kernel
drops it when the process ends, ``kill -9`` included) and a second one is refused at
start, naming the holder's pid.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["LOCK_NAME", "StateDirLock", "hold_state_dir"]

LOCK_NAME = "daemon.lock"


class StateDirLock:
    """``acquire()`` takes the lock (ConfigError when another process holds it);
    ``release()`` lets it go."""

    def __init__(self, state_dir: Path, source: str = "") -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self.source = source
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"{self.path.parent} is the state dir of another running auditshipd (pid"
                f" {holder}): one daemon per state dir, or each would deliver every event"
                " again", file=self.source or None, key="journal.state_dir") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

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
