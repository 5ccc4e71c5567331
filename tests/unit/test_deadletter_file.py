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


def test_a_formatted_batch_keeps_the_lines_it_was_handed(tmp_path):
    """A batch in a sink's format (sealed CEF-like text here) becomes a letter with its
    events and its exact lines; written and read back, the replayed batch is those
    lines with the events as source, slices included; a letter without lines (written
    before lines were kept) is encoded again."""
    from auditshipd.delivery.batch import Batch
    from auditshipd.formats.registry import build_encoder

    source = [b'{"id":"a","action":"user.created"}', b'{"id":"b","action":"x.y"}']
    sent = [b'{"integrity":{"seq":7},"x":"\xc3\xa9"}', b"CEF:0|a\\|b|c=d"]
    letter = deadletter.letter_for(Batch(lines=sent, source=source), sink="s", error="e",
                                   retryable=False, attempts=2, first_attempt_at="t",
                                   last_attempt_at="t", dead_lettered_at="t")
    dlf = DeadLetterFile(tmp_path, "s")
    dlf.append(letter)
    (back,) = dlf.read()
    batch = deadletter.letter_batch(None, back)
    assert batch.lines == sent and batch.events == [{"id": "a", "action": "user.created"},
                                                    {"id": "b", "action": "x.y"}]
    assert batch[1:].lines == sent[1:] and batch[1:].ids == ["b"]
    native = deadletter.letter_for(Batch(lines=source), sink="s", error="e", retryable=False,
                                   attempts=1, first_attempt_at="t", last_attempt_at="t",
                                   dead_lettered_at="t")
    assert native.lines is None
    old = deadletter.letter_batch(build_encoder("cef"), native)
    assert old.lines[0].startswith(b"CEF:0|") and old.ids == ["a", "b"]
