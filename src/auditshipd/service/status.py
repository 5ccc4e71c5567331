"""``auditshipd status``: per-sink state, cursor, lag, dead letters and quarantine.

Everything comes from the state dir and the journal files, never from the daemon, so it
answers the same whether the daemon runs or not. Whether a sink is live is decided from
its status file (``state_dir/status/SINK.json``, rewritten when it changes, marked
``stopped`` when the sink stops) and the daemon's heartbeat beside it (``.daemon.json``,
rewritten every second): a sink is live while the run that wrote its file beats; a
heartbeat older than :data:`STALE_AFTER` seconds means the daemon is gone (killed,
crashed, not started).

Lag is measured against the *committed* cursor (what the sink acknowledged), over the
files the journal globs match now: ``size - offset`` for a tracked segment, the whole
file for one the cursor does not know. ``lag_events`` counts the newlines after the
cursor, reading at most ``budget`` bytes per file and extrapolating from the average
line length beyond that (``lag_events_exact`` says which).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from ..config import Config, SinkConfig
from ..delivery.quarantine import QuarantineFile
from ..delivery.status import HEARTBEAT_NAME
from ..journal.cursor import CursorStore, SegmentCursor, segment_key
from ..journal.segments import dir_owner, matched_files, refusal, resume_offset
from ..timestamps import parse_time

__all__ = [
    "STALE_AFTER",
    "STATUS_INTERVAL",
    "Lag",
    "journal_lag",
    "sink_status",
]

# The daemon rewrites its heartbeat every STATUS_INTERVAL seconds; two
# missed refreshes plus slack for a busy machine mean nobody is writing it any more.
STATUS_INTERVAL = 1.0
STALE_AFTER = 2 * STATUS_INTERVAL + 3.0
DEFAULT_BUDGET = 64 * 1024 * 1024
_BLOCK = 1024 * 1024


class Lag(NamedTuple):
    bytes: int
    events: int
    exact: bool


class _Letter(msgspec.Struct):
    events: list[msgspec.Raw]


_letter = msgspec.json.Decoder(_Letter).decode
_decode = msgspec.json.Decoder().decode



def journal_lag(patterns: Iterable[str], segments: Mapping[str, SegmentCursor], *,
                budget: int = DEFAULT_BUDGET, from_end: bool = False,
                follow_symlinks: bool = False) -> Lag:
    """Bytes and lines after the cursor ``segments`` in the files matched now.

    ``from_end``: a sink without a cursor yet that starts at the end of the journal;
    what is already there is not pending for it.
    """
    files: list[tuple[str, str, int]] = []
    owners: dict[str, int | None] = {}
    for path in matched_files(patterns):
        try:
            st = os.stat(path) if follow_symlinks else os.lstat(path)
        except OSError:
            continue
        if refusal(st, dir_owner(path, owners)) is None:  # what the reader would read
            files.append((path, segment_key(st), st.st_size))
    if from_end and not segments:
        return Lag(0, 0, True)
    total_bytes = total_events = 0
    exact = True
    for path, key, size in files:
        # Opened as the reader opens them: a link or FIFO swapped in since is refused.
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
        try:
            with open(os.open(path, flags), "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    continue
                start = resume_offset(f.fileno(), key, size, segments)
                events, counted = _count_lines(f, start, size, budget)
        except OSError:
            continue
        total_bytes += size - start
        total_events += events
        exact = exact and counted
    return Lag(total_bytes, total_events, exact)




def _count_lines(f: Any, start: int, size: int, budget: int) -> tuple[int, bool]:
    """(lines, exact): complete lines in ``[start, size)``, estimated past ``budget``."""
    f.seek(start)
    remaining = size - start
    limit = min(remaining, budget)
    lines = read = 0
    while read < limit:
        block = f.read(min(_BLOCK, limit - read))
        if not block:
            return lines, True  # shrank while we read: what we saw is all there is
        lines += block.count(b"\n")
        read += len(block)
    if read >= remaining:
        return lines, True
    estimate = lines + round((remaining - read) * lines / read) if read else lines
    return estimate, False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = _decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _dead_letters(path: Path) -> tuple[int, int]:
    """(records, events); a torn last line (crash mid-append) is not counted."""
    records = events = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    letter = _letter(line)
                except msgspec.DecodeError:
                    continue
                records += 1
                events += len(letter.events)
    except FileNotFoundError:
        pass
    return records, events


def _vouched_at(doc: dict[str, Any], beat: dict[str, Any] | None) -> str | None:
    """When the daemon last said this status holds: the file's own time, or the
    heartbeat's when the run that wrote the file still beats."""
    at = doc.get("updated_at")
    if beat is not None and doc.get("run") and beat.get("run") == doc.get("run"):
        hb = beat.get("updated_at")
        if isinstance(hb, str) and (not isinstance(at, str) or
                                    (parse_time(hb) or 0.0) > (parse_time(at) or 0.0)):
            return hb
    return at if isinstance(at, str) else None


def _state(sc: SinkConfig, doc: dict[str, Any] | None, now: float,
           beat: dict[str, Any] | None = None) -> str:
    if not sc.enabled or doc is None or doc.get("state") == "stopped":
        return "inactive"
    updated = parse_time(_vouched_at(doc, beat))
    if updated is None or now - updated > STALE_AFTER:
        return "inactive"
    state = doc.get("state")
    if doc.get("persist_error"):  # delivering maybe, but its cursor is not being saved
        return "error"
    if state in ("error", "blocked"):
        return str(state)
    return "active"


def _one_sink(config: Config, sc: SinkConfig, now: float, budget: int,
              beat: dict[str, Any] | None) -> dict[str, Any]:
    state_dir = config.state_dir
    doc = _read_json(state_dir / "status" / f"{sc.name}.json")
    store = CursorStore(state_dir)
    cursor_error = None
    try:
        cursor = store.load(sc.name)
        segments = cursor.segments
    except ValueError as exc:
        cursor, segments, cursor_error = None, {}, str(exc)
    lag = journal_lag(config.journal.paths, segments, budget=budget,
                      from_end=sc.start_at == "end" and not store.exists(sc.name),
                      follow_symlinks=config.journal.follow_symlinks)
    records, events = _dead_letters(state_dir / "deadletter" / f"{sc.name}.jsonl")
    doc = doc or {}
    last_success = doc.get("last_success_at")
    row: dict[str, Any] = {
        "name": sc.name,
        "type": sc.type,
        "enabled": sc.enabled,
        "state": _state(sc, doc or None, now, beat),
        "cursor": [{"segment": key, "path": c.path, "offset": c.offset}
                   for key, c in sorted(segments.items())],
        "acked_events": cursor.acked_events if cursor is not None else 0,
        "lag_bytes": lag.bytes,
        "lag_events": lag.events,
        "lag_events_exact": lag.exact,
        "last_success_at": last_success,
        "last_synced_at": last_success,
        "last_error": doc.get("last_error"),
        "last_error_at": doc.get("last_error_at"),
        # Set when a delivery succeeded after last_error: history, not the current state.
        "last_error_resolved_at": doc.get("last_error_resolved_at"),
        "delivered": doc.get("delivered", 0),
        "read_events": doc.get("read_events", 0),
        "dead_letter_count": events,
        "dead_letter_records": records,
        "quarantine_count": QuarantineFile(state_dir, sc.name).count(),
        "status_updated_at": _vouched_at(doc, beat),
        "persist_error": doc.get("persist_error"),
        "persist_error_at": doc.get("persist_error_at"),
        "persist_errors": doc.get("persist_errors", 0),
    }
    if cursor_error is not None:
        row["cursor_error"] = cursor_error
    return row


def sink_status(config: Config, *, budget: int = DEFAULT_BUDGET,
                now: float | None = None) -> list[dict[str, Any]]:
    """One row per configured sink, from the state dir and the journal files only."""
    now = time.time() if now is None else now
    beat = _read_json(config.state_dir / "status" / HEARTBEAT_NAME)
    return [_one_sink(config, sc, now, budget, beat) for sc in config.sinks]
