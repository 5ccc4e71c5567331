"""Cursor entries and the durable cursor store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditshipd.journal.cursor import (
    HEAD_BYTES,
    TAIL_BYTES,
    CursorState,
    CursorStore,
    SegmentCursor,
    digest,
)
from auditshipd.journal.segments import Chunk


def cur(offset: int = 10) -> SegmentCursor:
    return SegmentCursor(path="/j/audit.jsonl", offset=offset, head_len=HEAD_BYTES,
                         head_hash=digest(b"h"), tail_hash=digest(b"t"))


def test_digest_is_stable_and_distinguishes() -> None:
    """digest is deterministic, 128-bit hex, and differs for different bytes."""
    assert digest(b"abc") == digest(b"abc")
    assert digest(b"abc") != digest(b"abd")
    assert len(digest(b"")) == 32


def test_windows_are_large_enough_to_hold_an_event_id() -> None:
    """The tail window spans more than a typical event line (so it includes an id)."""
    assert HEAD_BYTES >= 128
    assert TAIL_BYTES >= 1024


def test_store_round_trip(tmp_path: Path) -> None:
    """save then load gives back the same state; no temp file is left behind."""
    store = CursorStore(tmp_path)
    state = CursorState(sink="s1", segments={"1:2": cur(10), "1:3": cur(20)}, acked_events=7)
    store.save(state)
    assert store.exists("s1")
    assert store.load("s1") == state
    assert os.listdir(tmp_path / "cursors") == ["s1.json"]
    state.segments.pop("1:2")
    store.save(state)
    assert store.load("s1").segments == {"1:3": cur(20)}


def test_store_missing_is_empty(tmp_path: Path) -> None:
    """A sink without a cursor file starts with an empty cursor."""
    store = CursorStore(tmp_path)
    assert not store.exists("nope")
    assert store.load("nope") == CursorState(sink="nope")


@pytest.mark.parametrize("content", [b"", b"{", b'{"segments": 3}', b"\x00" * 20])
def test_store_corrupt_is_an_error(tmp_path: Path, content: bytes) -> None:
    """A torn or corrupt cursor file is an error naming the file, never silently reset."""
    store = CursorStore(tmp_path)
    store.dir.mkdir(parents=True)
    store.path("s").write_bytes(content)
    with pytest.raises(ValueError, match="s.json"):
        store.load("s")


def test_chunk_mark_at_uses_prefix_window() -> None:
    """Chunk.mark_at hashes the TAIL_BYTES before the position, prefix included."""
    prefix = b"p" * 10
    data = b"line one\nline two\n"
    mark = SegmentCursor(path="x", offset=100 + len(data), head_len=5, head_hash=digest(b"h"),
                         tail_hash=digest((prefix + data)[-TAIL_BYTES:]))
    c = Chunk(segment="1:1", path="x", start=100, data=data, mark=mark, prefix=prefix)
    assert c.mark_at(len(data)) == mark
    m = c.mark_at(9)
    assert m.offset == 109
    assert m.tail_hash == digest((prefix + data[:9])[-TAIL_BYTES:])
    assert (m.head_len, m.head_hash) == (5, mark.head_hash)


def test_concurrent_saves_never_tear_the_file(tmp_path: Path) -> None:
    """Saves of one sink from several threads (persister + shutdown) leave a valid file."""
    import threading

    store = CursorStore(tmp_path)
    states = [CursorState(sink="s", segments={f"1:{i}": cur(i) for i in range(n)},
                          acked_events=n) for n in (1, 50, 3, 200)]
    errors: list[BaseException] = []

    def work(state: CursorState) -> None:
        try:
            for _ in range(60):
                store.save(state)
                store.load("s")
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert store.load("s") == states[-1]  # the most acked one


def test_an_older_snapshot_never_replaces_a_newer_one(tmp_path: Path) -> None:
    """A save of a snapshot with fewer acked events than the last one saved is ignored."""
    store = CursorStore(tmp_path)
    new = CursorState(sink="s", segments={"1:2": cur(500)}, acked_events=10)
    old = CursorState(sink="s", segments={"1:2": cur(100)}, acked_events=4)
    store.save(new)
    store.save(old)
    assert store.load("s") == new
    newer = CursorState(sink="s", segments={}, acked_events=10)  # a release, no new events
    store.save(newer)
    assert store.load("s") == newer


def test_chunk_mark_at_every_line_end_matches_the_reference() -> None:
    """mark_at at every line end equals the hash of the TAIL_BYTES before that offset."""
    body = b"".join(b"line %05d %s\n" % (i, b"x" * (i % 300)) for i in range(200))
    whole = b"P" * 5000 + body
    start = 5000
    prefix = whole[start - TAIL_BYTES:start]
    mark = SegmentCursor(path="x", offset=len(whole), head_len=HEAD_BYTES,
                         head_hash=digest(whole[:HEAD_BYTES]),
                         tail_hash=digest(whole[-TAIL_BYTES:]))
    c = Chunk(segment="1:1", path="x", start=start, data=body, mark=mark, prefix=prefix)
    for end in [i + 1 for i, b in enumerate(body) if b == 0x0A]:
        m = c.mark_at(end)
        assert m.offset == start + end
        assert m.tail_hash == digest(whole[max(0, start + end - TAIL_BYTES):start + end])
    short = Chunk(segment="1:1", path="x", start=3, data=b"ab\n", mark=mark, prefix=b"xyz")
    assert short.mark_at(3).tail_hash == digest(b"xyzab\n")
