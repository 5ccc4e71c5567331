"""The daemon as a subprocess against what it must not ship or cannot deliver: journal
lines over ``max_line_bytes``, a receiver refusing credentials (401), a receiver failing
for a while (500).

What must hold: every id written to the journal is found at the sink, in that
sink's dead-letter file or in quarantine; with no crash, each id arrives exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tests.helpers.sinks import http_sink

from auditshipd.delivery.deadletters import DeadLetterFile
from auditshipd.delivery.quarantine import QuarantineFile
from auditshipd.journal.cursor import CursorStore
from auditshipd.testing import WebhookReceiver, wait_for, write_events

pytestmark = pytest.mark.integration

TOKEN = "tok-3f9c1a7e5b2d4c6e8a0b"
# Longer than any block the daemon reads (4 MiB): such a line is skipped while read.
BIG = 5_000_000


def cli(ws, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditshipd.cli", *args, "-c", str(ws.config)],
                          capture_output=True, text=True, cwd=ws.root, timeout=60)


def append_long_line(path: Path, eid: str, size: int) -> tuple[int, int]:
    """Append an event line of ``size`` bytes (newline excluded) with id ``eid``; return
    its offset and its length."""
    head = json.dumps({"id": eid, "action": "user.invited",
                       "occurred_at": "2026-01-01T00:00:00Z", "metadata": {"pad": ""}})
    line = head[:-3] + "x" * (size - len(head)) + '"}}'
    assert len(line) == size
    with open(path, "ab") as f:
        offset = f.tell()
        f.write(line.encode() + b"\n")
    return offset, size


def test_line_over_max_line_bytes_is_quarantined_and_the_rest_ships_once(ws):
    """Lines over max_line_bytes (one longer than a read block, one inside a block, a
    long one appended while the daemon runs) become quarantine records naming the file,
    offset and reason; the cursor moves past them; every other event arrives once."""
    with WebhookReceiver() as rcv:
        ws.write_config(http_sink(rcv.url, batch=1000), journal_extra="max_line_bytes = 1024")
        a = write_events(ws.journal, "a", 10, seq=True)
        big = append_long_line(ws.journal, "big", BIG)  # longer than a read block
        b = write_events(ws.journal, "b", 10, seq=True)
        mid = append_long_line(ws.journal, "mid", 2_000)  # over the limit, inside a block
        c = write_events(ws.journal, "c", 10, seq=True)
        qfile = QuarantineFile(ws.state, "web")
        with ws.daemon() as d:
            d.wait_started()
            wait_for(lambda: set(rcv.ids()) >= set(a + b + c), 15, message="events around")
            wait_for(lambda: qfile.count() == 2, 10, message="two quarantine records")
            live = append_long_line(ws.journal, "live", BIG)
            e = write_events(ws.journal, "e", 10, seq=True)
            wait_for(lambda: set(rcv.ids()) >= set(e), 15, message="events after the live line")
            wait_for(lambda: qfile.count() == 3, 10, message="third quarantine record")
            assert d.poll() is None, "the daemon keeps running"
            out = cli(ws, "status", "--json")
            assert out.returncode == 0, out.stderr
            row = next(r for r in json.loads(out.stdout)["sinks"] if r["name"] == "web")
            assert row["quarantine_count"] == 3
            assert d.terminate() == 0
        assert Counter(rcv.ids()) == Counter(a + b + c + e), "each event once, no long line"
    records = qfile.read()
    assert [(r.offset, r.length) for r in records] == [big, mid, live]
    for r, (_, length) in zip(records, [big, mid, live], strict=True):
        assert Path(r.path).resolve() == ws.journal.resolve()
        assert r.sink == "web"
        assert r.reason == f"line of {length} bytes is over max_line_bytes (1024)"
    assert all(r.line is not None and r.line.startswith('{"id": "') for r in records)
    assert [r.truncated for r in records] == [True, False, True]
    assert len(records[0].line or "") < 4096  # a preview of the line, which stays in the journal
    assert records[1].line == ws.journal.read_bytes()[mid[0]:mid[0] + mid[1]].decode()
    state = CursorStore(ws.state).load("web")
    assert sum(s.offset for s in state.segments.values()) == ws.journal.stat().st_size


def test_401_dead_letters_without_blocking_and_replay_delivers_each_once(ws):
    """HTTP 401 (with the token echoed in the answer) for the first two batches: they are
    dead-lettered after one attempt, not retryable, the token masked; later events are
    delivered meanwhile; dlq replay delivers the letters and empties the file."""
    rejections = 2
    with WebhookReceiver(bearer_token=TOKEN) as rcv:
        # The token echoed bare (no "Bearer" before it): only the sink's own secrets mask it.
        rcv.set_script([(401, {}, f"invalid credentials {TOKEN}")] * rejections)
        ws.write_config(http_sink(rcv.url, batch=50, extra=f'bearer_token = "{TOKEN}"'))
        first = write_events(ws.journal, "r", 100, seq=True)  # two batches of 50
        dlq = DeadLetterFile(ws.state, "web")
        with ws.daemon() as d:
            d.wait_started()
            wait_for(lambda: dlq.count() == (rejections, 100), 15, message="dead letters")
            later = write_events(ws.journal, "l", 30, seq=True)
            wait_for(lambda: set(rcv.ids()) >= set(later), 15, message="cursor moved on")
            assert d.terminate() == 0
        assert rcv.requests == rejections + len(rcv.batches)
        assert Counter(rcv.ids()) == Counter(later)
        letters = dlq.read()
        assert [e["id"] for x in letters for e in x.events] == first
        for letter in letters:
            assert letter.sink == "web"
            assert letter.attempts == 1 and letter.retryable is False
            assert "HTTP 401" in letter.error and "invalid credentials" in letter.error
        assert TOKEN not in dlq.path.read_text()
        assert TOKEN.encode() not in d.log()
        assert b"HTTP 401" in d.log()

        out = cli(ws, "dlq", "replay", "--sink", "web", "--json")
        assert out.returncode == 0, out.stderr
        assert TOKEN not in out.stdout + out.stderr
        assert json.loads(out.stdout.splitlines()[-1])["replayed"] == 100
        assert dlq.read() == []
        counts = rcv.counts()
        assert rcv.rejected_auth == 0, "every request carried the token"
    assert set(counts) == set(first + later)
    assert set(counts.values()) == {1}, "each event exactly once"


def test_500_is_retried_and_every_event_arrives_once(ws):
    """HTTP 500 for three requests, then 2xx: the batch is retried (log says so, the
    receiver saw the failed requests), every event arrives once, nothing dead-lettered."""
    failures = 3
    with WebhookReceiver() as rcv:
        rcv.set_script([500] * failures)
        ws.write_config(http_sink(rcv.url, batch=100))
        ids = write_events(ws.journal, "f", 300, seq=True)
        with ws.daemon() as d:
            d.wait_started()
            wait_for(lambda: set(rcv.ids()) >= set(ids), 15, message="delivery after 500s")
            more = write_events(ws.journal, "m", 20, seq=True)
            wait_for(lambda: set(rcv.ids()) >= set(more), 15, message="later events")
            assert d.terminate() == 0
        assert rcv.requests == failures + len(rcv.batches), "the 500 answers were real requests"
        counts = rcv.counts()
    assert set(counts) == set(ids + more)
    assert set(counts.values()) == {1}, "each event exactly once"
    log = d.log()
    for attempt in range(1, failures + 1):
        assert f"attempt {attempt} failed, retrying in".encode() in log
    assert log.count(b"HTTP 500") >= failures
    assert b"dead-lettered" not in log
    dlq = DeadLetterFile(ws.state, "web")
    assert dlq.count() == (0, 0) and not dlq.path.exists()
