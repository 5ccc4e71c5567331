"""JournalReader.aclose(hand_over=True): a reader that stops (its sink's driver is
replaced by a reload, or restarts after a crash) hands its successor the descriptors of
the segments no name reaches any more, which the successor cannot open.

A reader scans the journal only when it reads: a sink reading alone waits for a delivery
slot while its destination retries, so a segment it read may be deleted (or renamed out of
the glob) after its last scan. Its lines may still be in batches not acknowledged yet,
which its successor reads again from the acknowledged cursor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.unit.test_tail import Consumer, append, key_of, lines


@pytest.mark.parametrize("gone", ["deleted", "renamed out of the glob"])
async def test_a_segment_that_left_the_glob_since_the_last_scan_is_handed_over(
        tmp_path: Path, consumer: Consumer, gone: str) -> None:
    journal = tmp_path / "audit.jsonl"
    append(journal, lines("a", 20))
    reader = consumer.start()
    await consumer.collect(20)
    rotated = journal.with_name("audit.jsonl.1")
    os.rename(journal, rotated)
    key = key_of(rotated)
    if gone == "deleted":
        os.unlink(rotated)
    else:
        os.rename(rotated, tmp_path / "archived.log")
    held = await reader.aclose(hand_over=True)
    try:
        assert key in held, "no descriptor of the segment for the successor"
    finally:
        for _path, fd in held.values():
            os.close(fd)
