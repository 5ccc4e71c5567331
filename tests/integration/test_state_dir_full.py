"""The state dir fills up (a small tmpfs) and frees again, with the daemon running.

Needs root to mount the tmpfs (CI runs as root): without it the test fails and says
why, it does not skip. A tmpfs gives a real ENOSPC at a size we choose, without
filling the machine's disk.
"""

from __future__ import annotations

import pytest
from tests.helpers.state_dir import fill, metric, mount_small_state_dir, status_row, temp_files

from auditshipd.journal.cursor import CursorStore
from auditshipd.testing import read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration


@pytest.fixture
def small_state_dir(ws):
    """ws.state mounted as a 1 MiB tmpfs, unmounted afterwards."""
    yield from mount_small_state_dir(ws)


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
        filler = fill(small_state_dir)

        second = write_events(ws.journal, "b", 100)
        wait_for(lambda: len(read_jsonl_ids(ws.out)) == 150, 30, message="delivery goes on")
        wait_for(lambda: b"cannot save cursor/status" in d.log(), 30, message="logged")
        assert b"No space left on device" in d.log()
        row = wait_for(lambda: (r := status_row(ws))["persist_error"] and r, 30,
                       message="status reports the persistence error")
        assert row["state"] == "error" and "No space left" in row["persist_error"]
        assert metric(ws, "auditshipd_state_persist_errors_total", "f") >= 1
        assert store.load("f").acked_events == 50  # frozen, not torn
        assert temp_files(small_state_dir) == []

        filler.unlink()
        wait_for(lambda: store.load("f").acked_events == 150, 30,
                 message="cursor saved again once space returned")
        row = wait_for(lambda: (r := status_row(ws))["persist_error"] is None and r, 30,
                       message="status recovered")
        assert row["state"] == "active" and row["lag_events"] == 0
        assert b"saved again after" in d.log()
        assert temp_files(small_state_dir) == []
        assert d.terminate() == 0
    assert read_jsonl_ids(ws.out) == first + second
