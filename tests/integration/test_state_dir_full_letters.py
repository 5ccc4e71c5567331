"""The state dir is full (a small tmpfs) when a sink must write a dead letter or a
quarantine record, and frees again, with the daemon running.

Neither record may be dropped: the sink's committed cursor stays before the batch or
line it could not record (later batches may be delivered meanwhile, the cursor does not
jump over the gap), the daemon keeps running and says why, and once space returns the
record is written, the cursor moves on and every event is at the sink or in the record.

Needs root to mount the tmpfs (CI runs as root): without it the tests fail and say
why, they do not skip.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.helpers.state_dir import fill, metric, mount_small_state_dir, status_row, temp_files

from auditshipd.delivery.deadletters import DeadLetter, DeadLetterFile
from auditshipd.delivery.quarantine import QuarantineFile
from auditshipd.journal.cursor import CursorStore
from auditshipd.testing import WebhookReceiver, read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration


@pytest.fixture
def small_state_dir(ws):
    """ws.state mounted as a 1 MiB tmpfs, unmounted afterwards."""
    yield from mount_small_state_dir(ws)


class RejectingReceiver(WebhookReceiver):
    """A receiver answering HTTP 400 to every batch that holds one of the ``rejected``
    ids (the rest as a WebhookReceiver does); ``refused`` lists those batches' ids."""

    def __init__(self, rejected: set[str]) -> None:
        super().__init__()
        self.rejected = rejected
        self.refused: list[list[str]] = []

    def refused_ids(self) -> list[str]:
        with self._lock:
            return [eid for batch in self.refused for eid in batch]

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        ids = [e["id"] for e in msgspec.json.decode(await request.read())]
        if self.rejected.isdisjoint(ids):
            return await super()._handle(request)  # the body read is kept for it
        with self._lock:
            self.requests += 1
            self.refused.append(ids)
        return web.Response(status=400, text="event rejected by the receiver")


def _fill_until_reported(d, state: Path) -> Path:
    """Fill the state dir and keep it full until the daemon reports it cannot save there
    (a file it was replacing when we filled may have handed a block back since)."""
    return wait_for(lambda: (f := fill(state)) and b"cannot save cursor/status" in d.log()
                    and f, 30, message="the daemon reports the full state dir")


def _blocked_in_status(ws) -> dict | None:
    """The status row when it says the sink is held up by the full state dir: its last
    error is ENOSPC and current (not resolved), the state dir cannot be saved to."""
    row = status_row(ws)
    ok = (row["state"] in ("error", "blocked")
          and "No space left" in (row["last_error"] or "")
          and row["last_error_resolved_at"] is None
          and "No space left" in (row["persist_error"] or ""))
    return row if ok else None


def _bytes(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def _no_room_for_another(path: Path) -> None:
    """The file's last block has some room, less than the file holds: a second record of
    the same shape does not fit, so its write on the full filesystem is cut short (its
    first bytes land in that room, then ENOSPC)."""
    size = path.stat().st_size
    room = -size % 4096
    assert 0 < room < size, f"{path}: {size} bytes, {room} free in its last block"


def _bad_line(eid: str) -> bytes:
    """A journal line that is not JSON (cut short), about 3 kB: its quarantine record is
    bigger than the room left after another one in the file's last block."""
    return (b'{"id":"%s","action":"user.invited","actor":{"type":"user"},"metadata":{"note":"'
            % eid.encode() + b"x" * 3000)


# Each case either writes the first record of the file (its first block cannot be
# allocated) or appends to a file holding one already (the write fills the room left in
# the last block, then fails: the bytes written must not stay as a torn record).
EARLIER = pytest.mark.parametrize("earlier", [False, True], ids=["first-record", "appended"])


@EARLIER
def test_dead_letter_waits_for_space_then_is_written(ws, small_state_dir, earlier):
    """A batch answered 400 while the state dir is full: its dead letter cannot be
    written, so the committed cursor stays before it (the next batch is delivered, the
    cursor does not jump the gap), the log and `status` say why, the dead-letter file is
    unchanged (nothing torn) and no temp file is left. Once space returns the letter
    holds exactly that batch, the cursor catches up, and every id is at the receiver or
    in a letter, once."""
    first = write_events(ws.journal, "a", 60)
    early = write_events(ws.journal, "x", 20) if earlier else []
    scratch = ws.root / "chosen.jsonl"  # outside the journal's paths
    chosen = write_events(scratch, "b", 20)
    base = len(first) + len(early)
    with RejectingReceiver(set(early + chosen)) as rcv:
        # Every group of events written is a multiple of max_events: each batch is full
        # when cut, so the chosen events make one batch of their own.
        ws.write_config(f"""
[[sinks]]
name = "web"
type = "http"
url = "{rcv.url}"
concurrency = 2
[sinks.batch]
max_events = 20
timeout = 2.0
[sinks.retry]
initial_backoff = 0.05
max_backoff = 0.5
attempt_timeout = 5.0
""")
        with ws.daemon() as d:
            d.wait_started()
            store = CursorStore(ws.state)
            wait_for(lambda: store.exists("web") and store.load("web").acked_events == base,
                     30, message="first cursor saved")
            wait_for(lambda: (ws.state / "status" / "web.json").exists(), 10,
                     message="status file")
            dlq = DeadLetterFile(ws.state, "web")
            if earlier:
                assert dlq.count() == (1, 20)
                _no_room_for_another(dlq.path)
            filler = _fill_until_reported(d, small_state_dir)
            before = _bytes(dlq.path)

            with open(ws.journal, "ab") as f:  # the chosen batch, in one write
                f.write(scratch.read_bytes())
            wait_for(lambda: rcv.refused_ids() == early + chosen, 30, message="the 400")
            wait_for(lambda: b"sink web is NOT advancing" in d.log()
                     or metric(ws, "auditshipd_events_dead_lettered_total", "web") > len(early),
                     30, message="the dead letter blocked (or written)")
            assert metric(ws, "auditshipd_events_dead_lettered_total", "web") == len(early), \
                "a dead letter was reported written to the full state dir"
            later = write_events(ws.journal, "c", 20)
            # concurrency = 2: the first batches may arrive in either order
            wait_for(lambda: Counter(rcv.ids()) == Counter(first + later), 30,
                     message="the next batch is delivered meanwhile")

            # The letter is not written, nothing torn is left, and the cursor does not
            # move past its batch: neither in memory (metrics) nor on disk.
            assert _bytes(dlq.path) == before
            assert metric(ws, "auditshipd_cursor_acked_events", "web") == base
            assert metric(ws, "auditshipd_cursor_lag_events", "web") == 40
            assert store.load("web").acked_events == base
            assert temp_files(small_state_dir) == []
            assert re.search(rb"sink web is NOT advancing: .*No space left on device", d.log())
            # The batch delivered meanwhile does not make the error look resolved (for
            # longer than the retry interval; the log repeats it only every 30 s).
            row = wait_for(lambda: _blocked_in_status(ws), 20,
                           message="status reports the blocked dead letter as current")
            assert row["dead_letter_count"] == len(early) and row["acked_events"] == base
            assert d.poll() is None

            filler.unlink()
            wait_for(lambda: dlq.count() == (1 + earlier, len(early) + 20), 30,
                     message="the dead letter, written")
            wait_for(lambda: store.load("web").acked_events == base + 40, 30,
                     message="cursor past the dead-lettered batch")
            last = write_events(ws.journal, "d", 40)
            wait_for(lambda: Counter(rcv.ids()) == Counter(first + later + last), 30,
                     message="delivery goes on")
            wait_for(lambda: store.load("web").acked_events == base + 80, 30, message="cursor")
            row = wait_for(lambda: (r := status_row(ws))["persist_error"] is None
                           and r["state"] == "active" and r, 30, message="status recovered")
            assert row["lag_events"] == 0 and row["dead_letter_count"] == len(early) + 20
            assert metric(ws, "auditshipd_events_dead_lettered_total", "web") == len(early) + 20
            assert temp_files(small_state_dir) == []
            assert d.terminate() == 0

        scan = dlq.scan()
        assert scan.unreadable == []
        assert [[e["id"] for e in x.events] for x in scan.letters] == [early] * earlier + [chosen]
        letter = scan.letters[-1]
        assert "HTTP 400" in letter.error and letter.attempts == 1 and not letter.retryable
        # Every id written is at the receiver or dead-lettered, exactly once.
        dead = [e["id"] for x in scan.letters for e in x.events]
        assert Counter(rcv.ids()) + Counter(dead) == Counter(first + early + chosen + later + last)


@EARLIER
def test_quarantine_waits_for_space_then_is_written(ws, small_state_dir, earlier):
    """A line that is not JSON while the state dir is full: its quarantine record cannot
    be written, so the committed cursor stays before that line (later lines are
    delivered, the cursor does not jump it), the log and `status` say why, the quarantine
    file is unchanged (nothing torn) and no temp file is left. Once space returns the
    record names the line's offset and holds its text, the cursor catches up, and every
    id is at the sink or in quarantine, once."""
    ws.write_config(f"""
[[sinks]]
name = "f"
type = "file"
path = "{ws.out}"
concurrency = 2
[sinks.batch]
max_events = 10
timeout = 0.05
""")
    first = write_events(ws.journal, "a", 50)
    with open(ws.journal, "ab") as f:
        early_offset = f.tell()
        if earlier:
            f.write(_bad_line("early-000000") + b"\n")
    base = len(first) + earlier
    with ws.daemon() as d:
        d.wait_started()
        store = CursorStore(ws.state)
        wait_for(lambda: store.exists("f") and store.load("f").acked_events == base, 30,
                 message="first cursor saved")
        wait_for(lambda: (ws.state / "status" / "f.json").exists(), 10, message="status file")
        qfile = QuarantineFile(ws.state, "f")
        if earlier:
            assert qfile.count() == 1
            _no_room_for_another(qfile.path)
        filler = _fill_until_reported(d, small_state_dir)
        before = _bytes(qfile.path)

        bad = _bad_line("bad-000000")
        with open(ws.journal, "ab") as f:
            bad_offset = f.tell()
            f.write(bad + b"\n")
        wait_for(lambda: b"cannot write quarantine, sink NOT advancing" in d.log()
                 or metric(ws, "auditshipd_events_quarantined_total", "f") > earlier,
                 30, message="the quarantine record blocked (or written)")
        assert metric(ws, "auditshipd_events_quarantined_total", "f") == earlier, \
            "a quarantine record was reported written to the full state dir"
        later = write_events(ws.journal, "c", 30)
        wait_for(lambda: Counter(read_jsonl_ids(ws.out)) == Counter(first + later), 30,
                 message="the lines after it are delivered meanwhile")

        # No record, nothing torn, and the cursor stays before the line: in memory
        # (metrics) and on disk.
        assert _bytes(qfile.path) == before
        assert metric(ws, "auditshipd_cursor_acked_events", "f") == base
        assert metric(ws, "auditshipd_cursor_lag_events", "f") == 1 + 30
        assert store.load("f").acked_events == base
        assert temp_files(small_state_dir) == []
        assert re.search(rb"cannot write quarantine, sink NOT advancing: .*No space left",
                         d.log())
        # The lines delivered meanwhile do not make the error look resolved (for longer
        # than the retry interval; the log repeats it only every 30 s).
        row = wait_for(lambda: _blocked_in_status(ws), 20,
                       message="status reports the blocked quarantine as current")
        assert row["quarantine_count"] == earlier and row["acked_events"] == base
        assert d.poll() is None

        filler.unlink()
        wait_for(lambda: qfile.count() == 1 + earlier, 30,
                 message="the quarantine record, written")
        wait_for(lambda: store.load("f").acked_events == base + 1 + 30, 30,
                 message="cursor past the quarantined line")
        last = write_events(ws.journal, "d", 20)
        wait_for(lambda: Counter(read_jsonl_ids(ws.out)) == Counter(first + later + last), 30,
                 message="delivery goes on")
        wait_for(lambda: store.load("f").acked_events == base + 1 + 30 + 20, 30,
                 message="cursor")
        row = wait_for(lambda: (r := status_row(ws))["persist_error"] is None
                       and r["state"] == "active" and r, 30, message="status recovered")
        assert row["lag_events"] == 0 and row["quarantine_count"] == 1 + earlier
        assert metric(ws, "auditshipd_events_quarantined_total", "f") == 1 + earlier
        assert temp_files(small_state_dir) == []
        assert d.terminate() == 0

    records = qfile.read()
    assert [r.offset for r in records] == [early_offset] * earlier + [bad_offset]
    record = records[-1]
    assert record.line == bad.decode() and not record.truncated
    assert record.reason.startswith("invalid JSON") and record.path == str(ws.journal)
    # Every id written is delivered or in quarantine (inside its line), exactly once.
    quarantined = [eid for r in records for eid in re.findall(r'"id":"([^"]+)"', r.line)]
    assert Counter(read_jsonl_ids(ws.out)) + Counter(quarantined) == Counter(
        first + ["early-000000"] * earlier + ["bad-000000"] + later + last)


def test_replay_on_a_full_state_dir_keeps_every_letter_and_says_so(ws, small_state_dir):
    """`dlq replay` delivers the first letter, the second fails again, then the file
    cannot be rewritten (ENOSPC): every letter stays as it was (the first is sent again
    by the next replay: at least once), no temp file is left, and the command exits 1
    saying why and that the letters stay, without a traceback."""
    out, script = ws.root / "replayed.jsonl", ws.root / "script.txt"
    script.write_text("ok\npermanent\n")
    ws.write_config(f"""
[[sinks]]
name = "flaky"
type = "flaky"
out = "{out}"
script = "{script}"
""")
    dlf = DeadLetterFile(ws.state, "flaky")
    for ids in (["a1", "a2"], ["b1"]):
        dlf.append(DeadLetter(
            sink="flaky", error="earlier failure", retryable=False, attempts=1,
            first_attempt_at="2024-05-01T12:00:00Z", last_attempt_at="2024-05-01T12:00:00Z",
            dead_lettered_at="2024-05-01T12:00:00Z",
            events=[{"id": i, "action": "user.invited", "occurred_at": "2024-05-01T12:00:00Z"}
                    for i in ids]))
    before = dlf.path.read_bytes()
    filler = fill(small_state_dir)
    res = subprocess.run([sys.executable, "-m", "auditshipd.cli", "dlq", "replay", "--sink",
                          "flaky", "-c", str(ws.config)], capture_output=True, text=True,
                         cwd=ws.root, timeout=60)
    assert read_jsonl_ids(out) == ["a1", "a2"]
    assert dlf.path.read_bytes() == before
    assert temp_files(ws.state) == []
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert "No space left on device" in res.stderr
    assert "3 event(s) in 2 dead letter(s) stay" in res.stderr
    filler.unlink()
