"""The status file of a running sink: ``state_dir/status/SINK.json``, and the daemon's
heartbeat beside them.

The driver keeps a :class:`SinkStats`; the commit saver rewrites the file when it changed
(whole-file replace, no fsync: it is a report, not a delivery guarantee); the driver
marks it ``stopped`` at the end; ``auditshipd status`` reads it. That the daemon still
runs is said once for all sinks, by the heartbeat file (:class:`Heartbeat`, rewritten
every second): an unchanged sink's file is never rewritten, so a thousand idle sinks cost
nothing. Each status file carries the daemon run (``run``) that wrote it, so a file
left by an earlier run is never taken for a live sink. When the state dir cannot take a
write (full), the failure is reported here too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path

import msgspec

from ..durable import atomic_write, overwrite_in_place
from ..scrub import scrub_secrets
from ..timestamps import now_rfc3339

__all__ = ["HEARTBEAT_NAME", "RUN_ID", "Heartbeat", "SinkStats", "StatusFile"]

_encode = msgspec.json.Encoder().encode
# This process's run of the daemon: written in every status file and in the heartbeat.
RUN_ID = secrets.token_hex(8)
# In state_dir/status/, beside the sinks' files (a sink name never starts with a dot).
HEARTBEAT_NAME = ".daemon.json"


class Heartbeat:
    """``state_dir/status/.daemon.json``: the daemon's pid and run, and when it last said
    it runs (rewritten every second by the commit saver)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "status" / HEARTBEAT_NAME
        self.started_at = now_rfc3339()

    def beat(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, _encode({"pid": os.getpid(), "run": RUN_ID,
                                         "started_at": self.started_at,
                                         "updated_at": now_rfc3339()}), durable=False)

class SinkStats(msgspec.Struct, kw_only=True):
    sink: str
    type: str
    state: str = "starting"  # starting | active | error | stopped | blocked
    started_at: str = ""
    read_events: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    quarantined: int = 0
    filtered: int = 0
    retries: int = 0
    last_success_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    # When a success followed last_error (the sink recovered); None while it is current.
    last_error_resolved_at: str | None = None
    # Set while cursors or status cannot be written to the state dir (a full disk):
    # delivery goes on, but a restart would resend everything since the last save.
    persist_error: str | None = None
    persist_error_at: str | None = None
    persist_errors: int = 0
    run: str = RUN_ID  # the daemon run that writes this file (see Heartbeat)
    updated_at: str = ""


class StatusFile:
    """Writes one sink's :class:`SinkStats` to its status file."""

    def __init__(self, state_dir: Path, name: str, stats: SinkStats, logger: logging.Logger) -> None:
        self.name = name
        self.state_dir = state_dir
        self.path = Path(state_dir) / "status" / f"{name}.json"
        self.stats = stats
        self.logger = logger
        self._last_write = 0.0
        self._last_key: tuple[object, ...] = ()
        # The saver's round and the driver's final write may run in two threads at
        # once; atomic_write's temp name is per process: one write at a time.
        self._lock = threading.Lock()
        self._warned = 0.0

    def persist_failed(self, exc: Exception, failures: int) -> None:
        """Cursor or status could not be saved (``failures`` in a row): say so."""
        message = scrub_secrets(f"cannot save cursor/status in {self.state_dir}:"
                                f" {type(exc).__name__}: {exc}") or ""
        self.stats.persist_errors += 1
        if self.stats.persist_error is None:
            self.stats.persist_error_at = now_rfc3339()
        self.stats.persist_error = message
        now = time.monotonic()
        if failures == 1 or now - self._warned > 30:
            self._warned = now
            self.logger.error("sink %s: %s (attempt %d; retrying; a restart now would"
                              " resend the events delivered since the last save)",
                              self.name, message, failures)
        # The status file cannot be replaced (no room for a temp file): write the
        # report over the existing one, whose blocks are already allocated.
        self.stats.updated_at = now_rfc3339()
        with contextlib.suppress(OSError):
            overwrite_in_place(self.path, _encode(self.stats))

    def persist_recovered(self, failures: int) -> None:
        self.logger.warning("sink %s: cursor and status saved again after %d failed"
                            " attempt(s)", self.name, failures)
        self.stats.persist_error = self.stats.persist_error_at = None
        self._last_write = 0.0
        with contextlib.suppress(OSError):
            self.write(False)

    def write_if_changed(self) -> None:
        """Rewrite the file when what it says changed (the heartbeat says it is live)."""
        key = msgspec.structs.astuple(self.stats)[:-1]  # all but updated_at
        if key == self._last_key:
            return
        self.write(True)
        self._last_key = key

    def write(self, force: bool) -> None:
        """Rewrite the file (at most once a second unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_write < 1.0:
            return
        self._last_write = now
        self.stats.updated_at = now_rfc3339()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Whole-file replace (readers never see half a file), but no fsync: it is a
        # report, not a delivery guarantee.
        with self._lock:
            atomic_write(self.path, _encode(self.stats), durable=False)
