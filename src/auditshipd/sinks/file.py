"""``file`` sink: append events as JSON Lines to a local file; a batch is acknowledged
once durable (the sinks of one file system are synced together: ``file_writes``)."""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import logging
import os
from pathlib import Path
from typing import Any

from ..plugin import (
    Batch,
    ConfigError,
    PermanentError,
    RetryableError,
    SinkContext,
    SinkOptions,
    SinkType,
    hookimpl,
)
from .file_writes import GroupWriter, writer_for

__all__ = ["FileOptions", "FileSink"]

log = logging.getLogger("auditshipd.sink.file")


class FileOptions(SinkOptions):
    path: str
    # Rotate (rename to PATH.TIMESTAMP) before a write would take the file past this size.
    rotate_bytes: int = 0
    fsync: bool = True
    mode: int = 0o640


class FileSink:
    def __init__(self, name: str, options: FileOptions, context: SinkContext):
        self.name = name
        self.options = options
        self.path = Path(options.path)
        self._fd: int | None = None
        self._writer: GroupWriter | None = None

    async def start(self) -> None:
        try:
            device = await asyncio.to_thread(self._open)
        except OSError as exc:
            raise RetryableError(f"cannot open {self.path}: {exc.strerror}") from None
        self._writer = writer_for(device)

    def _open(self) -> int:
        """Open the file (creating it); returns its file system's device number."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _trim_torn_tail(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           self.options.mode)
        return os.fstat(self._fd).st_dev

    async def send(self, batch: Batch) -> None:
        if self._writer is None:
            await self.start()
        assert self._writer is not None
        try:
            # Joined in the worker thread: a batch waiting for it holds its lines only,
            # not a second copy of them.
            await self._writer.write(functools.partial(self._write_batch, batch))
        except OSError as exc:
            # ENOSPC, EIO: the disk may recover; EACCES/EROFS will not by retrying soon,
            # but they are not the events' fault either: keep retrying, the journal holds.
            raise RetryableError(f"cannot write {self.path}: {exc.strerror}") from None
        except ValueError as exc:  # pragma: no cover - encoding is done by the core
            raise PermanentError(str(exc)) from None

    def _write_batch(self, batch: Batch) -> int | None:
        return self._write(batch.jsonl())

    def _write(self, data: bytes) -> int | None:
        """Append ``data`` whole (or not at all); returns the descriptor to sync, None
        when the sink does not fsync."""
        if self._fd is None:
            self._open()
        assert self._fd is not None
        if self.options.rotate_bytes:
            size = os.fstat(self._fd).st_size
            if size and size + len(data) > self.options.rotate_bytes:
                self._rotate()
        fd = self._fd
        assert fd is not None
        before = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            os.ftruncate(fd, before)  # never leave half a batch (and a torn line) behind
            raise
        return fd if self.options.fsync else None

    def _rotate(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{stamp}"))
        self._open()

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _trim_torn_tail(path: Path) -> None:
    """Cut a last line without its newline: a write the process did not finish (killed
    mid-batch). That batch was never acknowledged, so it is sent again whole; left in
    place, the fragment would glue itself to the next event and corrupt both lines."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        size = end = os.fstat(fd).st_size
        if size == 0:
            return
        while end > 0:
            start = max(0, end - 65536)
            block = os.pread(fd, end - start, start)
            if end == size and block.endswith(b"\n"):
                return
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        os.ftruncate(fd, end)
        os.fsync(fd)
        log.warning("%s: removed %d bytes of an unfinished last line (its batch is sent again)",
                    path, size - end)
    finally:
        os.close(fd)


def _validate(options: FileOptions) -> None:
    if not options.path:
        raise ConfigError("must not be empty", key="path")
    if options.rotate_bytes < 0:
        raise ConfigError("must be 0 (no rotation) or a positive size", key="rotate_bytes")


@hookimpl
def register_sink_types() -> list[Any]:
    return [SinkType("file", FileOptions, FileSink,
                     "Append JSON Lines to a local file (durable per batch, optional rotation)",
                     validate=_validate)]
