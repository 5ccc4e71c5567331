"""The journal writer: the library applications use to record audit events.

``AuditJournal.record`` never raises into its caller. Recording must not interfere with
the application: on any failure (disk full, read-only file system, permission, a value
that cannot be serialised) it returns ``False`` and logs the failure once through
``logging`` (again only after a success in between).

Whole lines, never interleaved, from many threads and many processes: every append
holds a thread lock and an ``flock`` on a sibling lock file (``.NAME.lock``, hidden so
journal globs do not match it) and is one ``write`` on an ``O_APPEND`` descriptor. A
failed partial write is cut back so the journal never holds a torn line; a line another
process left unfinished (it crashed mid-write) is ended before the next record, which
would otherwise be glued to it: the fragment becomes a line of its own (the daemon
quarantines it) and the record stays whole.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import logging
import os
import stat
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
from ulid import ULID

from ..durable import fsync_dir
from ..timestamps import format_rfc3339, now_rfc3339

__all__ = ["EVENT_VERSION", "AuditJournal", "daemon_journal", "group_shared", "new_event_id",
           "open_with_mode"]

EVENT_VERSION = 1
log = logging.getLogger("auditshipd.journal")
_encode = msgspec.json.Encoder().encode


def new_event_id() -> str:
    """A sortable unique id (ULID: 48-bit milliseconds + 80 random bits, Crockford base32)."""
    return str(ULID())



class AuditJournal:
    """Append audit events, one JSON object per line, to ``path``.

    ``fsync``: ``"never"`` (default; the OS flushes), ``"always"`` (after every record)
    or ``"interval"`` (at most every ``fsync_interval`` seconds).
    ``rotate_bytes``: when the file has reached this size, it is renamed to
    ``PATH.YYYYMMDDTHHMMSS.ffffffZ`` and a new file is started (the reader drains the
    renamed segment, so nothing is lost).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: Literal["never", "always", "interval"] = "never",
        fsync_interval: float = 1.0,
        rotate_bytes: int | None = None,
        mode: int = 0o640,
    ) -> None:
        # A misspelt mode silently meant "never", a negative rotate_bytes a new segment
        # for every record: programming errors, reported at construction (record()
        # itself never raises).
        if fsync not in ("never", "always", "interval"):
            raise ValueError(f"fsync must be 'never', 'always' or 'interval', not {fsync!r}")
        if rotate_bytes is not None and rotate_bytes < 0:
            raise ValueError(f"rotate_bytes must be positive (or None), not {rotate_bytes}")
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.rotate_bytes = rotate_bytes
        self.mode = mode
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._readable = False  # whether the journal file is open for reading too
        self._lock_fd: int | None = None
        self._last_fsync = time.monotonic()
        self._failing = False
        self._pid = os.getpid()
        _live.add(self)

    # -- public API -------------------------------------------------------------------

    def record(
        self,
        action: str,
        *,
        actor: Mapping[str, Any],
        targets: Iterable[Mapping[str, Any]] = (),
        organization: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        occurred_at: str | _dt.datetime | None = None,
        id: str | None = None,  # the event's field name
    ) -> bool:
        """Append one event. Returns True when it is in the journal, False otherwise."""
        try:
            line = self._build_line(
                action, actor, targets, organization, context, metadata, occurred_at, id
            )
        except Exception as exc:  # the caller's data, not our I/O: still never raise
            self._fail(f"cannot encode audit event {action!r}: {type(exc).__name__}: {exc}")
            return False
        return self.append_line(line)

    def append_line(self, line: bytes) -> bool:
        """Append an already encoded event (no newline inside, one is added)."""
        try:
            # Inside the try: a str (or None) passed here raised TypeError to the caller.
            line = bytes(line)
            if not line.endswith(b"\n"):
                line += b"\n"
            with self._lock:
                self._append_locked(line)
        except Exception as exc:
            self._fail(f"cannot append to audit journal {self.path}: {type(exc).__name__}: {exc}")
            return False
        if self._failing:
            self._failing = False
            log.warning("audit journal %s is writable again", self.path)
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self.fsync != "never" and self._pid == os.getpid():
                # fsync="interval" only syncs on a later record: without this, the last
                # records before close stayed unsynced whatever the interval.
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
            self._drop_descriptors()

    def _drop_descriptors(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = None
        self._ino = None

    def __enter__(self) -> AuditJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _build_line(
        self,
        action: str,
        actor: Mapping[str, Any],
        targets: Iterable[Mapping[str, Any]],
        organization: Mapping[str, Any] | None,
        context: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        occurred_at: str | _dt.datetime | None,
        event_id: str | None,
    ) -> bytes:
        if not isinstance(action, str) or not action:
            raise ValueError("action must be a non-empty string")
        if not isinstance(actor, Mapping):
            raise TypeError("actor must be a mapping such as {'type': 'user', 'email': ...}")
        if isinstance(occurred_at, _dt.datetime):
            occurred = format_rfc3339(occurred_at)
        elif occurred_at is None:
            occurred = now_rfc3339()
        else:
            occurred = str(occurred_at)
        event: dict[str, Any] = {
            # A non-str id (a UUID, an int) was written as is and then quarantined by
            # every consumer ("'id' is not a non-empty string"): store its text.
            "id": new_event_id() if event_id is None or event_id == "" else str(event_id),
            "action": action,
            "occurred_at": occurred,
            "version": EVENT_VERSION,
        }
        if organization is not None:
            event["organization"] = dict(organization)
        event["actor"] = dict(actor)
        event["targets"] = [dict(t) for t in targets]
        if context is not None:
            event["context"] = dict(context)
        if metadata is not None:
            event["metadata"] = dict(metadata)
        line = _encode(event)
        if b"\n" in line:  # msgspec escapes control characters; belt and braces
            raise ValueError("encoded event contains a newline")
        return line + b"\n"

    def _append_locked(self, line: bytes) -> None:
        if self._pid != os.getpid():  # forked: descriptors are shared with the parent
            # Our copies only: closing them releases nothing the parent holds (an flock
            # belongs to the open file description, still open in the parent).
            self._drop_descriptors()
            self._pid = os.getpid()
        if self._lock_fd is not None and os.fstat(self._lock_fd).st_nlink == 0:
            # The lock file (or its whole directory) was deleted: every record failed
            # from then on (the directory was never made again), and a new process
            # would lock a new file, no longer excluding us. Start over.
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
        if self._lock_fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = open_with_mode(self.lock_path, os.O_RDWR | os.O_CLOEXEC, self.mode)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            fd = self._current_fd()
            size = os.fstat(fd).st_size
            if self.rotate_bytes and size > 0 and size + len(line) > self.rotate_bytes:
                self._rotate()
                fd = self._current_fd()
                size = 0
            if size > 0 and self._readable and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # end the line a crashed writer left unfinished
            self._write_all(fd, line, size)
            if self.fsync == "always" or (
                self.fsync == "interval"
                and time.monotonic() - self._last_fsync >= self.fsync_interval
            ):
                os.fsync(fd)
                self._last_fsync = time.monotonic()
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _current_fd(self) -> int:
        """The descriptor of the file now at ``path`` (another process may have rotated)."""
        try:
            st = os.stat(self.path)
            current = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._fd is not None and current == self._ino:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:  # readable too, to see whether the last line is whole
            fd = open_with_mode(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC, self.mode)
            self._readable = True
        except PermissionError:  # a file this writer may only append to
            fd = open_with_mode(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, self.mode)
            self._readable = False
        st = os.fstat(fd)
        self._fd, self._ino = fd, (st.st_dev, st.st_ino)
        return fd

    def _rotate(self) -> None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        # rename() silently replaces an existing file: two rotations stamped alike (a
        # coarse or stepped-back clock, tiny rotate_bytes) lost a whole segment. We hold
        # the writers' flock, so checking first is race-free among writers.
        n = 0
        while os.path.lexists(target):
            n += 1
            target = self.path.with_name(f"{self.path.name}.{stamp}-{n:04d}")
        if self._fd is not None:
            os.fsync(self._fd)
        os.rename(self.path, target)
        with contextlib.suppress(OSError):
            fsync_dir(self.path.parent)

    @staticmethod
    def _write_all(fd: int, data: bytes, size_before: int) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                n = os.write(fd, view[written:])
                if n <= 0:
                    raise OSError("write returned 0")
                written += n
        except OSError:
            if written:
                # Never leave a torn line behind: the next record would be glued to it.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size_before)
            raise

    def _fail(self, message: str) -> None:
        if not self._failing:
            self._failing = True
            log.error("%s (further failures are not logged until a record succeeds)", message)


# A fork while another thread held a journal's thread lock left the child's copy locked
# for ever: its first record() hung. The child has only the forking thread, so it gets
# fresh locks (its descriptors are replaced on first use, see _append_locked).
_live: weakref.WeakSet[AuditJournal] = weakref.WeakSet()


def _reset_locks_after_fork() -> None:
    for journal in list(_live):
        journal._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_after_fork)


def open_with_mode(path: str | os.PathLike[str], flags: int, mode: int) -> int:
    """Open ``path``, creating it with exactly ``mode``: the process umask (022 for most
    services) would take the group's write bit away, and the application and the daemon
    writing one journal through its group would lock each other out."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return os.open(path, flags | os.O_CREAT, mode)
    try:
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd


def daemon_journal(path: str | os.PathLike[str]) -> AuditJournal:
    """auditshipd's own writer to the journal at ``path``: the daemon's audit events
    (portal access, config changes) and those of its commands (``emit``, ``token``). In a
    group-shared (setgid) directory the files it creates are group-writable (0o660), as
    the application's are, so that neither locks the other out."""
    return AuditJournal(path, mode=0o660 if group_shared(Path(path).parent) else 0o640)


def group_shared(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` is shared through its group (setgid: new files take its
    group), where journal files are created group-writable."""
    try:
        return bool(os.stat(directory).st_mode & stat.S_ISGID)
    except OSError:
        return False
