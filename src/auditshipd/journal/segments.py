"""Journal segments: what the reader hands out, how a file is recognised, and which
files count."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .cursor import TAIL_BYTES, SegmentCursor, digest

__all__ = ["Chunk", "OversizeLine", "Release", "dir_owner", "refusal"]


@dataclass(slots=True)
class Chunk:
    """Complete lines ``data`` read from ``segment`` starting at byte ``start``."""

    segment: str
    path: str
    start: int
    data: bytes
    mark: SegmentCursor  # the cursor entry once every line of the chunk is acked
    prefix: bytes = b""  # up to TAIL_BYTES bytes just before ``start``

    def mark_at(self, end: int) -> SegmentCursor:
        """The cursor entry for a position ``end`` (relative to ``start``) on a line end."""
        # Slice only the window: concatenating prefix + data[:end] copied up to the
        # whole chunk (1 MiB) for every batch mark inside it.
        lo = end - TAIL_BYTES
        window = (self.prefix[lo:] if lo < 0 else b"") + self.data[max(lo, 0):end]
        return SegmentCursor(path=self.path, offset=self.start + end, head_len=self.mark.head_len,
                             head_hash=self.mark.head_hash, tail_hash=digest(window))


@dataclass(slots=True)
class OversizeLine:
    """A line longer than ``max_line_bytes`` at ``segment``:``offset`` (skipped)."""

    segment: str
    path: str
    offset: int
    length: int
    preview: bytes
    mark: SegmentCursor


@dataclass(slots=True)
class Release:
    """``segment`` was drained and is gone: forget it once everything before is acked."""

    segment: str


Item = Chunk | OversizeLine | Release


class _Segment:
    __slots__ = (
        "key", "path", "fd", "offset", "head_len", "head_hash", "tail_hash", "in_glob",
        "mtime", "skipping_from", "skip_pos", "seq", "io_error", "left_ns",
    )

    def __init__(self, key: str, path: str, fd: int, offset: int, head_len: int, head_hash: str,
                 tail_hash: str) -> None:
        self.key = key
        self.path = path
        self.fd = fd
        self.offset = offset
        self.head_len = head_len
        self.head_hash = head_hash
        self.tail_hash = tail_hash
        self.in_glob = True
        self.left_ns = 0  # when a scan first found it out of the glob
        self.mtime = 0
        self.skipping_from: int | None = None  # start of an oversize line being skipped
        self.skip_pos = 0  # how far the search for its newline got
        self.seq = 0  # adoption order: breaks mtime ties (older segment first)
        self.io_error = False  # a read failed; logged once until a read succeeds

    def mark(self) -> SegmentCursor:
        return SegmentCursor(path=self.path, offset=self.offset, head_len=self.head_len,
                             head_hash=self.head_hash, tail_hash=self.tail_hash)


def _pread(fd: int, n: int, off: int) -> bytes:
    return os.pread(fd, n, off)


_KINDS = (
    (stat.S_ISLNK, "a symbolic link (set [journal] follow_symlinks = true to read links)"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def refusal(st: os.stat_result, dir_uid: int | None) -> str | None:
    """Why a glob match with status ``st`` is not read as a journal segment, or None.

    ``st`` comes from ``lstat`` (``stat`` when links are followed); ``dir_uid`` is
    the uid owning the directory the file is in (None if unknown). The owners trusted
    are the ones who can put a journal file there anyway: this daemon's user, root and
    the directory's owner; a file of any other user is foreign content.
    """
    mode = st.st_mode
    if not stat.S_ISREG(mode):
        kind = next((k for test, k in _KINDS if test(mode)), "a special file")
        return f"it is {kind}, not a regular file"
    if st.st_uid not in (0, os.geteuid(), dir_uid):
        return (f"it is owned by uid {st.st_uid}, not by this daemon's user, root or the"
                " directory's owner")
    return None


def dir_owner(path: str, cache: dict[str, int | None]) -> int | None:
    """The uid owning the directory ``path`` is in (None if unknown); ``cache`` per scan."""
    d = os.path.dirname(path) or "."
    if d not in cache:
        try:
            cache[d] = os.stat(d).st_uid
        except OSError:
            cache[d] = None
    return cache[d]


def _last_line_end(fd: int, size: int) -> int:
    """The offset just after the last newline at or before ``size``."""
    pos = size
    while pos > 0:
        start = max(0, pos - 65536)
        block = _pread(fd, pos - start, start)
        nl = block.rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0
