"""lag_bytes is read by /metrics and status on the event loop while the reader's worker
thread adopts and drops segments."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditshipd.journal import reader as reader_module
from auditshipd.journal.cursor import CursorState
from auditshipd.journal.reader import JournalReader


async def test_lag_bytes_survives_a_segment_table_change(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "audit.jsonl"
    journal.write_bytes(b'{"id":"a","action":"user.invited"}\n')
    reader = JournalReader([str(tmp_path / "audit.jsonl*")], CursorState(sink="t"),
                           poll_interval=0.05)
    try:
        assert await reader.next_item(timeout=5) is not None
        assert reader.segments
        real_fstat = reader_module.os.fstat

        dropped = []

        def fstat_while_the_table_changes(fd: int):
            # What the worker thread may do between two steps of the loop's iteration.
            if not dropped:
                dropped.append(reader.segments.pop(next(iter(reader.segments))))
            return real_fstat(fd)

        monkeypatch.setattr(reader_module.os, "fstat", fstat_while_the_table_changes)
        assert reader.lag_bytes() == 0  # everything was read
        monkeypatch.undo()
        assert dropped
        reader_module.os.close(dropped[0].fd)
    finally:
        reader.close()
