"""``auditshipd status`` from hand-built state dirs: states, cursors, lag, counts."""

from __future__ import annotations

import datetime as _dt
import json
import os
import textwrap
from pathlib import Path

import msgspec

from auditshipd.cli import main
from auditshipd.config import Config, parse_config
from auditshipd.delivery.deadletters import DeadLetter, DeadLetterFile
from auditshipd.delivery.quarantine import QuarantineFile
from auditshipd.journal.cursor import (
    HEAD_BYTES,
    TAIL_BYTES,
    CursorState,
    CursorStore,
    SegmentCursor,
    digest,
)
from auditshipd.service.status import STALE_AFTER, journal_lag, sink_status

LINE = b'{"id":"e-%06d","action":"user.invited","occurred_at":"2024-01-01T00:00:00Z"}\n'


def make_config(tmp: Path, sinks: str = "") -> Config:
    journal = tmp / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    sinks = sinks or """
        [[sinks]]
        name = "siem"
        type = "http"
        url = "http://127.0.0.1:1/x"
    """
    text = textwrap.dedent(f"""
        [journal]
        path = "{journal}"
        paths = ["{journal}*"]
        state_dir = "{tmp / 'state'}"
    """) + textwrap.dedent(sinks)
    return parse_config(text, str(tmp / "auditshipd.toml"))


def write_lines(path: Path, start: int, n: int) -> None:
    with open(path, "ab") as f:
        for i in range(start, start + n):
            f.write(LINE % i)


def cursor_at(path: Path, offset: int) -> tuple[str, SegmentCursor]:
    """The cursor entry the reader would persist after acknowledging up to ``offset``."""
    data = path.read_bytes()
    st = os.stat(path)
    head = data[:HEAD_BYTES]
    return f"{st.st_dev}:{st.st_ino}", SegmentCursor(
        path=str(path), offset=offset, head_len=len(head), head_hash=digest(head),
        tail_hash=digest(data[max(0, offset - TAIL_BYTES):offset]))


def iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds")


def write_status(config: Config, name: str, **fields: object) -> None:
    doc = {"sink": name, "type": "http", "state": "active", "read_events": 0, "delivered": 0,
           "updated_at": iso(1_700_000_000.0), **fields}
    p = config.state_dir / "status" / f"{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(msgspec.json.encode(doc))


def test_no_state_dir_everything_pending_and_inactive(tmp_path):
    """Never ran: state inactive, the whole journal is lag, counts are zero."""
    config = make_config(tmp_path)
    write_lines(Path(config.journal.path), 0, 10)
    [row] = sink_status(config)
    assert row["name"] == "siem" and row["type"] == "http"
    assert row["state"] == "inactive"
    assert row["cursor"] == []
    assert row["lag_bytes"] == 10 * len(LINE % 0)
    assert row["lag_events"] == 10 and row["lag_events_exact"] is True
    assert row["dead_letter_count"] == row["dead_letter_records"] == 0
    assert row["quarantine_count"] == 0
    assert row["last_success_at"] is None and row["last_synced_at"] is None


def test_cursor_offset_gives_lag_and_unknown_rotated_file_counts_whole(tmp_path):
    """Lag = size - committed offset on the tracked segment, plus whole unknown files."""
    config = make_config(tmp_path)
    journal = Path(config.journal.path)
    rotated = journal.with_name("audit.jsonl.1")
    write_lines(rotated, 0, 5)
    write_lines(journal, 5, 20)
    line = len(LINE % 0)
    key, cur = cursor_at(journal, 12 * line)
    CursorStore(config.state_dir).save(CursorState(sink="siem", segments={key: cur},
                                                   acked_events=12))
    [row] = sink_status(config)
    assert row["cursor"] == [{"segment": key, "path": str(journal), "offset": 12 * line}]
    assert row["acked_events"] == 12
    assert row["lag_bytes"] == 8 * line + 5 * line
    assert row["lag_events"] == 13


def test_partial_last_line_counts_bytes_not_events(tmp_path):
    """A line without its newline yet is pending bytes but not an event."""
    config = make_config(tmp_path)
    journal = Path(config.journal.path)
    write_lines(journal, 0, 3)
    with open(journal, "ab") as f:
        f.write(b'{"id":"half')
    lag = journal_lag(config.journal.paths, {})
    assert lag.events == 3 and lag.exact
    assert lag.bytes == 3 * len(LINE % 0) + len(b'{"id":"half')


def test_rewritten_file_under_same_inode_counts_whole(tmp_path):
    """A cursor whose head hash no longer matches (file rewritten) does not hide lag."""
    config = make_config(tmp_path)
    journal = Path(config.journal.path)
    write_lines(journal, 0, 10)
    key, cur = cursor_at(journal, 10 * len(LINE % 0))
    with open(journal, "r+b") as f:  # same inode, other content
        f.write(b"X")
    lag = journal_lag(config.journal.paths, {key: cur})
    assert lag.bytes == journal.stat().st_size
    assert lag.events == 10


def test_truncated_file_below_cursor_counts_from_zero(tmp_path):
    """A file shorter than the cursor offset was truncated: all of it is pending."""
    config = make_config(tmp_path)
    journal = Path(config.journal.path)
    write_lines(journal, 0, 10)
    key, cur = cursor_at(journal, 10 * len(LINE % 0))
    os.truncate(journal, 0)
    write_lines(journal, 100, 2)
    lag = journal_lag(config.journal.paths, {key: cur})
    assert lag.events == 2 and lag.bytes == 2 * len(LINE % 0)


def test_copytruncate_copy_resumes_at_old_offset(tmp_path):
    """A copy of a tracked file (copytruncate) is pending only after the old offset."""
    config = make_config(tmp_path)
    journal = Path(config.journal.path)
    write_lines(journal, 0, 10)
    line = len(LINE % 0)
    key, cur = cursor_at(journal, 7 * line)
    copy = journal.with_name("audit.jsonl.1")
    copy.write_bytes(journal.read_bytes())
    os.truncate(journal, 0)  # the original keeps its inode, now with other content
    write_lines(journal, 10, 1)
    lag = journal_lag(config.journal.paths, {key: cur})
    assert lag.events == 3 + 1
    assert lag.bytes == 3 * line + line


def test_compressed_and_hidden_files_are_ignored(tmp_path):
    """Files the reader excludes (.gz, dot-files) are not lag."""
    config = make_config(tmp_path)
    journal = Path(config.journal.path)
    write_lines(journal, 0, 2)
    write_lines(journal.with_name("audit.jsonl.1.gz"), 0, 50)
    assert journal_lag(config.journal.paths, {}).events == 2


def test_lag_events_estimated_past_budget(tmp_path):
    """Past the read budget lag_events is extrapolated and flagged as not exact."""
    config = make_config(tmp_path)
    journal = Path(config.journal.path)
    write_lines(journal, 0, 1000)
    lag = journal_lag(config.journal.paths, {}, budget=10 * len(LINE % 0))
    assert lag.exact is False
    assert lag.events == 1000
    assert lag.bytes == 1000 * len(LINE % 0)


def test_start_at_end_without_cursor_has_no_lag(tmp_path):
    """A start_at = "end" sink that never ran owes nothing that is already there."""
    config = make_config(tmp_path, """
        [[sinks]]
        name = "late"
        type = "file"
        path = "/dev/null"
        start_at = "end"
    """)
    write_lines(Path(config.journal.path), 0, 5)
    [row] = sink_status(config)
    assert row["lag_bytes"] == 0 and row["lag_events"] == 0


def test_states_from_status_file_age_and_content(tmp_path):
    """Fresh status file -> its state; stale or 'stopped' -> inactive; disabled -> inactive."""
    config = make_config(tmp_path, """
        [[sinks]]
        name = "a"
        type = "file"
        path = "/dev/null"
        [[sinks]]
        name = "b"
        type = "file"
        path = "/dev/null"
        [[sinks]]
        name = "c"
        type = "file"
        path = "/dev/null"
        [[sinks]]
        name = "d"
        type = "file"
        path = "/dev/null"
        enabled = false
    """)
    t = 1_700_000_000.0
    write_status(config, "a", state="error", last_error="HTTP 503",
                 last_error_at=iso(t - 1), updated_at=iso(t - 0.5))
    write_status(config, "b", state="blocked", updated_at=iso(t - 1))
    write_status(config, "c", state="stopped", updated_at=iso(t))
    write_status(config, "d", state="active", updated_at=iso(t))

    def states(now: float) -> dict[str, str]:
        return {r["name"]: r["state"] for r in sink_status(config, now=now)}

    assert states(t) == {"a": "error", "b": "blocked", "c": "inactive", "d": "inactive"}
    later = states(t + STALE_AFTER + 1.5)
    assert later == {"a": "inactive", "b": "inactive", "c": "inactive", "d": "inactive"}
    write_status(config, "a", state="starting", updated_at=iso(t))
    assert states(t)["a"] == "active"
    row = next(r for r in sink_status(config, now=t) if r["name"] == "b")
    assert row["last_error"] is None


def test_counts_from_status_dead_letters_and_quarantine(tmp_path):
    """delivered, last success/error come from the status file; DLQ and quarantine counted."""
    config = make_config(tmp_path)
    t = 1_700_000_000.0
    write_status(config, "siem", delivered=42, read_events=50, last_success_at=iso(t - 3),
                 last_error="attempt 1 failed: HTTP 500", last_error_at=iso(t - 2),
                 state="error", updated_at=iso(t))
    dlf = DeadLetterFile(config.state_dir, "siem")
    for n in (3, 4):
        dlf.append(DeadLetter(sink="siem", error="HTTP 400", retryable=False, attempts=1,
                              first_attempt_at=iso(t), last_attempt_at=iso(t),
                              dead_lettered_at=iso(t), events=[{"id": f"x{i}"} for i in range(n)]))
    with open(dlf.path, "ab") as f:
        f.write(b'{"sink":"siem","error":"torn')  # a crash mid-append: not counted
    qf = QuarantineFile(config.state_dir, "siem")
    qf.write([qf.record("1:2", "/j", i * 10, "invalid JSON", b"{nope") for i in range(6)])
    [row] = sink_status(config, now=t)
    assert row["state"] == "error"
    assert row["delivered"] == 42 and row["read_events"] == 50
    assert row["last_success_at"] == row["last_synced_at"] == iso(t - 3)
    assert row["last_error"] == "attempt 1 failed: HTTP 500"
    assert row["last_error_at"] == iso(t - 2)
    assert row["dead_letter_records"] == 2 and row["dead_letter_count"] == 7
    assert row["quarantine_count"] == 6


def test_corrupt_cursor_is_reported_not_ignored(tmp_path):
    """An unreadable cursor file is named in the row and the journal counts as pending."""
    config = make_config(tmp_path)
    write_lines(Path(config.journal.path), 0, 4)
    p = CursorStore(config.state_dir).path("siem")
    p.parent.mkdir(parents=True)
    p.write_bytes(b"{torn")
    [row] = sink_status(config)
    assert "unreadable" in row["cursor_error"]
    assert row["lag_events"] == 4


def test_cli_json_and_table(tmp_path, capsys):
    """`auditshipd status --json` prints the rows; without --json a table."""
    config = make_config(tmp_path)
    cfg_path = Path(config.source)
    cfg_path.write_text(textwrap.dedent(f"""
        [journal]
        path = "{config.journal.path}"
        paths = {json.dumps(config.journal.paths)}
        state_dir = "{config.state_dir}"
        [[sinks]]
        name = "siem"
        type = "http"
        url = "http://127.0.0.1:1/x"
    """))
    write_lines(Path(config.journal.path), 0, 3)
    assert main(["status", "-c", str(cfg_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in doc["sinks"]] == ["siem"]
    assert doc["sinks"][0]["lag_events"] == 3
    assert main(["status", "-c", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("SINK")
    assert "siem" in out and "inactive" in out


def test_an_unchanged_sink_stays_live_while_the_run_that_wrote_it_beats(tmp_path):
    """Status files are rewritten only when they change: the daemon's heartbeat
    (status/.daemon.json) says its sinks still run, for the run that wrote them only."""
    config = make_config(tmp_path)
    t = 1_700_000_000.0
    write_status(config, "siem", state="active", run="run-a", updated_at=iso(t - 600))
    beat = config.state_dir / "status" / ".daemon.json"

    def row(now: float) -> dict:
        return next(r for r in sink_status(config, now=now) if r["name"] == "siem")

    assert row(t)["state"] == "inactive"  # no heartbeat: the file alone is too old
    beat.write_bytes(msgspec.json.encode({"pid": 1, "run": "run-a", "updated_at": iso(t - 1)}))
    assert row(t)["state"] == "active" and row(t)["status_updated_at"] == iso(t - 1)
    assert row(t + STALE_AFTER + 1)["state"] == "inactive"  # the daemon stopped beating
    # A later run beats, but this file was left by an earlier one (the sink is gone).
    beat.write_bytes(msgspec.json.encode({"pid": 2, "run": "run-b", "updated_at": iso(t - 1)}))
    assert row(t)["state"] == "inactive" and row(t)["status_updated_at"] == iso(t - 600)
