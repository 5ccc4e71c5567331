"""`auditshipd status` against a real daemon: while it runs and after it stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from auditshipd.testing import read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration




def status(config: Path, cwd: Path) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "auditshipd.cli", "status", "-c", str(config), "--json"],
        cwd=cwd, capture_output=True, check=True, timeout=60,
    ).stdout
    return {row["name"]: row for row in json.loads(out)["sinks"]}


def test_status_while_running_and_after_stop(ws):
    """Running: active, all delivered, no lag. Stopped: inactive, cursor kept, new lag counted."""
    ws.write_config(f"""
[[sinks]]
name = "local-file"
type = "file"
path = "{ws.out}"
""")
    n = 300
    with ws.daemon() as d:
        d.wait_started()
        ids = write_events(ws.journal, "s", n)
        wait_for(lambda: len(read_jsonl_ids(ws.out)) >= n, 60, message=f"{n} events delivered")

        def caught_up() -> dict[str, Any] | None:
            row = status(ws.config, ws.root)["local-file"]
            ok = row["state"] == "active" and row["delivered"] == n and row["lag_bytes"] == 0
            return row if ok else None

        row = wait_for(caught_up, 30, interval=0.2, message="status: active and caught up")
        assert row["type"] == "file"
        assert row["lag_events"] == 0 and row["lag_events_exact"] is True
        assert row["last_success_at"] and row["last_synced_at"] == row["last_success_at"]
        assert row["dead_letter_count"] == 0 and row["quarantine_count"] == 0
        [seg] = row["cursor"]
        assert seg["path"] == str(ws.journal) and seg["offset"] == ws.journal.stat().st_size
        # An idle running daemon stays "active": its status file is refreshed.
        first = row["status_updated_at"]
        wait_for(lambda: status(ws.config, ws.root)["local-file"]["status_updated_at"] != first,
                 15, interval=0.2, message="status file refreshed while idle")
        assert status(ws.config, ws.root)["local-file"]["state"] == "active"
        assert d.terminate() == 0
    assert sorted(read_jsonl_ids(ws.out)) == sorted(ids)

    row = status(ws.config, ws.root)["local-file"]
    assert row["state"] == "inactive"
    assert row["delivered"] == n and row["lag_bytes"] == 0 and row["lag_events"] == 0
    assert row["cursor"][0]["offset"] == ws.journal.stat().st_size
    # Events written while the daemon is down show up as lag.
    write_events(ws.journal, "late", 7)
    with open(ws.journal, "a") as f:
        f.write("not json\n")
    row = status(ws.config, ws.root)["local-file"]
    assert row["lag_events"] == 8
    assert row["lag_bytes"] == ws.journal.stat().st_size - row["cursor"][0]["offset"]


def test_status_reports_dead_letters_and_quarantine_after_kill(ws, receiver):
    """A 400 dead-letters a batch and a bad line is quarantined; after kill -9: inactive."""
    receiver.set_script([400])
    ws.write_config(f"""
[[sinks]]
name = "web"
type = "http"
url = "{receiver.url}"
[sinks.batch]
max_events = 1000
timeout = 0.05
""")
    with open(ws.journal, "w") as f:
        f.write("{broken\n")
    write_events(ws.journal, "d", 5)
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: status(ws.config, ws.root)["web"]["dead_letter_count"] == 5, 60,
                 interval=0.2, message="5 events dead-lettered")
        write_events(ws.journal, "ok", 3)
        wait_for(lambda: len(receiver.ids()) == 3, 60, message="3 events delivered")
        wait_for(lambda: status(ws.config, ws.root)["web"]["delivered"] == 3, 30,
                 interval=0.2, message="status shows 3 delivered")
        row = status(ws.config, ws.root)["web"]
        assert row["dead_letter_records"] == 1 and row["quarantine_count"] == 1
        assert "400" in (row["last_error"] or "")
        d.kill()
    wait_for(lambda: status(ws.config, ws.root)["web"]["state"] == "inactive", 30,
             interval=0.5, message="a killed daemon's sink turns inactive")
    row = status(ws.config, ws.root)["web"]
    assert row["lag_events"] == 0 and row["dead_letter_count"] == 5
