"""Durable per-sink cursors on the journal (like a consumer group's offsets).

A cursor maps each tracked segment (``"dev:inode"``) to the byte offset, on a line
boundary, up to which the sink has acknowledged (or dead-lettered) every event.
Alongside the offset it keeps what identifies the file's content: a hash of its first
bytes (``head_len``/``head_hash``) and of the bytes just before the offset
(``tail_hash``), so a truncated, rewritten or replaced file under a reused inode is
detected on restart instead of being read from a wrong offset (fluent-bit#4895,
vector#25079).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import msgspec

from ..durable import atomic_write_many, fsync_dir

__all__ = ["HEAD_BYTES", "TAIL_BYTES", "CursorState", "CursorStore", "SegmentCursor", "digest",
           "segment_key"]

HEAD_BYTES = 256
# The window before the offset must span at least one whole event (its unique id):
# audit events often end with identical bytes (same action, context, timestamp
# format), and a 64-byte window matched a rewritten file at the same offset, which
# was then resumed there instead of read from 0 (vector#25079's checksum collision).
TAIL_BYTES = 4096


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def segment_key(st: os.stat_result) -> str:
    """A segment's identity, ``dev:inode``, from its file's stat."""
    return f"{st.st_dev}:{st.st_ino}"


class SegmentCursor(msgspec.Struct, kw_only=True):
    path: str
    offset: int
    head_len: int
    head_hash: str
    tail_hash: str


class CursorState(msgspec.Struct, kw_only=True):
    version: int = 1
    sink: str = ""
    segments: dict[str, SegmentCursor] = msgspec.field(default_factory=dict)
    # Events acknowledged (delivered or dead-lettered) since the cursor was created.
    acked_events: int = 0
    # The stream's chain position (integrity.chain.ChainState) after the last acked
    # event: saved in the same atomic write as the offsets, so a re-send after a crash
    # carries the same seq and hash.
    integrity: dict[str, Any] | None = None
    # The sink has started from this cursor once: start_at was applied then, and from
    # now on the journal is read on from ``segments``, every file from its start when it
    # is empty (every segment it was in was read and let go). Without it, an empty
    # cursor that had acknowledged nothing was taken as a fresh sink's.
    started: bool = False


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CursorState)

# Temp names are per process, not per thread: two threads saving the same cursor (the
# saver's round still running in its worker thread while shutdown saves again)
# truncated each other's temp file and one renamed it under the other, leaving a torn
# cursor file (the sink then refuses to start) or a FileNotFoundError. Saves into one
# cursor directory are serialised (loads need not: the rename is atomic).
_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _file_lock(path: Path) -> threading.Lock:
    with _file_locks_guard:
        return _file_locks.setdefault(str(path), threading.Lock())


class CursorStore:
    """Reads and atomically writes the cursor files under ``state_dir/cursors``."""

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.dir = Path(state_dir) / "cursors"
        self._dir = str(self.dir)
        self._saved_acked: dict[str, int] = {}

    def path(self, sink: str) -> Path:
        return self.dir / f"{sink}.json"

    def exists(self, sink: str) -> bool:
        return self.path(sink).exists()

    def load(self, sink: str) -> CursorState:
        """The sink's cursor, or an empty one. A corrupt file is an error, never ignored."""
        p = self.path(sink)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            self._saved_acked.pop(sink, None)
            return CursorState(sink=sink)
        try:
            state = _decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ValueError(
                f"cursor file {p} is unreadable ({exc}); move it away to restart that sink"
                " from start_at, or restore it"
            ) from None
        # What is on disk now is the baseline for this store's later saves of the sink
        # (a sink removed, its cursor deleted and added again starts over from 0).
        self._saved_acked[sink] = state.acked_events
        return state

    def save(self, state: CursorState) -> None:
        self.save_many([state])

    def save_many(self, states: list[CursorState]) -> None:
        """Save the cursors: each written to a temp file, all made durable together, then
        each renamed over its cursor file; then one fsync of the directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.dir):
            files: list[tuple[str, bytes]] = []
            saved: dict[str, int] = {}
            latest: dict[str, CursorState] = {}
            for state in states:  # one file per sink: its latest snapshot
                if state.sink not in latest or state.acked_events >= latest[state.sink].acked_events:
                    latest[state.sink] = state
            for state in latest.values():
                # acked_events only grows: a snapshot older than the one already saved
                # (a slow save finishing after the shutdown save) would move the cursor
                # back and re-send everything acked in between.
                if state.acked_events < self._saved_acked.get(state.sink, 0):
                    continue
                files.append((f"{self._dir}/{state.sink}.json", _encoder.encode(state)))
                saved[state.sink] = state.acked_events
            if not files:
                return
            atomic_write_many(files)
            self._saved_acked.update(saved)
            fsync_dir(self.dir)
