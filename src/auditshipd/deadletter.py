"""Dead-letter files: batches a sink could not deliver, kept for ``dlq replay``.

One JSONL file per sink (``state_dir/deadletter/SINK.jsonl``); each record holds the
error (secrets removed), whether it was retryable, the attempt count, the first and
last attempt times and the (redacted) events. Appends are fsynced before the sink's
cursor moves past the events. A lock file serialises the daemon's appends with
``dlq replay``'s rewrite. Storage is bounded: past ``max_bytes`` a write raises
:class:`DeadLetterFull` and the sink stops advancing instead of discarding anything.

A line that cannot be decoded (the torn end of an append cut by a crash or a full
disk) is reported by :meth:`DeadLetterFile.scan` and kept where it is, byte for byte:
it may be the only copy of events, so only a person decides what to do with it. The
next append starts on a new line, so the torn line never swallows a good record.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from .fsutil import atomic_write

__all__ = ["DeadLetter", "DeadLetterFile", "DeadLetterFull", "DeadLetterScan"]


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


class DeadLetterScan(msgspec.Struct, kw_only=True):
    """The readable records of a dead-letter file and the lines that are not."""

    letters: list[DeadLetter]
    unreadable: list[int]  # 1-based line numbers


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(DeadLetter).decode


def _parse(line: bytes) -> DeadLetter | None:
    try:
        return _decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


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
            size = self.size()
            if size and not self._ends_with_newline():
                data = b"\n" + data  # after a torn line: start a line of our own
            if size + len(data) > self.max_bytes:
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
            except BaseException:
                # ENOSPC half way: cut what was written so no torn record stays behind.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
            finally:
                os.close(fd)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _lines(self) -> list[bytes]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return data.splitlines()

    def scan(self) -> DeadLetterScan:
        """Every readable record, in order, and the line numbers of the unreadable ones."""
        letters: list[DeadLetter] = []
        unreadable: list[int] = []
        for number, line in enumerate(self._lines(), 1):
            if not line.strip():
                continue
            letter = _parse(line)
            if letter is None:
                unreadable.append(number)
            else:
                letters.append(letter)
        return DeadLetterScan(letters=letters, unreadable=unreadable)

    def read(self) -> list[DeadLetter]:
        """The readable records (see :meth:`scan` for the unreadable lines)."""
        return self.scan().letters

    def count(self) -> tuple[int, int]:
        """(records, events)."""
        letters = self.read()
        return len(letters), sum(len(x.events) for x in letters)

    def remove_first(self, n: int, keep: list[DeadLetter]) -> None:
        """Replace the first ``n`` readable records by ``keep`` (replay's result).
        Records the daemon appended meanwhile and unreadable lines stay as they are."""
        with self.locked():
            out: list[bytes] = []
            removed = 0
            for line in self._lines():
                if not line.strip():
                    continue
                if removed < n and _parse(line) is not None:
                    if removed == 0:
                        out.extend(_encode(x) for x in keep)
                    removed += 1
                    continue
                out.append(line)
            if removed == 0:
                out[:0] = [_encode(x) for x in keep]
            atomic_write(self.path, b"".join(line + b"\n" for line in out))
