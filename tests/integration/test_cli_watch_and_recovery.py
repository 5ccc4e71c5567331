"""The operator's view of a sink over time: `dlq replay` reports per sink (table or
JSON), `status --watch` refreshes until Ctrl-C, and a sink that recovers says so in the
log and no longer shows its old error as current in `status`."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from auditshipd.delivery.deadletters import DeadLetter, DeadLetterFile
from auditshipd.testing import read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "auditshipd.cli"]


def _flaky_config(ws, script: str, backoff: str = "initial_backoff = 0.01\nmax_backoff = 0.05"
                  ) -> tuple[Path, Path]:
    out, script_path = ws.root / "flaky.jsonl", ws.root / "script.txt"
    script_path.write_text(script)
    ws.write_config(f"""
[[sinks]]
name = "flaky"
type = "flaky"
out = "{out}"
script = "{script_path}"
[sinks.retry]
{backoff}
""")
    return out, script_path


def _clear_while_running(script: Path) -> None:
    """Empty the flaky sink's script under the lock its ``send`` takes: a plain rewrite
    can land between the sink's read and its write-back of the remaining answers, which
    then puts them all back."""
    with open(script, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate()


def _letter(ids: list[str]) -> DeadLetter:
    at = "2024-05-01T12:00:00.000+00:00"
    return DeadLetter(sink="flaky", error="earlier failure", retryable=False, attempts=1,
                      first_attempt_at=at, last_attempt_at=at, dead_lettered_at=at,
                      events=[{"id": i, "action": "user.invited",
                               "occurred_at": "2024-05-01T12:00:00Z"} for i in ids])


def _status(ws, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "status", "-c", str(ws.config), *extra], cwd=ws.root,
                          capture_output=True, text=True, timeout=60)


def test_dlq_replay_prints_a_table_and_json_and_exits_1_when_letters_stay(ws):
    """Two letters, the second refused for good: the table names the sink, 1 record and
    2 events replayed, 1 event still dead-lettered and the error; --json says the same;
    both exit 1. A replay that delivers everything exits 0 with nothing left."""
    out, script = _flaky_config(ws, "ok\npermanent\npermanent\npermanent\n")
    dlf = DeadLetterFile(ws.state, "flaky")
    dlf.append(_letter(["a1", "a2"]))
    dlf.append(_letter(["b1"]))
    res = subprocess.run([*CLI, "dlq", "replay", "--sink", "flaky", "-c", str(ws.config)],
                         cwd=ws.root, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    header, row = res.stdout.splitlines()[-2:]
    assert header.split()[:1] == ["SINK"] and "STILL DEAD" in header and "LAST ERROR" in header
    assert row.split()[:4] == ["flaky", "1", "2", "1"]
    assert row.endswith("scripted permanent failure")
    assert read_jsonl_ids(out) == ["a1", "a2"]

    script.write_text("permanent\n" * 3)
    res = subprocess.run([*CLI, "dlq", "replay", "--sink", "flaky", "--json", "-c",
                          str(ws.config)], cwd=ws.root, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1, res.stderr
    assert json.loads(res.stdout.splitlines()[-1]) == {
        "sink": "flaky", "replayed": 0, "records_replayed": 0, "still_dead_lettered": 1,
        "records_still_dead_lettered": 1, "out_of_scope": 0,
        "last_error": "scripted permanent failure"}

    script.write_text("")
    res = subprocess.run([*CLI, "dlq", "replay", "--sink", "flaky", "--json", "-c",
                          str(ws.config)], cwd=ws.root, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1]) == {
        "sink": "flaky", "replayed": 1, "records_replayed": 1, "still_dead_lettered": 0,
        "records_still_dead_lettered": 0, "out_of_scope": 0, "last_error": None}
    assert read_jsonl_ids(out) == ["a1", "a2", "b1"] and dlf.read() == []


def test_replay_row_masks_secrets_in_the_last_error():
    """The last error printed by `dlq replay` has URL credentials, query values and the
    sink's own secrets masked."""
    from auditshipd.cli import replay_row
    from auditshipd.delivery.replay import ReplayResult

    result = ReplayResult(sink="web", path="x", still_dead_lettered=1, letters_kept=1,
                          last_error="POST https://ops:hunter2@siem.example/in?token=abc123"
                          " failed; key tok-XYZ-1")
    text = json.dumps(replay_row(result, ["tok-XYZ-1"]))
    assert "hunter2" not in text and "abc123" not in text and "tok-XYZ-1" not in text
    assert "siem.example" in text


def _read_until(read: Any, done: Any, timeout: float = 30.0) -> str:
    text = ""
    deadline = time.monotonic() + timeout
    while not done(text):
        assert time.monotonic() < deadline, f"no refreshes in time; got:\n{text}"
        text += read()
    return text


def _interruptible() -> None:
    """In the child: SIGINT handled by default, as at a terminal. A suite started in the
    background of a shell has it ignored, which Python keeps (no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_status_watch_repeats_tables_on_a_pipe_and_ctrl_c_exits_0(ws):
    """Not a terminal: plain tables one after another (no escape codes), each after a
    time line; the sink's delivery shows up in a later refresh; SIGINT ends it, exit 0."""
    _flaky_config(ws, "")
    proc = subprocess.Popen([*CLI, "status", "--watch", "--interval", "0.2", "-c",
                             str(ws.config)], cwd=ws.root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_interruptible)
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()

        def read() -> str:
            ready, _, _ = select.select([fd], [], [], 1.0)
            return os.read(fd, 65536).decode() if ready else ""

        text = _read_until(read, lambda t: t.count("SINK ") >= 3)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    text += rest.decode()
    assert "\x1b" not in text
    tables = [t for t in text.split("-- ") if t.strip()]
    assert len(tables) >= 3
    for table in tables:
        first, header, row = table.splitlines()[:3]
        assert first[:4].isdigit()  # the time of this refresh
        assert header.startswith("SINK") and row.split()[:3] == ["flaky", "flaky", "inactive"]


def test_status_watch_clears_the_screen_on_a_terminal(ws):
    """On a terminal each refresh clears the screen and draws the table again; SIGINT
    exits 0."""
    _flaky_config(ws, "")
    master, slave = pty.openpty()
    proc = subprocess.Popen([*CLI, "status", "--watch", "--interval", "0.2", "-c",
                             str(ws.config)], cwd=ws.root, stdout=slave,
                            stderr=subprocess.DEVNULL, preexec_fn=_interruptible)
    os.close(slave)
    try:
        def read() -> str:
            ready, _, _ = select.select([master], [], [], 1.0)
            return os.read(master, 65536).decode() if ready else ""

        text = _read_until(read, lambda t: t.count("\x1b[H\x1b[2J") >= 3
                           and t.rstrip().endswith("-"))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    screens = text.split("\x1b[H\x1b[2J")[1:]
    assert len(screens) >= 3
    assert all("SINK" in s and "flaky" in s and "Ctrl-C" in s for s in screens[:-1])


def test_a_recovered_sink_logs_it_and_status_shows_the_error_resolved(ws):
    """The sink refuses every attempt: `status` says error with the retry message. Once
    it accepts again, the daemon logs one "sink flaky recovered after N failed attempts
    / Ts" line, and `status` says active, with the old error marked resolved (JSON:
    last_error_resolved_at; table: "last error (resolved)")."""
    out, script = _flaky_config(ws, "retry\n" * 10_000,
                                backoff="initial_backoff = 0.05\nmax_backoff = 0.2")
    with ws.daemon() as d:
        d.wait_started()
        ids = write_events(ws.journal, "r", 5)

        def row() -> dict[str, Any]:
            res = _status(ws, "--json")
            assert res.returncode == 0, res.stderr
            return {r["name"]: r for r in json.loads(res.stdout)["sinks"]}["flaky"]

        failing = wait_for(lambda: (r := row())["state"] == "error" and r, 30, interval=0.2,
                           message="status: error while the sink refuses")
        assert "retrying" in failing["last_error"]
        assert failing["last_error_resolved_at"] is None
        table = _status(ws).stdout
        assert "last error (" in table and "(resolved)" not in table

        _clear_while_running(script)  # the receiver is back
        wait_for(lambda: read_jsonl_ids(out) == ids, 30, message="delivered after recovery")
        healthy = wait_for(lambda: (r := row())["last_error_resolved_at"] and r, 30,
                           interval=0.2, message="status: error resolved")
        assert healthy["state"] == "active"
        assert "retrying" in healthy["last_error"]
        assert healthy["last_error_resolved_at"] >= healthy["last_error_at"]
        table = _status(ws).stdout
        assert "last error (resolved) at" in table and "delivering again since" in table
        assert " active " in table.splitlines()[1]
        assert d.terminate() == 0
    log = d.log().decode()
    recovered = [json.loads(x) for x in log.splitlines() if "recovered after" in x]
    assert len(recovered) == 1, log
    assert recovered[0]["level"] == "info"
    assert re.fullmatch(r"sink flaky recovered after \d+ failed attempts / \d+\.\ds",
                        recovered[0]["msg"]), recovered[0]
