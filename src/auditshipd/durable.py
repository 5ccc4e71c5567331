"""Durable small-file writes: write temp, fsync, rename, fsync the directory; and making
many files durable at once.

Each ``fsync`` of a file commits the file system's journal and flushes the disk's cache
on its own: a few hundred microseconds of CPU, and a wait, per file. Writers of many
files at once (the cursor saver with a thousand dirty cursors, a thousand ``file``
sinks each with a batch) make them durable together with :func:`sync_files`: one
``syncfs(2)`` per file system (one journal commit, one cache flush) when there are many
of them, ``fsync`` each otherwise. ``syncfs`` reports write-back errors of the file
system since the file was opened (Linux 5.8 and later); when it fails, each file is
fsynced to tell which one failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["append_durably", "atomic_write", "atomic_write_many", "file_lock", "fsync_dir",
           "overwrite_in_place", "sync_files"]

# From this many files on one file system, one syncfs costs less than their fsyncs.
_SYNCFS_FROM = 4


def _load_syncfs() -> Any:
    """libc's syncfs, on Linux 5.8 or later only: before, it did not report write-back
    errors, and a lost write would have been acknowledged."""
    if not sys.platform.startswith("linux") or _kernel() < (5, 8):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _kernel() -> tuple[int, int]:
    try:
        major, minor = os.uname().release.split(".")[:2]
        return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
    except ValueError:
        return (0, 0)


_syncfs = _load_syncfs()


def sync_files(fds: Iterable[int]) -> dict[int, OSError]:
    """Make what was written to the open files ``fds`` durable; returns the files that
    could not be synced, with their error (an empty dict: all are durable)."""
    by_fs: dict[int, list[int]] = {}
    failed: dict[int, OSError] = {}
    for fd in dict.fromkeys(fds):
        try:
            by_fs.setdefault(os.fstat(fd).st_dev, []).append(fd)
        except OSError as exc:
            failed[fd] = exc
    for group in by_fs.values():
        if _syncfs is not None and len(group) >= _SYNCFS_FROM and _syncfs(group[0]) == 0:
            continue
        for fd in group:
            try:
                os.fsync(fd)
            except OSError as exc:
                failed[fd] = exc
    return failed


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: a write may be cut short (a full disk) before one fails."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append_durably(path: str | os.PathLike[str], data: bytes,
                   check: Callable[[int], None] | None = None) -> None:
    """Append whole records (``data``, newline-terminated lines) to ``path``, created 0600,
    and fsync it. A write cut short by a full disk is undone (the file is cut back to its
    size before), so a retry never leaves a torn record in front of its own. A file that
    ends inside a record (a crash during an append) gets a newline first, so the records
    appended after it stay readable. ``check`` is given the size the file would have
    after the append, before anything is written: it may raise to refuse it."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        if check is not None:
            check(size + len(data))
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600, *,
                 durable: bool = True, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file,
    never a torn one (vector#20753, beats#3537). ``durable=False`` skips the fsyncs
    (readers still never see a partial file); ``sync_dir=False`` leaves the directory's
    fsync to the caller (one for many files). A failure (a full disk) removes the
    temp file: retried writes never pile temp files up in the state dir."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable and sync_dir:
        fsync_dir(p.parent)


def atomic_write_many(files: list[tuple[str, bytes]], mode: int = 0o600) -> None:
    """:func:`atomic_write` for many files (paths as strings), made durable together (:func:`sync_files`)
    before any is renamed into place; the caller fsyncs their directories. Raises the
    first error (files already renamed stay: each is whole, old or new); no temp file
    is left behind."""
    for start in range(0, len(files), _OPEN_AT_ONCE):
        fds: list[int] = []
        temps: list[tuple[str, str]] = []
        try:
            for path, data in files[start : start + _OPEN_AT_ONCE]:
                head, name = os.path.split(path)
                tmp = os.path.join(head, f".{name}.tmp.{os.getpid()}")
                fds.append(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                   mode))
                temps.append((tmp, path))
                view = memoryview(data)
                while view:
                    view = view[os.write(fds[-1], view):]
            failed = sync_files(fds)
            if failed:
                raise next(iter(failed.values()))
            while fds:
                os.close(fds.pop())
            while temps:
                tmp, path = temps[-1]
                os.replace(tmp, path)
                temps.pop()
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            for tmp, _path in temps:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


# Temp files held open at once by atomic_write_many (far under any RLIMIT_NOFILE).
_OPEN_AT_ONCE = 256


def overwrite_in_place(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` over the existing file ``path`` without a temp file.

    For reports only (readers may see a mix of old and new bytes): when the disk is
    full, the blocks of the existing file are all there is to write a report into.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], mode: int = 0o600, *,
              wait: bool = True) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created with ``mode``) while the block runs;
    ``wait=False``: BlockingIOError at once when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)
