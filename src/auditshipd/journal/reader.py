"""The tailing reader: follows the journal's segments and hands out whole lines.

One :class:`JournalReader` per sink (each sink is an independent consumer with its own
cursor). It reads large blocks and returns :class:`Chunk` s made of complete lines
only: a partial last line is not read until its newline arrives, so offsets always sit
on line boundaries.

Segment identity is ``(dev, inode)`` plus a hash of the first bytes and a hash of the
bytes before the offset (see :mod:`auditshipd.journal.cursor`). Handled without loss and
without re-sending a whole file:

- rename-and-create rotation: the renamed file keeps its inode and is drained through
  the descriptor we hold, even if it left the glob or was deleted;
- copytruncate: the copy is recognised by its head and the bytes before our offset and
  continues from that offset; the truncated original restarts at 0; a writer that keeps
  writing at its old offset leaves a NUL-filled hole, which is skipped;
- truncation (size below our offset), deletion, inode reuse by unrelated content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from functools import partial

from .cursor import HEAD_BYTES, TAIL_BYTES, CursorState, SegmentCursor, digest, segment_key
from .held import Held, KeptSegments, dup_left_glob, keep_only, take_held
from .segment_reads import read_lines, skip_torn_tail, tail_abandoned, written_after
from .segments import (
    EXCLUDE,
    Chunk,
    Item,
    Release,
    _last_line_end,
    _pread,
    _Segment,
    content_matches,
    copy_sources,
    dir_owner,
    find_copy,
    hash_before,
    io_failed,
    matched_files,
    refusal,
    report_refused,
    restart_if_rewritten,
    room_under,
)
from .watch import ChangeSignal

__all__ = ["JournalReader"]

log = logging.getLogger("auditshipd.tail")

_RETIRED_KEEP = 32


class JournalReader:
    """Reads every file matched by ``patterns`` from the positions in ``state``."""

    def __init__(
        self,
        patterns: Iterable[str],
        state: CursorState,
        *,
        exclude: Iterable[str] = EXCLUDE,
        start_at_end: bool = False,
        max_line_bytes: int = 1024 * 1024,
        block_bytes: int = 1024 * 1024,
        signal: ChangeSignal | None = None,
        poll_interval: float = 1.0,
        idle_after: float = 60.0,
        rotate_wait: float = 5.0,
        follow_symlinks: bool = False,
        name: str = "",
        limit: Mapping[str, SegmentCursor] | None = None,
        executor: Executor | None = None,
        inherit: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        self.patterns = list(patterns)
        # Descriptors handed over (key -> (path, fd), this reader's to close) of segments
        # that left the glob, which another reader still holds: a cursor entry whose file
        # is gone by name is read on from them, not given up (a sink leaving the pass).
        self.inherited = dict(inherit or {})
        # Segments the shared pass let go (left the glob, read to their end) since this
        # reader started beside it: adopted (from their start) by the next scan unless
        # this reader knows them; none was lost for being deleted before it looked.
        self.offered = KeptSegments()
        # Called (reading thread) with (key, path, fd) of a segment that left the glob, as
        # the reader lets it go: the shared pass keeps a duplicate while a sink needs it.
        self.on_release: Callable[[str, str, int], None] | None = None
        self.exclude = list(exclude)
        self.known = dict(state.segments)  # persisted cursor entries not yet adopted
        self.start_at_end = start_at_end and not state.segments
        self.max_line_bytes = max_line_bytes
        self.block_bytes = block_bytes
        self.signal = signal or ChangeSignal()
        self.poll_interval = poll_interval
        # A drained segment that left the glob is kept open rotate_wait seconds after it
        # left and after its last write: a writer holding the old descriptor may still
        # append before it reopens the path (Fluent Bit's Rotate_Wait).
        self.rotate_wait = rotate_wait
        self.name = name
        self.follow_symlinks = follow_symlinks
        # Per segment, how far to read at most (a reader catching up with the shared
        # pass): see segments.room_under. ``executor``: where reads run (default pool).
        self.limit, self.executor = limit, executor
        # Glob matches that are not read (links, FIFOs, foreign files...): path -> why.
        # Logged when first seen and when the reason changes, not on every scan.
        self.refused: dict[str, str] = {}
        self.segments: dict[str, _Segment] = {}
        # Drained segments untouched for idle_after seconds: descriptor closed, cursor
        # entry kept; reopened when their size or mtime changes. Bounds open files when
        # many rotated segments stay on disk.
        self.idle: dict[str, tuple[SegmentCursor, int, int]] = {}
        self.idle_after = idle_after
        # (key, cursor) of segments no longer read at that position (truncated, rewritten,
        # released): a copytruncate copy is recognised against them.
        self.retired: list[tuple[str, SegmentCursor]] = []
        self._pending: list[Item] = []
        self._first_scan = True
        self._closed = False
        self._seq = 0
        self.reading = asyncio.Lock()  # held while a pass runs in a worker thread

    # -- public -----------------------------------------------------------------------

    async def next_item(self, timeout: float | None) -> Item | None:
        """The next chunk of complete lines (or other item), or None after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._closed:
            wake = self.signal.current
            if self._pending:
                return self._pending.pop(0)
            item = await self._poll(loop)
            if item is not None:
                return item
            if self._pending:
                continue
            wait = self.poll_interval
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    return None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)
        return None

    async def _poll(self, loop: asyncio.AbstractEventLoop) -> Item | None:
        """One pass in a worker thread, holding ``reading`` until that thread is done even
        if the awaiting task is cancelled (the thread goes on): :meth:`aclose` waits."""
        await self.reading.acquire()
        if self._closed:
            self.reading.release()
            return None
        try:
            read = loop.run_in_executor(self.executor, self._poll_once)
        except BaseException:
            self.reading.release()
            raise
        read.add_done_callback(lambda f: (self.reading.release(), f.cancelled() or f.exception()))
        return await asyncio.shield(read)

    @property
    def has_pending(self) -> bool:  # items found by the last scan, not handed out yet
        return bool(self._pending)

    def prime(self) -> None:
        """Run the first scan now (blocking: call it in a worker thread). With
        ``start_at_end`` that fixes "the end" at this moment, not at the first read,
        which comes later (after the sink has started): lines appended in between are
        read, not skipped."""
        if self._first_scan:
            self._scan()

    async def aclose(self, *, hand_over: bool = False) -> Held:
        """Close once no read runs (one runs on in its thread when the task awaiting it is
        cancelled: closing under it closed descriptors it read, whose numbers another file
        may have by then); ``hand_over``: returns :meth:`held_out_of_glob` first, with the
        segments handed over or offered that it has not read yet."""
        self._closed = True  # no further pass starts
        async with self.reading:
            held = take_held(take_held(self.held_out_of_glob(), self.inherited), keep_only(
                self.offered.take(), lambda k: not self._had(k))) if hand_over else {}
            self.close()
        return held

    def close(self) -> None:
        self._closed = True
        self.offered.close()
        keep_only(self.inherited, lambda _key: False)
        for seg in self.segments.values():
            with contextlib.suppress(OSError):
                os.close(seg.fd)
        self.segments.clear()

    def held_out_of_glob(self, keys: Iterable[str] | None = None) -> Held:
        """Duplicates of the descriptors of the segments (among ``keys``) that left the
        glob, for a reader taking over a cursor in them (see :func:`dup_left_glob`)."""
        return dup_left_glob(self.segments, keys)

    def lag_bytes(self) -> int:
        return sum(max(0, s.size() - s.offset) for s in list(self.segments.values()))  # a copy

    # -- one pass (runs in a worker thread) -------------------------------------------

    def _poll_once(self) -> Item | None:
        self._scan()
        if self._pending:  # marks queued by the scan come before any later read
            return self._pending.pop(0)
        # Oldest first. File timestamps are often coarse (a jiffy): a rotated segment and
        # the new file written in the same tick had equal mtimes and were ordered by
        # path, so the new file ("audit.jsonl") was read before the rest of the rotated
        # one ("audit.jsonl.1"): events out of journal order. Ties go to the segment
        # adopted first.
        for seg in sorted(self.segments.values(), key=lambda s: (s.mtime, s.seq)):
            try:
                item = self._read(seg)
                seg.io_error = False
            except OSError as exc:
                # EIO, ESTALE...: raised out of next_item, it ended the sink's read
                # loop for good. Skip the segment this pass and try again.
                io_failed(seg, exc, self.name)
                continue
            if item is not None:
                return item
        # Drained segments that left the glob (renamed away or deleted) are released once
        # rotate_wait has passed since they left it and since their last write.
        now_ns = time.time_ns()
        known = [(s.path, s.mtime) for s in self.segments.values() if s.in_glob]
        known += [(mark.path, mtime) for mark, _size, mtime in self.idle.values()]
        for seg in list(self.segments.values()):
            if seg.skipping_from is not None or not seg.at_eof():
                # Not where the reader's limit stopped it: lines past the bound are whole.
                if room_under(self.limit, seg) > 0 and tail_abandoned(
                        seg, now_ns, self.idle_after, self.rotate_wait,
                        partial(written_after, seg, known, self.patterns)):
                    self._pending.append(skip_torn_tail(seg, self.name))
                    if not seg.in_glob:
                        self._release(seg)
                continue
            if not seg.in_glob:
                if (now_ns - seg.left_ns > self.rotate_wait * 1e9
                        and seg.unchanged_for(now_ns, self.rotate_wait)):
                    self._release(seg)
            elif now_ns - seg.mtime > self.idle_after * 1e9:
                self._make_idle(seg)
        return self._pending.pop(0) if self._pending else None

    def _scan(self) -> None:
        seen: set[str] = set()
        new: list[tuple[str, str, os.stat_result]] = []
        refused: dict[str, str] = {}
        dir_owners: dict[str, int | None] = {}
        for path in matched_files(self.patterns, self.exclude):
            try:
                st = os.stat(path) if self.follow_symlinks else os.lstat(path)
            except OSError:
                # Not only FileNotFoundError: a symlink loop (ELOOP) matched by the
                # glob raised out of next_item and stopped the sink's reader.
                continue
            why = refusal(st, dir_owner(path, dir_owners))
            if why is not None:
                refused[path] = why
                continue
            key = segment_key(st)
            seen.add(key)
            idle = self.idle.get(key)
            if idle is not None:
                if (st.st_size, st.st_mtime_ns) == idle[1:]:
                    continue
                self.known[key] = self.idle.pop(key)[0]
            seg = self.segments.get(key)
            if seg is not None:
                seg.path = path
                seg.in_glob = True
                seg.mtime = st.st_mtime_ns
                if (before := restart_if_rewritten(seg, st.st_size, self.name)) is not None:
                    self._retire(seg.key, before)
                continue
            new.append((path, key, st))
        # Adopt oldest first, so that seq orders equal mtimes: segments with a cursor
        # entry (tracked before) before new ones, then by mtime, then rotated names
        # (the live name plus a suffix, so longer) before the live file.
        new.sort(key=lambda n: (n[1] not in self.known, n[2].st_mtime_ns, -len(n[0]), n[0]))
        for path, key, st in new:
            try:
                self._adopt(path, key, st)
            except OSError as exc:
                log.warning("%s: cannot read journal segment %s: %s", self.name, path, exc)
        self.refused = report_refused(self.name, self.refused, refused)
        for key, seg in self.segments.items():
            if key not in seen and seg.in_glob:
                seg.in_glob = False
                seg.left_ns = time.time_ns()
                # copytruncated before it left (renamed, deleted): as in the glob
                if (before := restart_if_rewritten(seg, None, self.name)) is not None:
                    self._retire(seg.key, before)
        for key in [k for k in self.idle if k not in seen]:
            self._retire(key, self.idle.pop(key)[0])
            self._pending.append(Release(key))
        if self._first_scan:
            # Cursor entries whose file is gone cannot be read any more; keep them as
            # retired so that a copy of that file is still recognised.
            # A file that is there but could not be opened (EMFILE, EACCES) keeps its
            # entry for the next scan: releasing it made that file be read from 0.
            for key, cur in list(self.known.items()):
                if key not in self.segments and key not in seen:
                    if key in self.inherited and self._adopt_inherited(key):
                        continue
                    self._retire(key, cur)
                    self._pending.append(Release(key))
                    del self.known[key]
            self._first_scan = False
        take_held(self.inherited, self.offered.take())
        for key in [k for k in self.inherited if k not in seen and not self._had(k)]:
            # Not in the cursor: adopted after its last acknowledged batch (by the reader
            # this one replaces, or by the pass): read from its start.
            self._adopt_inherited(key)
        for _path, fd in self.inherited.values():  # not needed: a file found by name, known
            with contextlib.suppress(OSError):
                os.close(fd)
        self.inherited.clear()

    def _adopt(self, path: str, key: str, st: os.stat_result) -> None:
        # O_NONBLOCK: a FIFO swapped in after the lstat must not block the open (the
        # identity check below then refuses it); O_NOFOLLOW: nor a symbolic link.
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
        if not self.follow_symlinks:
            flags |= os.O_NOFOLLOW
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            log.warning("cannot open journal segment %s: %s", path, exc)
            return
        try:
            os.set_blocking(fd, True)
            self._adopt_fd(path, key, st, fd)
        except BaseException:
            # A read error here leaked the descriptor (and could lose the entry).
            with contextlib.suppress(OSError):
                os.close(fd)
            self.segments.pop(key, None)
            raise

    def _adopt_inherited(self, key: str) -> bool:
        """Read on from a handed-over descriptor of a segment that left the glob: released
        once drained and rotate_wait has passed, as the reader that held it would."""
        path, fd = self.inherited.pop(key)
        try:
            self._adopt_fd(path, key, os.fstat(fd), fd)
        except OSError as exc:
            log.warning("%s: cannot read journal segment %s: %s", self.name, path, exc)
            with contextlib.suppress(OSError):
                os.close(fd)
            self.segments.pop(key, None)
            return False
        seg = self.segments.get(key)
        if seg is None:
            return False
        seg.in_glob = False
        seg.left_ns = time.time_ns()
        return True

    def _adopt_fd(self, path: str, key: str, st: os.stat_result, fd: int) -> None:
        fst = os.fstat(fd)
        if segment_key(fst) != key or not stat.S_ISREG(fst.st_mode):
            os.close(fd)  # replaced between stat and open
            return
        size = fst.st_size
        head = _pread(fd, HEAD_BYTES, 0)
        offset = 0
        how = "new"
        cur = self.known.get(key)  # popped once tracked: kept if a read fails before
        if cur is not None:
            if content_matches(fd, size, head, cur):
                offset, how = cur.offset, "resumed"
            else:
                del self.known[key]
                self._retire(key, cur)
                how = "replaced (inode reused or rewritten)"
        copy_of = None
        if offset == 0:
            copy_of = find_copy(key, fd, size, head,
                                *copy_sources(self.segments, self.idle, self.known, self.retired))
            if copy_of is not None:
                if copy_of.offset > size:
                    os.close(fd)  # a copy still being written: look again next scan
                    return
                offset, how = copy_of.offset, f"copy of {copy_of.path}"
            elif self.start_at_end and self._first_scan:
                offset, how = _last_line_end(fd, size), "start at end"
        seg = _Segment(key, path, fd, offset, len(head), digest(head),
                       hash_before(fd, offset))
        seg.mtime = st.st_mtime_ns
        self._seq += 1
        # A copytruncate copy holds older content than the truncated original, which
        # may carry the same (coarse) mtime: the copy goes first on a tie.
        seg.seq = 0 if copy_of is not None else self._seq
        self.segments[key] = seg
        self.known.pop(key, None)
        log.debug("%s: tracking %s (%s) from offset %d", self.name, path, how, offset)
        if offset and how != "resumed":
            # A position the consumer's cursor does not hold yet (a copy continued at
            # its original's offset, start_at_end): hand it out as an empty chunk so
            # that it is committed. Otherwise, when nothing was appended before a
            # restart, the copy (or skipped file) was read again from 0.
            n = min(TAIL_BYTES, offset)
            self._pending.append(Chunk(key, path, offset, b"", seg.mark(),
                                       _pread(fd, n, offset - n)))

    def _read(self, seg: _Segment) -> Item | None:
        return read_lines(seg, self.limit, self.block_bytes, self.max_line_bytes, self.name)

    def _release(self, seg: _Segment) -> None:
        log.debug("%s: released %s (drained and gone)", self.name, seg.path)
        if self.on_release is not None and not seg.in_glob:
            self.on_release(seg.key, seg.path, seg.fd)
        self._retire(seg.key, seg.mark())
        with contextlib.suppress(OSError):
            os.close(seg.fd)
        del self.segments[seg.key]
        self._pending.append(Release(seg.key))

    def _make_idle(self, seg: _Segment) -> None:
        try:
            st = os.fstat(seg.fd)
            os.close(seg.fd)
        except OSError:
            return
        del self.segments[seg.key]
        self.idle[seg.key] = (seg.mark(), st.st_size, st.st_mtime_ns)

    def _had(self, key: str) -> bool:
        """Whether segment ``key`` is or was read here (open, idle or let go)."""
        return key in self.segments or key in self.idle or any(k == key for k, _ in self.retired)

    def _retire(self, key: str, cur: SegmentCursor) -> None:
        if cur.offset:
            self.retired.append((key, cur))
            del self.retired[:-_RETIRED_KEEP]


