"""Dead-letter files: batches a sink could not deliver, kept for ``dlq replay``.

One JSONL file per sink (``state_dir/deadletter/SINK.jsonl``); each record holds the
error (secrets removed), whether it was retryable, the attempt count, the first and
last attempt times and the (redacted) events. Appends are fsynced before the sink's
cursor moves past the events. A lock file serialises the daemon's appends with
``dlq replay``'s rewrite. Storage is bounded: past ``max_bytes`` a write raises
:class:`DeadLetterFull` and the sink stops advancing instead of discarding anything.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from .fsutil import atomic_write

__all__ = ["DeadLetter", "DeadLetterFile", "DeadLetterFull"]


class DeadLetterFull(Exception):  # noqa: N818
    """The sink's dead-letter storage reached ``dead_letter.max_bytes``."""


class DeadLetter(msgspec.Struct, kw_only=True):
    sink: str
    error: str
    retryable: bool
    attempts: int
    first_attempt_at: str
    last_attempt_at: str
    dead_lettered_at: str
    events: list[dict[str, Any]]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(DeadLetter).decode


def now_rfc3339() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class DeadLetterFile:
    def __init__(self, state_dir: str | os.PathLike[str], sink: str,
                 max_bytes: int = 1 << 30):
        self.dir = Path(state_dir) / "deadletter"
        self.path = self.dir / f"{sink}.jsonl"
        self.lock_path = self.dir / f".{sink}.lock"
        self.sink = sink
        self.max_bytes = max_bytes

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, letter: DeadLetter) -> None:
        data = _encode(letter) + b"\n"
        with self.locked():
            if self.size() + len(data) > self.max_bytes:
                raise DeadLetterFull(
                    f"dead-letter file {self.path} would exceed dead_letter.max_bytes"
                    f" ({self.max_bytes} bytes); replay or move it to let the sink advance"
                )
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> list[DeadLetter]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return [_decode(line) for line in data.splitlines() if line.strip()]

    def count(self) -> tuple[int, int]:
        """(records, events)."""
        letters = self.read()
        return len(letters), sum(len(x.events) for x in letters)

    def remove_first(self, n: int, keep: list[DeadLetter]) -> None:
        """Replace the first ``n`` records by ``keep`` (replay's result); records the
        daemon appended meanwhile are preserved."""
        with self.locked():
            current = self.read()
            rest = keep + current[n:]
            atomic_write(self.path, b"".join(_encode(x) + b"\n" for x in rest))
