"""Live reload (SIGHUP and file edits), stream files per organization, backfill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter

import pytest
from tests.helpers.sinks import file_sink as shared_file_sink

from auditshipd import AuditJournal
from auditshipd.testing import read_jsonl_ids, wait_for

pytestmark = pytest.mark.integration


def file_sink(name, path, extra=""):
    return shared_file_sink(path, name, extra, batch="max_events = 50\ntimeout = 0.05")


class Writer(threading.Thread):
    """Writes events continuously (several organizations) until stopped."""

    def __init__(self, path, orgs=("acme", "globex")):
        super().__init__(daemon=True)
        self.journal = AuditJournal(path)
        self.orgs = orgs
        self.ids: list[str] = []
        self.by_org: dict[str, list[str]] = {o: [] for o in orgs}
        self.stop_flag = threading.Event()

    def run(self):
        i = 0
        while not self.stop_flag.is_set() or i < 200:
            org = self.orgs[i % len(self.orgs)]
            eid = f"ev-{i:07d}"
            assert self.journal.record("user.updated", id=eid, organization={"slug": org},
                                       actor={"type": "user", "email": f"a@{org}.test"})
            self.ids.append(eid)
            self.by_org[org].append(eid)
            i += 1
            if i % 50 == 0:
                self.stop_flag.wait(0.01)  # a steady flow, not a flood

    def finish(self):
        self.stop_flag.set()
        self.join(30)


def ids_in(path):
    return [i for i in read_jsonl_ids(path) if i.startswith("ev-")]


def test_reload_with_valid_and_invalid_edits_while_events_flow(ws):
    """Add a sink, change a sink, an invalid edit, SIGHUP: no loss, no duplicate."""
    a, b = ws.root / "a.jsonl", ws.root / "b.jsonl"
    ws.write_config(file_sink("a", a))
    writer = Writer(ws.journal)
    with ws.daemon() as d:
        d.wait_started()
        writer.start()
        wait_for(lambda: len(ids_in(a)) > 300, 30, message="a flowing")
        # valid edit: change a (restart with its cursor), add b (from the beginning)
        ws.write_config(file_sink("a", a, 'concurrency = 2') + file_sink("b", b))
        wait_for(lambda: b"config reloaded" in d.log(), 30, message="reload")
        # invalid edit: rejected, the running config stays
        broken = ws.config.read_text() + "\n[[sinks]]\nname = 3\n"
        header = len(broken.splitlines()) - 1  # the line of the broken [[sinks]]
        ws.config.write_text(broken)
        wait_for(lambda: b"config reload rejected" in d.log(), 30, message="rejection")
        assert d.poll() is None
        # valid again, via SIGHUP as well: removes b
        ws.write_config(file_sink("a", a, 'concurrency = 2'))
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: d.log().count(b"config reloaded") >= 2, 30, message="second reload")
        writer.finish()
        wait_for(lambda: set(ids_in(a)) >= set(writer.ids), 60, message="a complete")
        assert d.terminate() == 0
    counts = Counter(ids_in(a))
    assert set(counts) == set(writer.ids)
    assert max(counts.values()) == 1, "a reload must not send anything twice"
    got_b = ids_in(b)
    assert len(got_b) == len(set(got_b)) and got_b == writer.ids[: len(got_b)]
    log = d.log().decode()
    # file, line (the sink's, which lacks the key) and key
    assert f"auditshipd.toml:{header}: sinks[2].type: missing required key" in log
    # the reload itself was recorded as an audit event, with sink names only
    events = [json.loads(x) for x in ws.journal.read_text().splitlines()]
    updates = [e for e in events if e["action"] == "log_stream.updated"]
    assert updates and updates[0]["metadata"]["added"] == ["b"]
    assert updates[0]["metadata"]["changed"] == ["a"]


def test_stream_files_per_organization(ws):
    """Stream files add, change and remove org-scoped sinks live; a bad file hurts only its org."""
    streams = ws.root / "streams"
    streams.mkdir()
    main = ws.root / "main.jsonl"
    ws.write_config(file_sink("main", main), extra=f'streams_dir = "{streams}"')
    acme_out, globex_out = ws.root / "acme.jsonl", ws.root / "globex.jsonl"
    writer = Writer(ws.journal)
    with ws.daemon() as d:
        d.wait_started()
        writer.start()
        (streams / "acme.toml").write_text(file_sink("siem", acme_out))
        wait_for(lambda: len(ids_in(acme_out)) > 100, 30, message="acme stream")
        # a file cannot widen its scope
        (streams / "globex.toml").write_text(
            file_sink("siem", globex_out, 'organizations = ["acme", "globex"]'))
        wait_for(lambda: b"can only scope its own organization" in d.log(), 30)
        assert not globex_out.exists()
        (streams / "globex.toml").write_text(file_sink("siem", globex_out))
        wait_for(lambda: len(ids_in(globex_out)) > 50, 30, message="globex stream")
        # an invalid acme file: acme keeps its running stream, globex unaffected
        (streams / "acme.toml").write_text("[[sinks]\n")
        wait_for(lambda: d.log().count(b"stream file of organization 'acme' rejected") >= 1, 30)
        n = len(ids_in(acme_out))
        wait_for(lambda: len(ids_in(acme_out)) > n + 50, 30, message="acme still flowing")
        (streams / "acme.toml").write_text(file_sink("siem", acme_out))
        writer.finish()
        wait_for(lambda: set(ids_in(main)) >= set(writer.ids), 60, message="main")
        wait_for(lambda: set(ids_in(acme_out)) >= set(writer.by_org["acme"]), 60)
        # removing a file stops that stream (its cursor is kept)
        (streams / "globex.toml").unlink()
        wait_for(lambda: b"removed ['globex.siem']" in d.log(), 30, message="removal")
        assert d.terminate() == 0
    assert Counter(ids_in(acme_out)) == Counter(writer.by_org["acme"])
    got_globex = ids_in(globex_out)
    assert set(got_globex) <= set(writer.by_org["globex"])
    assert len(got_globex) == len(set(got_globex))
    raw = acme_out.read_bytes()
    assert b"globex" not in raw, "no cross-tenant event in acme's stream"


def test_backfill_from_a_time_delivers_exactly_the_events_since(ws):
    """start_at = an RFC 3339 time: exactly the events that occurred since then."""
    j = AuditJournal(ws.journal)
    ids_after = []
    for day in range(1, 29):
        for k in range(5):
            eid = f"ev-{day:02d}-{k}"
            j.record("user.login", id=eid, actor={"type": "user", "email": "x@acme.test"},
                     occurred_at=f"2026-10-{day:02d}T12:00:0{k}.000Z")
            if day >= 15:
                ids_after.append(eid)
    j.close()
    out = ws.root / "backfill.jsonl"
    ws.write_config(file_sink("late", out, 'start_at = "2026-10-15T00:00:00Z"'))
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: len(ids_in(out)) == len(ids_after), 30, message="backfill")
        assert d.terminate() == 0
    assert ids_in(out) == ids_after


def test_start_at_end_skips_existing_events(ws):
    """start_at = "end" for a new sink: only events written after it started."""
    j = AuditJournal(ws.journal)
    for i in range(100):
        j.record("x.old", id=f"ev-old-{i}", actor={"type": "user", "email": "x@acme.test"})
    out = ws.root / "tail.jsonl"
    ws.write_config(file_sink("tail", out, 'start_at = "end"'))
    with ws.daemon() as d:
        d.wait_started()
        new = []
        for i in range(20):
            j.record("x.new", id=f"ev-new-{i}", actor={"type": "user", "email": "x@acme.test"})
            new.append(f"ev-new-{i}")
        wait_for(lambda: len(ids_in(out)) == 20, 30)
        assert d.terminate() == 0
    assert ids_in(out) == new


def test_check_config_reports_bad_stream_file(ws):
    """check-config fails and names the stream file when one is invalid."""
    streams = ws.root / "streams"
    streams.mkdir()
    (streams / "acme.toml").write_text('[[sinks]]\nname = "s"\ntype = "file"\n')
    ws.write_config(file_sink("main", ws.root / "m.jsonl"), extra=f'streams_dir = "{streams}"')
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "check-config", "-c",
                          str(ws.config)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "acme.toml" in out.stderr and "sinks[0] (acme.s).path" in out.stderr
