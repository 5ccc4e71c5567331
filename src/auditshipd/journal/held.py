"""Descriptors of journal segments that left the glob (renamed away, deleted), handed
from a reader to the one taking over its cursor: a segment deleted meanwhile cannot be
opened by name again, so its unread lines are read on from these or lost."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from .cursor import segment_key

if TYPE_CHECKING:
    from .segments import _Segment

__all__ = ["Held", "KeptSegments", "dup_left_glob", "keep_only", "take_held"]

Held = dict[str, tuple[str, int]]  # segment key -> (path, descriptor)


def dup_left_glob(segments: Mapping[str, _Segment], keys: Iterable[str] | None = None) -> Held:
    """Duplicates of the descriptors of the ``segments`` (among ``keys``) that left the
    glob (renamed away, deleted; also since the reader's last scan): a reader taking over a cursor in them reads on from
    these (it owns and closes them) instead of losing their unread lines."""
    out: Held = {}
    for key in segments if keys is None else keys:
        seg = segments.get(key)
        if seg is not None and (not seg.in_glob or not _reachable(seg)):
            with contextlib.suppress(OSError):
                out[key] = (seg.path, os.dup(seg.fd))
    return out


def _reachable(seg: _Segment) -> bool:
    """Whether ``seg``'s path still names its file. A reader scans only when it reads
    (a sink waiting for a delivery slot does not): a segment deleted or renamed away
    since its last scan still looks in the glob, and no name reaches it any more."""
    try:
        st = os.stat(seg.path)
    except OSError:
        return False
    return segment_key(st) == seg.key


def take_held(held: Held, more: Held) -> Held:
    """``held`` (descriptors for a reader's ``inherit``) with those of ``more`` it lacks;
    ``more`` is emptied (its duplicates closed)."""
    for key, (path, fd) in more.items():
        if key in held:
            with contextlib.suppress(OSError):
                os.close(fd)
        else:
            held[key] = (path, fd)
    more.clear()
    return held


def keep_only(more: Held, wanted: Callable[[str], bool]) -> Held:
    """The entries of ``more`` whose key is ``wanted``; the others are closed, and
    ``more`` is emptied."""
    out = {}
    for key, (path, fd) in more.items():
        if wanted(key):
            out[key] = (path, fd)
        else:
            with contextlib.suppress(OSError):
                os.close(fd)
    more.clear()
    return out


class KeptSegments:
    """Duplicates of the descriptors of segments a reader let go (drained, out of the
    glob) that some sink's acknowledged cursor still points into: a sink restarted or
    changed by a reload before its in-flight lines were acknowledged reads them again
    from here. Filled from the reading thread, read and pruned from the event loop."""

    def __init__(self) -> None:
        self._fds: Held = {}
        self._lock = threading.Lock()
        # Other readers' boxes offered each segment kept (see watch): replaced, not
        # changed in place, as the reading thread goes through it.
        self._watchers: frozenset[KeptSegments] = frozenset()
        self.closed = False  # its reader is closed: it takes nothing more
        # Boxes of sinks whose driver stopped, watched until the next driver of that
        # sink takes its box (see hand_over): sink name -> box.
        self._between: dict[str, KeptSegments] = {}

    def __len__(self) -> int:
        return len(self._fds)

    def segment_keys(self) -> list[str]:
        with self._lock:
            return list(self._fds)

    def watch(self, box: KeptSegments) -> None:
        """``box`` (the :attr:`JournalReader.offered` of a sink reading alone beside the
        shared pass) gets a duplicate of each segment kept from now on: that reader may
        never have seen it (it scans only when it reads, and a sink waiting for its start
        or a delivery slot does not), and once the file is deleted no name reaches it.
        Until ``box`` is closed (with its reader): a sink stopping still hands over what
        it was offered while it drained its deliveries."""
        self._watchers = frozenset(b for b in self._watchers if not b.closed) | {box}

    def hand_over(self, name: str) -> KeptSegments:
        """Sink ``name``'s driver stops (a reload, a crash): the box offered the segments
        let go from now on until the driver that replaces it takes it (:meth:`take_over`):
        it drains its deliveries first, its successor may start seconds later, and those
        segments, which it never read, may be deleted by then. One already waiting for
        that sink (its driver stopped before it took it) goes on."""
        box = self._between.get(name)
        if box is None:
            box = self._between[name] = KeptSegments()
            self.watch(box)
        return box

    def take_over(self, name: str) -> KeptSegments | None:
        """The box waiting for sink ``name``'s new driver, if any (still watched)."""
        return self._between.pop(name, None)

    def waiting(self, name: str) -> list[str]:
        """The segments in the box waiting for sink ``name``'s new driver."""
        box = self._between.get(name)
        return box.segment_keys() if box is not None else []

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Close the boxes waiting for sinks that are not ``keep`` (removed, or whose
        driver joined the pass: level with it, it needs none)."""
        for name in [n for n in self._between if not keep(n)]:
            self._between.pop(name).close()

    def keep(self, key: str, path: str, fd: int) -> None:
        for box in self._watchers:
            box.keep(key, path, fd)
        with self._lock:
            if not self.closed and key not in self._fds:
                with contextlib.suppress(OSError):
                    self._fds[key] = (path, os.dup(fd))

    def add_to(self, held: Held, keys: Iterable[str]) -> Held:
        """``held`` with duplicates of the kept segments among ``keys`` it lacks."""
        with self._lock:
            for key in keys:
                if key in self._fds and key not in held:
                    path, fd = self._fds[key]
                    with contextlib.suppress(OSError):
                        held[key] = (path, os.dup(fd))
        return held

    def take(self) -> Held:
        """Every kept segment (the caller owns the descriptors); none is kept any more."""
        with self._lock:
            out, self._fds = self._fds, {}
        return out

    def close(self) -> None:
        """Close the kept segments; none is kept from now on."""
        with self._lock:
            self.closed = True
            for _path, fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()

    def prune(self, needed: Callable[[str], bool]) -> None:
        """Close the kept segments no sink needs any more."""
        with self._lock:
            for key in [k for k in self._fds if not needed(k)]:
                with contextlib.suppress(OSError):
                    os.close(self._fds.pop(key)[1])
