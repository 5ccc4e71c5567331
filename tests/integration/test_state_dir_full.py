"""The state dir fills up (a small tmpfs) and frees again, with the daemon running.

Needs root to mount the tmpfs (CI runs as root): without it the test fails and says
why, it does not skip. A tmpfs gives a real ENOSPC at a size we choose, without
filling the machine's disk.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from auditshipd.journal.cursor import CursorStore
from auditshipd.testing import read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration


@pytest.fixture
def small_state_dir(ws):
    """ws.state mounted as a 1 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs as the state dir to get a real ENOSPC:"
                    " it needs root (CAP_SYS_ADMIN); run it as root, as CI does")
    ws.state.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs",
                          str(ws.state)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs on {ws.state} (needed for a real ENOSPC):"
                    f" {res.stderr.strip()}")
    try:
        yield ws.state
    finally:
        subprocess.run(["umount", "-l", str(ws.state)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses more (ENOSPC)."""
    filler = directory / "filler"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return filler


def _status(ws) -> dict:
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "status", "--json", "-c",
                          str(ws.config)], capture_output=True, text=True, cwd=ws.root)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["sinks"][0]


def _metric(ws, name: str) -> float:
    port = re.search(r'listen = "127\.0\.0\.1:(\d+)"', ws.config.read_text()).group(1)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf'^{name}{{sink="f"}} ([0-9.e+]+)$', body, re.M)
    return float(m.group(1)) if m else 0.0


def _temp_files(state: Path) -> list[Path]:
    return [p for p in state.rglob("*") if ".tmp." in p.name]


def test_full_state_dir_is_reported_and_recovers(ws, small_state_dir):
    """Cursor saves fail with ENOSPC while delivery goes on: the failure is in the log,
    in `status` (state error, persist_error) and in a metric; once space returns the
    cursor and status catch up without a restart, no temp file is left, nothing lost."""
    ws.write_config(f"""
[[sinks]]
name = "f"
type = "file"
path = "{ws.out}"
[sinks.batch]
timeout = 0.05
""")
    first = write_events(ws.journal, "a", 50)
    with ws.daemon() as d:
        d.wait_started()
        store = CursorStore(ws.state)
        wait_for(lambda: store.exists("f") and store.load("f").acked_events == 50, 30,
                 message="first cursor saved")
        wait_for(lambda: (ws.state / "status" / "f.json").exists(), 10, message="status file")
        filler = _fill(small_state_dir)

        second = write_events(ws.journal, "b", 100)
        wait_for(lambda: len(read_jsonl_ids(ws.out)) == 150, 30, message="delivery goes on")
        wait_for(lambda: b"cannot save cursor/status" in d.log(), 30, message="logged")
        assert b"No space left on device" in d.log()
        row = wait_for(lambda: (r := _status(ws))["persist_error"] and r, 30,
                       message="status reports the persistence error")
        assert row["state"] == "error" and "No space left" in row["persist_error"]
        assert _metric(ws, "auditshipd_state_persist_errors_total") >= 1
        assert store.load("f").acked_events == 50  # frozen, not torn
        assert _temp_files(small_state_dir) == []

        filler.unlink()
        wait_for(lambda: store.load("f").acked_events == 150, 30,
                 message="cursor saved again once space returned")
        row = wait_for(lambda: (r := _status(ws))["persist_error"] is None and r, 30,
                       message="status recovered")
        assert row["state"] == "active" and row["lag_events"] == 0
        assert b"saved again after" in d.log()
        assert _temp_files(small_state_dir) == []
        assert d.terminate() == 0
    assert read_jsonl_ids(ws.out) == first + second
