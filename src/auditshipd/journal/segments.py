"""Journal segments: what the reader hands out, how a file is recognised, and which
files count.

Only regular files are read, and only those owned by this daemon's user, by root or by
the owner of the directory they are in. A symbolic link is not followed unless
``follow_symlinks`` is set (checked with ``lstat`` and opened with ``O_NOFOLLOW``, so a
link swapped in between is refused too): a link ``audit.jsonl.x -> /etc/shadow`` dropped
into the journal directory would otherwise have its lines shipped, and the others copied
into quarantine. FIFOs, sockets, devices and directories are never opened (a FIFO would
block the reader until a writer came). Each refused entry is logged once.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .cursor import HEAD_BYTES, TAIL_BYTES, SegmentCursor, digest

log = logging.getLogger("auditshipd.tail")

__all__ = ["Chunk", "EXCLUDE", "OversizeLine", "Release", "content_matches", "copy_sources", "dir_owner", "find_copy", "hash_before", "io_failed", "line_end",
           "matched_files", "refusal", "report_refused", "restart_if_rewritten", "resume_offset", "rewritten", "room_under"]


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
    """A line longer than ``max_line_bytes`` at ``segment``:``offset`` (skipped), or with
    ``reason``, another line skipped for it (a torn last line)."""

    segment: str
    path: str
    offset: int
    length: int
    preview: bytes
    mark: SegmentCursor
    reason: str = ""


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

    def size(self) -> int:
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            return self.offset

    def at_eof(self) -> bool:
        try:
            return os.fstat(self.fd).st_size <= self.offset
        except OSError:
            return True

    def unchanged_for(self, now_ns: int, seconds: float) -> bool:
        """Whether the segment's file was last modified more than ``seconds`` ago.

        Out of the glob and drained: released after rotate_wait (also counted from when
        it left the glob). With only a partial line left (reaching there means no
        complete line is left: every segment's read returned nothing in this pass): that
        line is quarantined as torn after idle_after (see segment_reads.tail_abandoned),
        else a deleted file's descriptor stayed open for ever and a rotated one's bytes
        counted as pending for good.
        """
        try:
            st = os.fstat(self.fd)
        except OSError:
            return True
        return now_ns - st.st_mtime_ns > seconds * 1e9

    def mark(self) -> SegmentCursor:
        return SegmentCursor(path=self.path, offset=self.offset, head_len=self.head_len,
                             head_hash=self.head_hash, tail_hash=self.tail_hash)


def rewritten(seg: _Segment, size: int) -> bool:
    """Whether ``seg``'s file (now ``size`` bytes) was truncated or rewritten in place
    (copytruncate's second half) below the segment's offset."""
    # Also while an unfinished oversize line is skipped (seg.offset is its start):
    # returning early here left a truncated file stuck in "skipping" for ever,
    # waiting for a newline past an offset the file no longer reached.
    if size < seg.offset or (seg.skipping_from is not None and size < seg.skip_pos):
        return True
    if seg.head_len and digest(_pread(seg.fd, seg.head_len, 0)) != seg.head_hash:
        return True
    return bool(seg.offset) and hash_before(seg.fd, seg.offset) != seg.tail_hash


def restart_if_rewritten(seg: _Segment, size: int | None, name: str) -> SegmentCursor | None:
    """If ``seg``'s file (``size`` bytes; None: its descriptor's size) was truncated or
    rewritten in place (copytruncate's second half), read it from its start: returns the
    position it had (to retire), else None (also when it cannot be read: logged)."""
    try:
        size = os.fstat(seg.fd).st_size if size is None else size
        if not rewritten(seg, size):
            return None
    except OSError as exc:
        io_failed(seg, exc, name)
        return None
    log.warning("%s: %s was truncated or rewritten (size %d, offset %d); reading it"
                " from the start", name, seg.path, size, seg.offset)
    before = seg.mark()
    seg.offset = 0
    seg.skipping_from = None
    seg.head_len, seg.head_hash, seg.tail_hash = 0, digest(b""), digest(b"")
    return before


def io_failed(seg: _Segment, exc: OSError, name: str) -> None:
    """A read of ``seg`` failed (EIO, ESTALE...): logged once until a read succeeds."""
    if not seg.io_error:
        seg.io_error = True
        log.warning("%s: reading %s failed (%s); retrying", name, seg.path, exc)


def room_under(limit: Mapping[str, SegmentCursor] | None, seg: _Segment) -> int:
    """Bytes ``seg`` may be read from its offset under a reader's ``limit`` (huge
    without one; none for a segment still in the glob that has no bound yet)."""
    if limit is None:
        return 1 << 62
    bound = limit.get(seg.key)
    if bound is None:
        return 0 if seg.in_glob else 1 << 62
    return bound.offset - seg.offset


def line_end(seg: _Segment, block_bytes: int) -> int | None:
    """The offset after the newline that ends the oversize line being skipped in
    ``seg`` (None: not written yet); ``seg.skip_pos`` keeps how far it looked."""
    while True:
        data = _pread(seg.fd, block_bytes, seg.skip_pos)
        if not data:
            return None
        nl = data.find(b"\n")
        if nl >= 0:
            return seg.skip_pos + nl + 1
        seg.skip_pos += len(data)


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


def report_refused(name: str, before: Mapping[str, str], now: dict[str, str]) -> dict[str, str]:
    """Log the glob matches refused ``now`` (path -> why) that were not refused
    ``before`` for the same reason; returns ``now`` (only what is there: bounded by the
    directory)."""
    for path, why in now.items():
        if before.get(path) != why:
            log.warning("%s: not reading %s: %s", name, path, why)
    return now


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


# -- which files, and where a reader resumes in them (the reader and `status` both) -------

# Compressed or temporary files next to the journal are never segments.
EXCLUDE = ("*.gz", "*.zst", "*.bz2", "*.xz", "*.lock", "*.tmp")


def matched_files(patterns: Iterable[str], exclude: Iterable[str] = EXCLUDE) -> list[str]:
    """The files the journal globs match now, minus hidden and excluded ones."""
    exclude = tuple(exclude)
    found: set[str] = set()
    for pattern in patterns:
        for path in glob.glob(pattern):
            base = os.path.basename(path)
            if base.startswith(".") or any(fnmatch.fnmatch(base, x) for x in exclude):
                continue
            found.add(path)
    return sorted(found)


def hash_before(fd: int, offset: int) -> str:
    """The hash of the TAIL_BYTES before ``offset`` (what a cursor entry keeps)."""
    start = max(0, offset - TAIL_BYTES)
    return digest(_pread(fd, offset - start, start)) if offset else digest(b"")


def content_matches(fd: int, size: int, head: bytes, cur: SegmentCursor) -> bool:
    """Whether the cursor entry ``cur`` still describes this file (same first bytes, same
    bytes before its offset): not truncated, rewritten or replaced under a reused inode."""
    if size < cur.offset or len(head) < cur.head_len:
        return False
    if digest(head[: cur.head_len]) != cur.head_hash:
        return False
    return hash_before(fd, cur.offset) == cur.tail_hash


def find_copy(key: str, fd: int, size: int, head: bytes,
              candidates: Iterable[tuple[str, SegmentCursor]],
              open_fds: Mapping[str, int] | None = None,
              gone: frozenset[str] = frozenset()) -> SegmentCursor | None:
    """The position this file continues from when it is a copytruncate copy of a segment
    read before (it starts with the same bytes), else None. A candidate past ``size`` is
    a copy still being written (the caller waits), unless this file cannot be one: the
    candidate is open (``open_fds``: key -> descriptor), still holds ``size`` bytes and
    they differ from this file's, or its file is gone (``gone``: released segments). A
    new file whose first bytes merely look like an older segment's (events written with
    sorted keys put the same fields first) is then read from its start.

    A file is never "a copy still being written" of itself: a file that shrank below its
    own (just retired) cursor was taken for one and never read again until it grew past
    the old offset. Its own entry may still match in full (a released segment back in the
    glob resumes where it was).

    An empty file is a copy not written yet as long as some other segment it may be a copy
    of is not gone: it is looked at again once it has content. Taken for a new file, it
    was read from its start, its lines shipped twice, once the copier had written them.
    """
    for ckey, cur in candidates:
        if ckey == key and cur.offset > size:
            continue
        if not size and cur.offset and ckey not in gone:
            return cur
        if cur.offset == 0 or cur.head_len == 0 or len(head) < cur.head_len:
            continue
        if digest(head[: cur.head_len]) != cur.head_hash:
            continue
        if cur.offset > size:
            if ckey in gone or _differs(fd, (open_fds or {}).get(ckey), size):
                continue
            return cur
        if hash_before(fd, cur.offset) == cur.tail_hash:
            return cur
    return None


def copy_sources(segments: Mapping[str, _Segment],
                 idle: Mapping[str, tuple[SegmentCursor, int, int]],
                 known: Mapping[str, SegmentCursor], retired: list[tuple[str, SegmentCursor]],
                 ) -> tuple[list[tuple[str, SegmentCursor]], dict[str, int], frozenset[str]]:
    """What :func:`find_copy` compares a new file with, from a reader's open ``segments``,
    ``idle`` ones, cursor entries ``known`` but not adopted yet and ``retired`` positions:
    every position known for a segment (a copytruncate copy continues from one), the
    open descriptors, and the released segments no longer open, idle or awaited (their
    files are gone, so no copy of them can be in progress)."""
    candidates = [(k, s.mark()) for k, s in segments.items()]
    candidates += [(k, i[0]) for k, i in idle.items()]
    gone = frozenset(k for k, _ in retired if k not in segments and k not in idle and k not in known)
    return (candidates + list(known.items()) + retired, {k: s.fd for k, s in segments.items()},
            gone)


def _differs(fd: int, source: int | None, size: int) -> bool:
    """Whether the file ``fd`` is surely no copy of the open file ``source``: the source
    still holds ``size`` bytes and their content is not this file's. (A source already
    truncated cannot tell.)"""
    if source is None:
        return False
    step, offset = 1 << 20, 0
    try:
        if os.fstat(source).st_size < size:
            return False
        while offset < size:
            n = min(step, size - offset)
            if _pread(fd, n, offset) != _pread(source, n, offset):
                return True
            offset += n
    except OSError:
        return False
    return False


def resume_offset(fd: int, key: str, size: int, segments: Mapping[str, SegmentCursor]) -> int:
    """Where a reader holding the cursor ``segments`` resumes in this file (``key``:
    "dev:inode"): its own entry when that still matches, the offset of the file it is a
    complete copytruncate copy of, else 0."""
    head = _pread(fd, HEAD_BYTES, 0)
    cur = segments.get(key)
    if cur is not None:
        return cur.offset if content_matches(fd, size, head, cur) else 0
    copy = find_copy(key, fd, size, head, [(k, c) for k, c in segments.items() if c.offset <= size])
    return copy.offset if copy is not None else 0
