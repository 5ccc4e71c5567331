"""JournalReader: a segment truncated and written again (copytruncate's second half), that
then leaves the glob (renamed away or deleted) before the reader's next scan.

A reader scans the journal only when it reads: a sink reading alone waits for a delivery
slot while its destination retries, so it may first look again once both happened. The
file it still holds open is then the one it was reading, at its old offset, with other
content: its lines must be read from the start, as they are when the reader sees the
truncation while the file is still in the glob (test_tail.py)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from tests.unit.test_tail import Consumer, append, assert_exact, copytruncate, lines


@pytest.mark.parametrize("gone", ["renamed out of the glob", "deleted"])
@pytest.mark.parametrize("written", [10, 30], ids=["shorter", "longer"])
async def test_a_copytruncated_file_that_leaves_the_glob_before_the_next_scan(
        tmp_path: Path, consumer: Consumer, gone: str, written: int) -> None:
    """20 lines read; the file is copytruncated, ``written`` lines are appended to it
    (fewer bytes than the offset: it looks drained; more: it is read on from the old
    offset, the lines before it skipped), and it leaves the glob before the reader looks
    again; a new file is started. Every line arrives once."""
    journal = tmp_path / "audit.jsonl"
    append(journal, lines("a", 20))
    consumer.start()
    await consumer.collect(20)
    copytruncate(journal)  # audit.jsonl.1 holds the 20 lines read
    append(journal, lines("b", written))
    if gone == "deleted":
        os.unlink(journal)  # the reader still holds it open
    else:
        os.rename(journal, tmp_path / "archived.log")
    append(journal, lines("c", 5))
    expected = lines("a", 20) + lines("b", written) + lines("c", 5)
    with contextlib.suppress(AssertionError):  # the lines' check below says what is missing
        await consumer.until(lambda: set(expected) <= set(consumer.lines), timeout=1.0)
    await consumer.quiet()
    assert_exact(consumer.lines, expected)
