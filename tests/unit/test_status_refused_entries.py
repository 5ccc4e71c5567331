"""journal_lag (status, metrics) counts only what the reader would read.

A symbolic link in the journal directory (to a file outside) and a FIFO: the reader
refuses them, so their lines are not pending and the FIFO does not block the count.
"""

from __future__ import annotations

import os
from pathlib import Path

from auditshipd.service.status import journal_lag


def test_lag_ignores_a_symlink_and_a_fifo_unless_links_are_followed(tmp_path: Path) -> None:
    """Lag counts the journal only; with follow_symlinks the linked file too, never a FIFO."""
    journal = tmp_path / "audit.jsonl"
    journal.write_bytes(b'{"id":"a"}\n' * 3)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shadow").write_bytes(b"root:x:0:0\n" * 5)
    (tmp_path / "audit.jsonl.x").symlink_to(outside / "shadow")
    os.mkfifo(tmp_path / "audit.jsonl.fifo")
    patterns = [str(tmp_path / "audit.jsonl*")]
    lag = journal_lag(patterns, {})
    assert (lag.bytes, lag.events) == (journal.stat().st_size, 3)
    followed = journal_lag(patterns, {}, follow_symlinks=True)
    assert followed.events == 8
