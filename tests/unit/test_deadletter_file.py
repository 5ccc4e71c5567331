"""DeadLetterFile: torn lines never swallow a record; a failed append leaves no torn
record behind; a replay's rewrite keeps unreadable lines and concurrent appends."""

from __future__ import annotations

import errno
import os

import pytest

from auditshipd.delivery import deadletters as deadletter
from auditshipd.delivery.deadletters import DeadLetter, DeadLetterFile


def _letter(eid: str) -> DeadLetter:
    return DeadLetter(sink="s", error="e", retryable=False, attempts=1, first_attempt_at="t",
                      last_attempt_at="t", dead_lettered_at="t", events=[{"id": eid}])


def test_append_after_a_torn_line_starts_a_new_line(tmp_path):
    """A crash cut the last record: the next append is still readable and the torn
    line is reported, not lost."""
    dlf = DeadLetterFile(tmp_path, "s")
    dlf.append(_letter("a"))
    with open(dlf.path, "ab") as f:
        f.write(b'{"sink":"s","err')
    dlf.append(_letter("b"))
    scan = dlf.scan()
    assert [x.events[0]["id"] for x in scan.letters] == ["a", "b"]
    assert scan.unreadable == [2]


def test_append_cut_by_a_full_disk_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    """ENOSPC after part of a record was written: the part is cut off again."""
    dlf = DeadLetterFile(tmp_path, "s")
    dlf.append(_letter("a"))
    before = dlf.path.read_bytes()
    real_write = os.write

    def short_then_full(fd: int, data) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(deadletter.os, "write", short_then_full)
    with pytest.raises(OSError):
        dlf.append(_letter("b"))
    monkeypatch.undo()
    assert dlf.path.read_bytes() == before


def test_remove_first_keeps_unreadable_lines_and_later_appends(tmp_path):
    """Replay read two letters; meanwhile a torn line sits between them and the daemon
    appended a third: the rewrite replaces only the two, keeps the rest in order."""
    dlf = DeadLetterFile(tmp_path, "s")
    dlf.append(_letter("a"))
    with open(dlf.path, "ab") as f:
        f.write(b"not json\n")
    dlf.append(_letter("b"))
    dlf.append(_letter("c"))
    dlf.remove_first(2, [_letter("b-kept")])
    assert dlf.path.read_bytes().count(b"not json") == 1
    assert [x.events[0]["id"] for x in dlf.read()] == ["b-kept", "c"]
