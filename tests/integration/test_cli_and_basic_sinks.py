"""`auditshipd emit`, exhausted retries, replay failures, file rotation, stdout, systemd unit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from auditshipd import AuditJournal
from auditshipd.delivery.deadletters import DeadLetterFile
from auditshipd.testing import WebhookReceiver, read_jsonl_ids, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditshipd.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_emit_writes_one_event_with_the_writer(ws):
    """`auditshipd emit` appends one well-formed event to the configured journal."""
    ws.write_config(f'[[sinks]]\nname = "f"\ntype = "file"\npath = "{ws.out}"\n')
    out = cli("emit", "user.invited", "-c", str(ws.config), "--actor-email", "ada@acme.test",
              "--target-email", "bob@acme.test", "--organization", "acme",
              "--metadata", "role=admin", "--metadata", "via=scim")
    assert out.returncode == 0, out.stderr
    (line,) = ws.journal.read_text().splitlines()
    ev = json.loads(line)
    assert ev["action"] == "user.invited" and ev["version"] == 1
    assert ev["actor"] == {"type": "user", "email": "ada@acme.test"}
    assert ev["targets"] == [{"type": "user", "email": "bob@acme.test"}]
    assert ev["organization"] == {"slug": "acme"} and ev["metadata"] == {"role": "admin", "via": "scim"}
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", ev["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ev["occurred_at"])
    bad = cli("emit", "x", "-c", str(ws.config), "--actor-email", "a@b", "--metadata", "novalue")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


def test_exhausted_retries_go_to_dead_letters_and_failed_replay_keeps_them(ws):
    """max_attempts reached: dead letter marked retryable with the attempts; a replay that
    fails again keeps the record; a replay that works removes it."""
    with WebhookReceiver() as rcv:
        rcv.set_script([], default=503)
        ws.write_config(f"""
[[sinks]]
name = "web"
type = "http"
url = "{rcv.url}"
[sinks.batch]
timeout = 0.05
[sinks.retry]
initial_backoff = 0.01
max_backoff = 0.05
max_attempts = 3
""")
        j = AuditJournal(ws.journal)
        ids = [f"x{i}" for i in range(20)]
        for eid in ids:
            j.record("user.deleted", id=eid, actor={"type": "user", "email": "a@acme.test"})
        dlq = DeadLetterFile(ws.state, "web")
        with ws.daemon() as d:
            d.wait_started()
            wait_for(lambda: dlq.count()[1] == 20, 30, message="dead letters")
            assert d.terminate() == 0
        (letter,) = dlq.read()
        assert letter.retryable and letter.attempts == 3 and "HTTP 503" in letter.error
        assert rcv.requests == 3
        out = cli("dlq", "replay", "--sink", "web", "--json", "-c", str(ws.config), cwd=ws.root)
        assert out.returncode == 1
        row = json.loads(out.stdout.splitlines()[-1])
        assert {k: row[k] for k in ("sink", "replayed", "still_dead_lettered")} == {
            "sink": "web", "replayed": 0, "still_dead_lettered": 20}
        (kept,) = dlq.read()
        assert kept.attempts > 3 and [e["id"] for e in kept.events] == ids
        rcv.set_script([], default=200)
        assert cli("dlq", "replay", "--sink", "web", "-c", str(ws.config), cwd=ws.root).returncode == 0
        assert dlq.read() == [] and rcv.ids() == ids


def test_file_sink_rotates_by_size(ws):
    """rotate_bytes: the output rolls over to timestamped files; all events kept, in order."""
    ws.write_config(f"""
[[sinks]]
name = "f"
type = "file"
path = "{ws.out}"
rotate_bytes = 20000
[sinks.batch]
max_events = 20
timeout = 0.05
""")
    j = AuditJournal(ws.journal)
    ids = [f"r{i:04d}" for i in range(600)]
    for eid in ids:
        j.record("user.login", id=eid, actor={"type": "user", "email": "a@acme.test"})

    def delivered():
        files = sorted(ws.out.parent.glob("audit.jsonl.*")) + [ws.out]
        return [i for f in files for i in read_jsonl_ids(f)]

    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: len(delivered()) == 600, 30, message="all events")
        assert d.terminate() == 0
    assert delivered() == ids
    rotated = list(ws.out.parent.glob("audit.jsonl.*"))
    assert len(rotated) >= 3 and all(p.stat().st_size <= 20000 for p in rotated)


def test_stdout_sink(ws):
    """The stdout sink prints JSON Lines on standard output."""
    ws.write_config('[[sinks]]\nname = "out"\ntype = "stdout"\n')
    j = AuditJournal(ws.journal)
    for i in range(5):
        j.record("user.login", id=f"s{i}", actor={"type": "user", "email": "a@acme.test"})
    proc = subprocess.Popen([sys.executable, "-m", "auditshipd.cli", "run", "-c", str(ws.config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ws.root)
    lines = [json.loads(proc.stdout.readline()) for _ in range(5)]
    proc.terminate()
    assert proc.wait(20) == 0
    assert [e["id"] for e in lines] == [f"s{i}" for i in range(5)]


def test_systemd_unit_scores_ok():
    """`systemd-analyze security --offline` rates the unit OK (exposure < 5) and it is Type=notify."""
    unit = REPO / "systemd" / "auditshipd.service"
    text = unit.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "User=auditshipd" in text
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                         capture_output=True, text=True)
    m = re.search(r"Overall exposure level for auditshipd.service: ([\d.]+) (\w+)", out.stdout)
    assert m, out.stdout[-500:] + out.stderr
    assert float(m.group(1)) < 5.0 and m.group(2) in ("OK", "SAFE")
    assert f"{m.group(1)} {m.group(2)}" in (REPO / "README.md").read_text()
