"""The daemon as a subprocess, end to end: rotation, crashes, outages, dead letters.

What must hold: every id written to the journal is found at the sink, in that
sink's dead-letter file or in quarantine; duplicates stay within what the delivery
rules allow.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from tests.helpers.sinks import file_sink, http_sink

from auditshipd import AuditJournal
from auditshipd.delivery.deadletters import DeadLetterFile
from auditshipd.journal.cursor import CursorStore
from auditshipd.testing import WebhookReceiver, read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration

WRITER = """
import sys
from auditshipd import AuditJournal
path, prefix, n, rotate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
j = AuditJournal(path, rotate_bytes=rotate or None)
for i in range(n):
    ok = j.record("user.provisioned", id=f"{prefix}-{i:06d}",
                  actor={"type": "user", "email": f"admin{i % 7}@acme.test", "name": "Ada"},
                  targets=[{"type": "user", "email": f"u{i}@acme.test"}],
                  organization={"slug": "acme"}, metadata={"seq": i})
    assert ok
"""


def spawn_writer(path: Path, prefix: str, n: int, rotate: int = 0) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), prefix, str(n), str(rotate)])



def test_many_writers_with_rotation_every_id_arrives(ws):
    """20,000 events from 4 writer processes with size rotation, daemon running: all arrive once."""
    ws.write_config(file_sink(ws.out))
    with ws.daemon() as d:
        d.wait_started()
        writers = [spawn_writer(ws.journal, f"w{k}", 5000, rotate=300_000) for k in range(4)]
        for w in writers:
            assert w.wait(120) == 0
        expected = {f"w{k}-{i:06d}" for k in range(4) for i in range(5000)}
        wait_for(lambda: len(read_jsonl_ids(ws.out)) >= 20000, 120, message="20,000 events")
        assert d.terminate() == 0
    ids = read_jsonl_ids(ws.out)
    assert set(ids) == expected
    assert len(ids) == len(expected), "no crash happened, so no duplicate is allowed"
    assert len(list(ws.journal.parent.glob("audit.jsonl.*"))) >= 3, "rotation happened"


def test_kill_9_many_times_loses_nothing(ws):
    """kill -9 at random moments (12 times) while a writer writes: every id arrives, dups bounded."""
    batch, concurrency = 50, 2
    with WebhookReceiver() as rcv:
        ws.write_config(http_sink(rcv.url, batch=batch, concurrency=concurrency))
        writer = spawn_writer(ws.journal, "k", 20000)
        d = ws.daemon()
        rnd = random.Random(1234)
        kills = 0
        try:
            for _ in range(12):
                d.start()
                time.sleep(rnd.uniform(0.3, 1.2))  # the random moment is the point here
                d.kill()
                kills += 1
            assert writer.wait(120) == 0
            d.start()
            d.wait_started()
            wait_for(lambda: len(set(rcv.ids())) >= 20000, 180, message="all events")
            assert d.terminate() == 0
        finally:
            if d.poll() is None:
                d.kill()
            writer.kill()
        counts = rcv.counts()
    expected = {f"k-{i:06d}" for i in range(20000)}
    assert set(counts) == expected
    duplicates = sum(c - 1 for c in counts.values())
    # Per crash at most the in-flight batches plus those acknowledged during the cursor
    # save round under way (docs/architecture.md): about two batches, but a round is two
    # fsyncs, and on a busy disk (the whole suite running, other work beside it: once
    # 10,050 at a load of 7) more batches are acknowledged before it ends. A resend from
    # an older position would be thousands at every kill.
    bound = kills * (concurrency + 2) * batch * 5
    assert duplicates <= bound, f"{duplicates} duplicates > {bound}"


def test_outage_503_refused_hanging_then_recovery(ws):
    """503 with Retry-After, 500, 429, refused connections, a receiver that hangs without
    answering (timeouts), then recovery: nothing lost, retries visible in the log."""
    rcv = WebhookReceiver().start()
    port = rcv.port
    rcv.set_script([(503, {"Retry-After": "1"}), 500, 429])
    ws.write_config(http_sink(rcv.url))
    ids = write_events(ws.journal, "o", 500, seq=True)
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: rcv.requests >= 4, 30, message="scripted failures consumed")
        rcv.stop()  # now connections are refused
        more = write_events(ws.journal, "p", 300, seq=True)
        wait_for(lambda: d.log().count(b"cannot connect") >= 2, 30, message="refused retries")
        rcv2 = WebhookReceiver(port=port)
        rcv2.set_script(["hang", "hang"])
        rcv2.start()
        try:
            wait_for(lambda: d.log().count(b"attempt timed out") >= 2, 30, message="timeouts")
            wait_for(lambda: set(rcv.ids()) | set(rcv2.ids()) >= set(ids + more), 60,
                     message="recovery")
            assert d.terminate() == 0
        finally:
            rcv2.stop()
    log = d.log()
    assert b"HTTP 503" in log and b"retry after 1s" in log and b"retrying in" in log
    assert b"HTTP 500" in log and b"HTTP 429" in log
    # Only answered batches are recorded (a hanging receiver records nothing), so an event
    # arrives twice only if the first receiver took its batch as it was being stopped and
    # the answer was lost: one batch at most.
    counts = rcv.counts() + rcv2.counts()
    assert set(counts) == set(ids + more)
    assert sum(c - 1 for c in counts.values()) <= 100, counts.most_common(3)


def test_400_goes_to_dead_letters_and_replay_delivers(ws):
    """A 400 sends the batch to the dead-letter file, the cursor moves on, dlq replay delivers."""
    with WebhookReceiver() as rcv:
        rcv.set_script([400])
        ws.write_config(http_sink(rcv.url, batch=1000))
        first = write_events(ws.journal, "a", 200, seq=True)
        with ws.daemon() as d:
            d.wait_started()
            dlq = DeadLetterFile(ws.state, "web")
            wait_for(lambda: dlq.count()[1] == 200, 30, message="dead letters")
            later = write_events(ws.journal, "b", 100, seq=True)
            wait_for(lambda: set(rcv.ids()) == set(later), 30, message="cursor moved on")
            assert d.terminate() == 0
        letters = dlq.read()
        assert letters[0].error.startswith("receiver answered HTTP 400") or "HTTP 400" in letters[0].error
        assert letters[0].attempts == 1 and not letters[0].retryable
        assert [e["id"] for e in letters[0].events] == first
        out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "dlq", "list", "-c",
                              str(ws.config)], capture_output=True, text=True, cwd=ws.root)
        assert out.returncode == 0 and "web" in out.stdout and "200" in out.stdout
        out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "dlq", "replay", "--sink",
                              "web", "--json", "-c", str(ws.config)], capture_output=True, text=True,
                             cwd=ws.root)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.splitlines()[-1])["replayed"] == 200
        assert Counter(rcv.ids()) == Counter(first + later)
        assert dlq.read() == []


def test_sigterm_during_backoff_exits_in_time_and_keeps_cursor(ws):
    """SIGTERM while retrying: clean exit within the deadline, cursor not past undelivered."""
    with WebhookReceiver() as rcv:
        rcv.set_script([], default=(503, {"Retry-After": "30"}))
        ws.write_config(http_sink(rcv.url), shutdown_timeout=2.0)
        ids = write_events(ws.journal, "s", 50, seq=True)
        d = ws.daemon().start()
        d.wait_started()
        wait_for(lambda: rcv.requests >= 1, 30, message="first attempt")
        t0 = time.monotonic()
        assert d.terminate(timeout=15) == 0
        assert time.monotonic() - t0 < 8
        state = CursorStore(ws.state).load("web")
        assert all(s.offset == 0 for s in state.segments.values())
        rcv.set_script([], default=200)
        with ws.daemon() as d2:
            d2.wait_started()
            wait_for(lambda: set(rcv.ids()) == set(ids), 30, message="delivery after restart")
            assert d2.terminate() == 0


def test_malformed_lines_are_quarantined_with_offsets(ws):
    """Invalid JSON, arrays, scalars, bad UTF-8, missing fields: quarantined; the rest ships."""
    good = write_events(ws.journal, "g", 3, seq=True)
    with open(ws.journal, "ab") as f:
        bad_start = f.tell()
        f.write(b"{not json\n[1,2]\n42\n\xff\xfe{\"id\":\"x\"}\n{\"id\":\"n1\",\"action\":\"a\"}\n\n")
        f.write(b'{"id":"crlf","action":"a.b","occurred_at":"2026-01-01T00:00:00Z"}\r\n')
    ws.write_config(file_sink(ws.out))
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: len(read_jsonl_ids(ws.out)) == 4, 30, message="good events")
        qfile = ws.state / "quarantine" / "local-file.jsonl"
        wait_for(lambda: qfile.exists() and len(qfile.read_text().splitlines()) == 5, 30)
        assert d.terminate() == 0
    assert read_jsonl_ids(ws.out) == [*good, "crlf"]
    records = [json.loads(x) for x in qfile.read_text().splitlines()]
    assert records[0]["offset"] == bad_start
    reasons = [r["reason"] for r in records]
    assert reasons[0].startswith("invalid JSON")
    assert "not a JSON object" in reasons[1] and "not a JSON object" in reasons[2]
    assert "invalid JSON" in reasons[3] and "line_b64" in records[3]
    assert "occurred_at" in reasons[4]
    assert all(r["path"].endswith("audit.jsonl") for r in records)
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "quarantine", "list", "--json",
                          "-c", str(ws.config)], capture_output=True, text=True, cwd=ws.root)
    assert out.returncode == 0, out.stderr
    assert [json.loads(x) for x in out.stdout.splitlines()] == records


def test_one_sink_down_does_not_block_another(ws):
    """A sink that keeps failing falls behind; the other sink delivers everything meanwhile."""
    with WebhookReceiver() as rcv:
        rcv.set_script([], default=503)
        ws.write_config(http_sink(rcv.url) + file_sink(ws.out))
        ids = write_events(ws.journal, "h", 3000, seq=True)
        with ws.daemon() as d:
            d.wait_started()
            wait_for(lambda: len(read_jsonl_ids(ws.out)) == 3000, 60, message="file sink")
            assert rcv.ids() == []
            rcv.set_script([], default=200)
            wait_for(lambda: set(rcv.ids()) == set(ids), 60, message="http sink catches up")
            assert d.terminate() == 0


def test_dead_letter_storage_full_stops_the_sink_without_discarding(ws):
    """Dead-letter file at its limit: the sink stops advancing, the cursor holds, nothing lost."""
    out = ws.root / "flaky.jsonl"
    script = ws.root / "script.txt"
    script.write_text("permanent\n" * 1000)
    ws.write_config(f"""
[[sinks]]
name = "flaky"
type = "flaky"
out = "{out}"
script = "{script}"
[sinks.batch]
max_events = 10
timeout = 0.05
[sinks.dead_letter]
max_bytes = 3000
""", shutdown_timeout=1.0)  # the first stop cancels the blocked sink: no need to wait 10 s for it
    ids = write_events(ws.journal, "f", 100, seq=True)
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: b"NOT advancing" in d.log(), 30, message="blocked sink reported")
        assert d.terminate() == 0
    dlq = DeadLetterFile(ws.state, "flaky")
    dead = [e["id"] for x in dlq.read() for e in x.events]
    assert 0 < len(dead) < 100 and dlq.size() <= 3000
    # The cursor covers exactly the dead-lettered prefix: the rest stays in the journal.
    state = CursorStore(ws.state).load("flaky")
    offset = sum(s.offset for s in state.segments.values())
    lines = ws.journal.read_bytes()[:offset].splitlines()
    assert [json.loads(x)["id"] for x in lines] == dead == ids[: len(dead)]
    script.write_text("")
    dlq.path.unlink()
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: len(read_jsonl_ids(out)) == 100 - len(dead), 30, message="rest")
        assert d.terminate() == 0
    assert read_jsonl_ids(out) == ids[len(dead):]


def test_partial_acceptance_dead_letters_one_event_and_resends_rest(ws):
    """A sink that accepted 3 events then rejected 1: only that one is dead-lettered."""
    out = ws.root / "flaky.jsonl"
    script = ws.root / "script.txt"
    script.write_text("partial 3\n")
    ws.write_config(f"""
[[sinks]]
name = "flaky"
type = "flaky"
out = "{out}"
script = "{script}"
[sinks.batch]
max_events = 10
timeout = 0.5
""")
    ids = write_events(ws.journal, "q", 10, seq=True)
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: len(read_jsonl_ids(out)) == 9, 30, message="9 delivered")
        assert d.terminate() == 0
    dead = [e["id"] for x in DeadLetterFile(ws.state, "flaky").read() for e in x.events]
    assert dead == [ids[3]]
    assert read_jsonl_ids(out) == ids[:3] + ids[4:]


def test_batches_respect_max_events_and_max_bytes(ws):
    """A backlog read in large chunks is cut into batches of at most max_events events,
    and of fewer than max_bytes bytes before their last event; every event once, in order."""
    rng = random.Random(3)
    j = AuditJournal(ws.journal)
    ids = [f"b-{i:04d}" for i in range(600)]
    for eid in ids:
        assert j.record("user.invited", id=eid, actor={"type": "user", "email": "a@acme.test"},
                        metadata={"note": "ab " * (150 if rng.random() < 0.2 else 0)})
    j.close()
    with WebhookReceiver() as rcv:
        ws.write_config(http_sink(rcv.url, batch=7).replace("timeout = 0.05", "timeout = 0.05\nmax_bytes = 1500", 1))
        with ws.daemon() as d:
            d.wait_started()
            wait_for(lambda: len(rcv.ids()) >= 600, 60, message="all events")
            assert d.terminate() == 0
        assert rcv.ids() == ids
        sizes = [[len(msgspec.json.encode(e)) for e in batch] for batch in rcv.batches]
    assert all(1 <= len(b) <= 7 for b in sizes)
    assert all(sum(b[:-1]) < 1500 for b in sizes)
    assert any(len(b) < 7 for b in sizes[:-1]), "no batch was cut by max_bytes"
    assert any(len(b) == 7 for b in sizes), "no batch was cut by max_events"


def test_polling_mode_gives_same_results(ws):
    """force_polling (no inotify): the same events arrive, including after rotation."""
    ws.write_config(file_sink(ws.out), journal_extra="force_polling = true")
    with ws.daemon() as d:
        d.wait_started()
        a = write_events(ws.journal, "pa", 100, seq=True)
        os.rename(ws.journal, ws.journal.with_name("audit.jsonl.1"))
        b = write_events(ws.journal, "pb", 100, seq=True)
        wait_for(lambda: len(read_jsonl_ids(ws.out)) == 200, 30, message="polled events")
        assert d.terminate() == 0
    assert read_jsonl_ids(ws.out) == a + b


def test_drop_in_plugin_from_plugins_dir(ws):
    """The repo's example plugin loads from a plugin dir and ships batches as files."""
    repo = Path(__file__).resolve().parents[2]
    outdir = ws.root / "batches"
    ws.write_config(f"""
[[sinks]]
name = "batches"
type = "jsonl_dir"
directory = "{outdir}"
""", plugin_dir=repo / "plugins")
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "plugins", "-c", str(ws.config)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "jsonl_dir" in out.stdout and "http" in out.stdout
    ids = write_events(ws.journal, "d", 30, seq=True)
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: sum(len(read_jsonl_ids(p)) for p in outdir.glob("*.jsonl")) == 30, 30)
        assert d.terminate() == 0
    got = [i for p in sorted(outdir.glob("*.jsonl")) for i in read_jsonl_ids(p)]
    assert sorted(got) == ids


def test_second_signal_exits_immediately(ws):
    """A second SIGTERM during a slow shutdown exits at once; the cursor stays safe."""
    with WebhookReceiver() as rcv:
        rcv.set_script([], default="hang")
        ws.write_config(http_sink(rcv.url), shutdown_timeout=60.0)
        write_events(ws.journal, "t", 10, seq=True)
        d = ws.daemon().start()
        d.wait_started()
        wait_for(lambda: rcv.requests >= 1, 30)
        d.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: b"SIGTERM received: stopping" in d.log(), 10, message="stopping")
        # The same signal twice within 0.5 s is one delivery (to the process and its
        # group); a second request comes later than that.
        time.sleep(0.6)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(10) == 1
        assert b"second SIGTERM: exiting now" in d.log()
        state = CursorStore(ws.state).load("web")
        assert all(s.offset == 0 for s in state.segments.values())


def test_a_sink_that_cannot_start_does_not_stop_the_others(ws):
    """A sink whose start() keeps failing (even permanently) stays in error and falls
    behind; the daemon runs on and the other sinks deliver everything."""
    ws.write_config(f"""
[[sinks]]
name = "broken"
type = "flaky"
out = "{ws.root / 'never.jsonl'}"
start_error = "permanent"
[sinks.retry]
initial_backoff = 0.05
max_backoff = 0.2
""" + file_sink(ws.out))
    ids = write_events(ws.journal, "c", 300, seq=True)
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: read_jsonl_ids(ws.out) == ids, 30, message="the healthy sink")
        wait_for(lambda: d.log().count(b"start failed") >= 2, 30, message="start retried")
        assert d.poll() is None
        status_file = ws.state / "status" / "broken.json"
        wait_for(status_file.exists, 10, message="status file")
        status = json.loads(status_file.read_text())
        assert status["state"] == "error" and "credentials refused" in status["last_error"]
        assert d.terminate() == 0
    assert not (ws.root / "never.jsonl").exists()
    assert CursorStore(ws.state).load("broken").segments == {}


def test_secrets_echoed_by_a_receiver_are_masked_everywhere(ws):
    """A receiver that echoes credentials in its error body: the log, the status file and
    the dead-letter file carry the error with the secrets masked."""
    with WebhookReceiver() as rcv:
        rcv.set_script([(400, {}, "rejected: api_key=sk_live_ABCDEF123456 for "
                                  "https://admin:hunter2pass@siem.example/x Bearer eyJhbGciOi")])
        ws.write_config(http_sink(rcv.url, extra='bearer_token = "eyJhbGciOi"'))
        write_events(ws.journal, "z", 5, seq=True)
        dlq = DeadLetterFile(ws.state, "web")
        with ws.daemon() as d:
            d.wait_started()
            wait_for(lambda: dlq.count()[1] == 5, 30, message="dead letters")
            status_file = ws.state / "status" / "web.json"
            wait_for(lambda: status_file.exists() and b"HTTP 400" in status_file.read_bytes(), 10)
            assert d.terminate() == 0
        everything = d.log() + dlq.path.read_bytes() + status_file.read_bytes()
        for secret in (b"sk_live_ABCDEF123456", b"hunter2pass", b"eyJhbGciOi"):
            assert secret not in everything, secret
        assert b"HTTP 400" in dlq.path.read_bytes()
