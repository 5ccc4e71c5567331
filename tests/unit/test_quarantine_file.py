"""QuarantineFile: a write is whole or absent, even on a full disk; records appended after
a torn line (a crash during an append) stay readable."""

from __future__ import annotations

import errno
import os

import msgspec
import pytest

from auditshipd.delivery.quarantine import QuarantineFile


def _records(q: QuarantineFile, *offsets: int) -> list:
    return [q.record("1:2", "/j/audit.jsonl", o, "invalid JSON", b"{not json") for o in offsets]


def test_a_write_cut_by_a_full_disk_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    """ENOSPC after part of the records was written: the part is cut off again, so the
    retry (the sink holds its cursor until it succeeds) does not follow a torn record."""
    q = QuarantineFile(tmp_path, "s")
    q.write(_records(q, 0))
    before = q.path.read_bytes()
    real_write = os.write

    def short_then_full(fd: int, data) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError):
        q.write(_records(q, 10, 20))
    monkeypatch.undo()
    assert q.path.read_bytes() == before
    q.write(_records(q, 10, 20))
    assert [r.offset for r in q.read()] == [0, 10, 20]


def test_records_after_a_torn_line_start_a_line_of_their_own(tmp_path):
    q = QuarantineFile(tmp_path, "s")
    q.write(_records(q, 0))
    with open(q.path, "ab") as f:
        f.write(b'{"quarantined_at":"2026')  # a crash during an append
    q.write(_records(q, 30))
    lines = q.path.read_bytes().splitlines()
    assert len(lines) == 3 and lines[1] == b'{"quarantined_at":"2026'
    decode = msgspec.json.Decoder().decode
    assert [decode(line)["offset"] for line in (lines[0], lines[2])] == [0, 30]
    assert q.count() == 3
