"""JournalReader: rotation, copytruncate, truncation, inode reuse, partial and bad lines.

The oracle of every test: the lines a consumer receives are exactly the lines written
(no loss, no duplicate), across rotations and restarts. A restart builds a new reader
from the marks of the items the consumer "acked" (Release removes the entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from tests.helpers.blocked_read import block_reads

from auditshipd.delivery.lines import decode_lines
from auditshipd.journal.cursor import HEAD_BYTES, CursorState, SegmentCursor, digest
from auditshipd.journal.reader import JournalReader
from auditshipd.journal.segment_reads import TORN, TORN_IN_GLOB_AFTER
from auditshipd.journal.segments import Chunk, OversizeLine, Release
from auditshipd.journal.watch import ChangeSignal
from auditshipd.journal.writer import AuditJournal


def ev(tag: str, i: int) -> bytes:
    """One journal line (no newline) with a unique id."""
    return b'{"id":"%s-%05d","action":"user.login","occurred_at":"2024-01-01T00:00:00.000Z"}' % (
        tag.encode(), i)


def lines(tag: str, n: int, start: int = 0) -> list[bytes]:
    return [ev(tag, i) for i in range(start, start + n)]


def append(path: Path, items: list[bytes]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(x + b"\n" for x in items))


def key_of(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


class Consumer:
    """Collects lines from readers and keeps the acked cursor across restarts."""

    def __init__(self, tmp_path: Path, **kw: object) -> None:
        self.pattern = str(tmp_path / "audit.jsonl*")
        # rotate_wait 0: tests of release see it at once; the grace has its own tests.
        self.kw = {"poll_interval": 0.05, "rotate_wait": 0.0, **kw}
        self.committed: dict[str, SegmentCursor] = {}
        self.lines: list[bytes] = []
        self.items: list[object] = []
        self.reader: JournalReader | None = None

    def start(self, **kw: object) -> JournalReader:
        if self.reader is not None:
            self.reader.close()
        state = CursorState(sink="t", segments=dict(self.committed))
        self.reader = JournalReader([self.pattern], state, **{**self.kw, **kw})
        return self.reader

    def take(self, item: object, ack: bool = True) -> None:
        self.items.append(item)
        if isinstance(item, Chunk):
            self.lines.extend(item.data.split(b"\n")[:-1])
            if ack:
                self.committed[item.segment] = item.mark
        elif isinstance(item, OversizeLine):
            if ack:
                self.committed[item.segment] = item.mark
        elif isinstance(item, Release) and ack:
            self.committed.pop(item.segment, None)

    async def collect(self, n: int, timeout: float = 5.0, ack: bool = True) -> list[bytes]:
        """Wait until ``n`` lines in all were received (fails after ``timeout``)."""
        assert self.reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.lines) < n:
            left = deadline - loop.time()
            assert left > 0, f"got {len(self.lines)} lines of {n}: {self.lines[-3:]}"
            item = await self.reader.next_item(timeout=left)
            if item is not None:
                self.take(item, ack)
        return self.lines

    async def until(self, cond, timeout: float = 5.0) -> None:
        """Consume items until ``cond()`` holds."""
        assert self.reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            left = deadline - loop.time()
            assert left > 0, "condition not reached"
            item = await self.reader.next_item(timeout=min(left, 0.2))
            if item is not None:
                self.take(item)

    async def quiet(self, wait: float = 0.15) -> None:
        """Consume until nothing more arrives for ``wait`` seconds (checks no extra lines)."""
        assert self.reader is not None
        while True:
            item = await self.reader.next_item(timeout=wait)
            if item is None:
                return
            self.take(item)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def assert_exact(got: list[bytes], expected: list[bytes]) -> None:
    dups = [x for x, n in Counter(got).items() if n > 1]
    assert not dups, f"duplicates: {dups[:5]}"
    missing = set(expected) - set(got)
    assert not missing, f"lost {len(missing)} lines: {sorted(missing)[:5]}"
    extra = set(got) - set(expected)
    assert not extra, f"unexpected lines: {sorted(extra)[:5]}"


def assert_in_order(got: list[bytes], tag: str) -> None:
    """Lines of one writer (``tag``) arrive in the order they were written."""
    mine = [x for x in got if x.startswith(b'{"id":"%s-' % tag.encode())]
    assert mine == sorted(mine)


# -- plain tailing ------------------------------------------------------------------------


async def test_follows_appends_in_order(journal: Path, consumer: Consumer) -> None:
    """Appended lines arrive once, in order, with marks on line boundaries."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    append(journal, lines("a", 15, 10))
    await consumer.collect(25)
    await consumer.quiet()
    assert consumer.lines == lines("a", 25)
    mark = consumer.committed[key_of(journal)]
    assert mark.offset == journal.stat().st_size
    assert mark.path == str(journal)


async def test_partial_last_line_waits_for_newline_and_cursor_sits_before_it(
        journal: Path, consumer: Consumer) -> None:
    """A partial last line is not returned; after a restart the cursor sits before it."""
    append(journal, lines("a", 3))
    boundary = journal.stat().st_size
    full = ev("a", 3)
    with open(journal, "ab") as f:
        f.write(full[:20])
    consumer.start()
    await consumer.collect(3)
    await consumer.quiet()
    assert consumer.lines == lines("a", 3)
    assert consumer.committed[key_of(journal)].offset == boundary
    assert consumer.reader is not None and consumer.reader.lag_bytes() == 20
    consumer.close()
    with open(journal, "ab") as f:  # completed while "stopped"
        f.write(full[20:] + b"\n")
    consumer.start()
    await consumer.collect(4)
    await consumer.quiet()
    assert consumer.lines == lines("a", 4)


async def test_partial_line_completed_while_running(journal: Path, consumer: Consumer) -> None:
    """A line written in pieces is returned whole once its newline arrives."""
    consumer.start()
    full = ev("a", 0)
    with open(journal, "ab") as f:
        f.write(full[:10])
    assert await consumer.reader.next_item(timeout=0.2) is None
    with open(journal, "ab") as f:
        f.write(full[10:30])
    assert await consumer.reader.next_item(timeout=0.2) is None
    with open(journal, "ab") as f:
        f.write(full[30:] + b"\n")
    await consumer.collect(1)
    assert consumer.lines == [full]


async def test_restart_without_ack_rereads_only_unacked(journal: Path, consumer: Consumer) -> None:
    """Items not acked before a restart are read again (at-least-once), acked ones are not."""
    append(journal, lines("a", 5))
    consumer.start()
    await consumer.collect(5)
    append(journal, lines("a", 5, 5))
    await consumer.collect(10, ack=False)
    consumer.close()
    consumer.lines.clear()
    consumer.start()
    await consumer.collect(5)
    await consumer.quiet()
    assert consumer.lines == lines("a", 5, 5)


# -- rename rotation ----------------------------------------------------------------------


async def test_rename_rotation_while_reading(journal: Path, consumer: Consumer) -> None:
    """Rename-and-create rotation while reading: the old segment is drained, nothing lost."""
    append(journal, lines("a", 20))
    consumer.start()
    await consumer.collect(20)
    append(journal, lines("a", 10, 20))  # not read yet when the rotation happens
    os.rename(journal, journal.with_name("audit.jsonl.1"))
    append(journal, lines("a", 15, 30))
    await consumer.collect(45)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 45))
    assert consumer.lines == lines("a", 45), "the rotated segment is drained first"


async def test_rename_rotation_out_of_glob_drains_then_releases(
        tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """A segment renamed out of the glob is drained through its descriptor, then released."""
    append(journal, lines("a", 5))
    consumer.start()
    await consumer.collect(5)
    old_key = key_of(journal)
    append(journal, lines("a", 5, 5))
    os.rename(journal, tmp_path / "archived.log")
    append(journal, lines("a", 5, 10))
    await consumer.collect(15)
    await consumer.until(lambda: any(isinstance(i, Release) and i.segment == old_key
                                     for i in consumer.items))
    await consumer.quiet()
    assert consumer.lines == lines("a", 15)
    assert old_key not in consumer.committed


async def test_writer_appending_to_the_renamed_file_within_rotate_wait_is_read(
        tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """A writer that keeps its descriptor after the rename (it reopens the path later):
    what it appends within rotate_wait is read; then the segment goes."""
    append(journal, lines("a", 5))
    consumer.start(rotate_wait=1.0)
    past = time.time() - 3  # last written before rotate_wait: the wait counts from the rename too
    os.utime(journal, (past, past))
    await consumer.collect(5)
    old_key = key_of(journal)
    archived = tmp_path / "archived.log"
    with open(journal, "ab") as writer:  # the application's descriptor
        os.rename(journal, archived)
        await consumer.quiet()  # drained, out of the glob, still held
        assert old_key in consumer.committed
        writer.write(b"".join(x + b"\n" for x in lines("a", 3, 5)))
        writer.flush()
        await consumer.collect(8)
    append(journal, lines("b", 2))  # the reopened path
    await consumer.collect(10)
    await consumer.until(lambda: any(isinstance(i, Release) and i.segment == old_key
                                     for i in consumer.items))
    assert_exact(consumer.lines, lines("a", 8) + lines("b", 2))
    assert old_key not in consumer.committed


async def test_rotate_wait_zero_releases_a_drained_renamed_segment_at_once(
        tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    append(journal, lines("a", 5))
    consumer.start(rotate_wait=0.0)
    await consumer.collect(5)
    old_key = key_of(journal)
    os.rename(journal, tmp_path / "archived.log")
    await consumer.until(lambda: old_key not in consumer.committed)


async def test_rename_rotation_while_stopped(journal: Path, consumer: Consumer) -> None:
    """Rotation between two runs: the renamed segment resumes at its offset, the new one at 0."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    consumer.close()
    append(journal, lines("a", 5, 10))
    os.rename(journal, journal.with_name("audit.jsonl.1"))
    append(journal, lines("a", 7, 15))
    consumer.start()
    await consumer.collect(22)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 22))
    assert_in_order(consumer.lines, "a")


async def test_repeated_rotation_with_restarts(journal: Path, consumer: Consumer) -> None:
    """Several rotations, each followed by a restart: every line exactly once."""
    written: list[bytes] = []
    for r in range(4):
        batch = lines("a", 6, len(written))
        append(journal, batch)
        written += batch
        consumer.start()
        await consumer.collect(len(written))
        consumer.close()
        os.rename(journal, journal.with_name(f"audit.jsonl.{r}"))
    consumer.start()
    await consumer.quiet()
    assert consumer.lines == written


# -- copytruncate -------------------------------------------------------------------------


def copytruncate(journal: Path, target: str = "audit.jsonl.1") -> None:
    shutil.copyfile(journal, journal.with_name(target))
    os.truncate(journal, 0)


async def test_copytruncate_while_reading(journal: Path, consumer: Consumer) -> None:
    """Copytruncate while reading: unread lines come from the copy, never re-read from 0."""
    append(journal, lines("a", 20))
    consumer.start()
    await consumer.collect(20)
    append(journal, lines("a", 8, 20))  # only in the copy once truncated
    copytruncate(journal)
    append(journal, lines("a", 6, 28))
    await consumer.collect(34)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 34))
    assert_in_order(consumer.lines, "a")


async def test_copytruncate_across_restart(journal: Path, consumer: Consumer) -> None:
    """Copytruncate while stopped: the copy continues at the cursor, the original from 0."""
    append(journal, lines("a", 20))
    consumer.start()
    await consumer.collect(20)
    consumer.close()
    append(journal, lines("a", 8, 20))
    copytruncate(journal)
    append(journal, lines("a", 6, 28))
    consumer.start()
    await consumer.collect(34)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 34))


async def test_copytruncate_then_restart_keeps_copy_position(
        journal: Path, consumer: Consumer) -> None:
    """After a copytruncate seen while running, a restart neither re-reads the copy nor loses."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    append(journal, lines("a", 4, 10))
    copytruncate(journal)
    append(journal, lines("a", 3, 14))
    await consumer.collect(17)
    consumer.close()
    append(journal, lines("a", 3, 17))
    consumer.start()
    await consumer.collect(20)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 20))


async def test_copytruncate_with_writer_at_old_offset_skips_nul_hole(
        journal: Path, consumer: Consumer) -> None:
    """A writer without O_APPEND keeps its offset after the truncation: NULs skipped."""
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT, 0o644)  # no O_APPEND
    try:
        os.write(fd, b"".join(x + b"\n" for x in lines("a", 30)))
        consumer.start()
        await consumer.collect(30)
        os.write(fd, b"".join(x + b"\n" for x in lines("a", 5, 30)))
        copytruncate(journal)
        hole = os.lseek(fd, 0, os.SEEK_CUR)
        os.write(fd, b"".join(x + b"\n" for x in lines("a", 5, 35)))
        assert journal.read_bytes()[:hole] == b"\0" * hole
        await consumer.collect(40)
        await consumer.quiet()
        os.write(fd, b"".join(x + b"\n" for x in lines("a", 4, 40)))
        await consumer.collect(44)
        await consumer.quiet()
    finally:
        os.close(fd)
    assert_exact(consumer.lines, lines("a", 44))
    assert all(b"\0" not in x for x in consumer.lines)


# -- truncation, deletion, inode reuse ----------------------------------------------------


async def test_deleted_and_recreated_with_same_name(journal: Path, consumer: Consumer) -> None:
    """A deleted file is drained and released; the new file of the same name read from 0."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    old_key = key_of(journal)
    append(journal, lines("a", 3, 10))  # unread when deleted: drained via our descriptor
    os.unlink(journal)
    append(journal, lines("b", 7))
    await consumer.collect(20)
    await consumer.until(lambda: old_key not in consumer.committed)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 13) + lines("b", 7))


async def test_deleted_and_recreated_while_stopped(journal: Path, consumer: Consumer) -> None:
    """Deleted and re-created between two runs (inode may be reused): the new file from 0."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    consumer.close()
    os.unlink(journal)
    append(journal, lines("b", 4))
    consumer.lines.clear()
    consumer.start()
    await consumer.collect(4)
    await consumer.quiet()
    assert consumer.lines == lines("b", 4)


async def test_inode_reused_by_unrelated_content_reads_from_zero(
        journal: Path, consumer: Consumer) -> None:
    """A cursor whose dev:inode matches but whose head hash differs: read from 0."""
    append(journal, lines("b", 12))
    size = journal.stat().st_size
    consumer.committed[key_of(journal)] = SegmentCursor(
        path=str(journal), offset=size // 2, head_len=HEAD_BYTES,
        head_hash=digest(b"x" * HEAD_BYTES), tail_hash=digest(b"whatever"))
    consumer.start()
    await consumer.collect(12)
    await consumer.quiet()
    assert consumer.lines == lines("b", 12)


async def test_same_head_but_rewritten_tail_reads_from_zero(
        journal: Path, consumer: Consumer) -> None:
    """Same first bytes but different bytes before the offset: rewritten, read from 0."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    consumer.close()
    data = journal.read_bytes()
    rewritten = data[:HEAD_BYTES] + data[HEAD_BYTES:].replace(b"2024", b"2025")
    assert len(rewritten) == len(data)
    journal.write_bytes(rewritten)
    consumer.lines.clear()
    consumer.start()
    await consumer.collect(10)
    await consumer.quiet()
    assert consumer.lines == rewritten.split(b"\n")[:-1]


async def test_cursor_past_end_of_shrunk_file_restart(journal: Path, consumer: Consumer) -> None:
    """On restart, a cursor beyond the end of a file that shrank means truncation: from 0."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    consumer.close()
    keep = len(b"".join(x + b"\n" for x in lines("a", 6)))
    assert keep > HEAD_BYTES  # same head as the cursor's: only the size tells
    os.truncate(journal, keep)
    consumer.lines.clear()
    consumer.start()
    await consumer.collect(6)
    append(journal, lines("c", 2))
    await consumer.collect(8)
    await consumer.quiet()
    assert consumer.lines == lines("a", 6) + lines("c", 2)


async def test_cursor_past_end_of_shrunk_file_while_running(
        journal: Path, consumer: Consumer) -> None:
    """While running, a file that shrank below the offset (same head) is read from 0."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    os.truncate(journal, len(b"".join(x + b"\n" for x in lines("a", 6))))
    append(journal, lines("c", 1))
    await consumer.collect(17)
    await consumer.quiet()
    assert consumer.lines == lines("a", 10) + lines("a", 6) + lines("c", 1)


async def test_truncated_while_reading_restarts_at_zero(journal: Path, consumer: Consumer) -> None:
    """A file truncated (size below the offset) while reading is read again from the start."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    os.truncate(journal, 0)
    append(journal, lines("b", 3))
    await consumer.collect(13)
    await consumer.quiet()
    assert consumer.lines == lines("a", 10) + lines("b", 3)


# -- many files ---------------------------------------------------------------------------


async def test_many_files_and_files_appearing_while_running(
        tmp_path: Path, consumer: Consumer) -> None:
    """Every file the glob matches is read, including files created while running."""
    expected: list[bytes] = []
    for i in range(12):
        batch = lines(f"f{i:02d}", 5)
        append(tmp_path / f"audit.jsonl.{i:02d}", batch)
        expected += batch
    (tmp_path / "audit.jsonl.gz").write_bytes(b"not text\n")  # excluded
    (tmp_path / ".audit.jsonl.lock").write_bytes(b"")
    (tmp_path / "other.log").write_bytes(ev("x", 0) + b"\n")  # outside the glob
    consumer.start()
    await consumer.collect(len(expected))
    for i in range(12, 16):
        batch = lines(f"f{i:02d}", 3)
        append(tmp_path / f"audit.jsonl.{i:02d}", batch)
        expected += batch
    await consumer.collect(len(expected))
    await consumer.quiet()
    assert_exact(consumer.lines, expected)
    for i in range(16):
        assert_in_order(consumer.lines, f"f{i:02d}")


# -- oversize lines -----------------------------------------------------------------------


async def test_line_longer_than_max_line_bytes(journal: Path, consumer: Consumer) -> None:
    """A single oversize line: OversizeLine with offset and length; next lines still read."""
    big = b'{"id":"big","pad":"' + b"x" * 5000 + b'"}'
    append(journal, lines("a", 2))
    off = journal.stat().st_size
    append(journal, [big])
    append(journal, lines("a", 3, 2))
    consumer.start(max_line_bytes=1000, block_bytes=256)
    await consumer.collect(5)
    await consumer.quiet()
    assert consumer.lines == lines("a", 5)
    over = [i for i in consumer.items if isinstance(i, OversizeLine)]
    assert len(over) == 1
    assert (over[0].offset, over[0].length) == (off, len(big))
    assert over[0].preview == big[:256]
    assert over[0].mark.offset == off + len(big) + 1


async def test_oversize_line_written_in_pieces(journal: Path, consumer: Consumer) -> None:
    """An oversize line still being written is skipped once complete, and only once."""
    consumer.start(max_line_bytes=100, block_bytes=64)
    with open(journal, "ab") as f:
        f.write(b"y" * 300)
    assert await consumer.reader.next_item(timeout=0.2) is None
    with open(journal, "ab") as f:
        f.write(b"y" * 300 + b"\n" + ev("a", 0) + b"\n")
    await consumer.collect(1)
    await consumer.quiet()
    over = [i for i in consumer.items if isinstance(i, OversizeLine)]
    assert [(o.offset, o.length) for o in over] == [(0, 600)]
    assert consumer.lines == [ev("a", 0)]


async def test_oversize_line_inside_a_block_goes_to_decode_lines(
        journal: Path, consumer: Consumer) -> None:
    """An oversize line inside a block reaches decode_lines, which reports it as bad."""
    big = b'{"id":"big","pad":"' + b"x" * 500 + b'"}'
    append(journal, [ev("a", 0), big, ev("a", 1)])
    consumer.start(max_line_bytes=200)
    await consumer.collect(3)
    chunks = [i for i in consumer.items if isinstance(i, Chunk)]
    good, bad = [], []
    for c in chunks:
        g, b = decode_lines(c.data, c.start, 200)
        good += g
        bad += b
    assert [e["id"] for _, e in good] == ["a-00000", "a-00001"]
    assert [(off, reason.startswith("line of")) for off, reason, _ in bad] == [
        (len(ev("a", 0)) + 1, True)]


# -- bad lines through decode_lines -------------------------------------------------------


async def test_malformed_lines_are_split_with_offsets(journal: Path, consumer: Consumer) -> None:
    """Invalid UTF-8, arrays, scalars, empty lines and \\r\\n through the reader + decode_lines."""
    raw = [
        ev("a", 0),
        b'{"id":"bad-utf8","action":"\xff\xfe","occurred_at":"x"}',
        b"[1, 2]",
        b"42",
        b"",
        ev("a", 1) + b"\r",
        b'{"id":"a-00002"',
        ev("a", 3),
    ]
    append(journal, raw)
    consumer.start()
    await consumer.collect(len(raw))
    offsets = []
    pos = 0
    for x in raw:
        offsets.append(pos)
        pos += len(x) + 1
    good, bad = [], []
    for c in consumer.items:
        assert isinstance(c, Chunk)
        g, b = decode_lines(c.data, c.start, 1 << 20)
        good += g
        bad += b
    assert [(off, e["id"]) for off, e in good] == [
        (offsets[0], "a-00000"), (offsets[5], "a-00001"), (offsets[7], "a-00003")]
    assert [off for off, _, _ in bad] == [offsets[1], offsets[2], offsets[3], offsets[6]]
    reasons = [r for _, r, _ in bad]
    assert reasons[0].startswith("invalid JSON")
    assert "array" in reasons[1] or "list" in reasons[1]
    assert "not a JSON object" in reasons[2]
    assert reasons[3].startswith("invalid JSON")


# -- start_at_end -------------------------------------------------------------------------


async def test_start_at_end(tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """start_at_end skips existing complete lines only; new files are read from 0."""
    append(journal, lines("old", 10))
    partial = ev("a", 0)
    with open(journal, "ab") as f:
        f.write(partial[:15])
    consumer.start(start_at_end=True)
    first = await consumer.reader.next_item(timeout=0.2)  # the position, to commit
    assert isinstance(first, Chunk) and first.data == b""
    assert first.mark.offset == first.start == journal.stat().st_size - 15
    consumer.take(first)
    assert await consumer.reader.next_item(timeout=0.2) is None
    with open(journal, "ab") as f:
        f.write(partial[15:] + b"\n")
    append(journal, lines("a", 2, 1))
    append(tmp_path / "audit.jsonl.new", lines("n", 2))
    await consumer.collect(5)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 3) + lines("n", 2))


async def test_start_at_end_primed_fixes_the_end_before_the_first_read(journal: Path, consumer: Consumer) -> None:
    """prime() (called by the sink driver at start-up): lines appended after it and before
    the first read are read, not skipped as "existing"."""
    append(journal, lines("old", 10))
    reader = consumer.start(start_at_end=True)
    await asyncio.to_thread(reader.prime)
    append(journal, lines("a", 3))
    await consumer.collect(3)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 3))


async def test_start_at_end_ignored_with_existing_cursor(journal: Path, consumer: Consumer) -> None:
    """With a stored cursor, start_at_end does not skip: the cursor wins."""
    append(journal, lines("a", 4))
    consumer.start()
    await consumer.collect(4)
    consumer.close()
    append(journal, lines("a", 3, 4))
    consumer.start(start_at_end=True)
    await consumer.collect(7)
    await consumer.quiet()
    assert consumer.lines == lines("a", 7)


# -- idle segments ------------------------------------------------------------------------


async def test_idle_segment_reopened_when_it_grows(journal: Path, consumer: Consumer) -> None:
    """A drained segment closed for idleness is reopened when it grows, at its offset."""
    append(journal, lines("a", 5))
    reader = consumer.start(idle_after=0.05)
    await consumer.collect(5)
    await consumer.until(lambda: key_of(journal) in reader.idle)
    append(journal, lines("a", 4, 5))
    await consumer.collect(9)
    await consumer.until(lambda: key_of(journal) in reader.idle)
    await consumer.quiet()
    assert consumer.lines == lines("a", 9)


async def test_idle_segment_truncated_is_read_from_zero(journal: Path, consumer: Consumer) -> None:
    """An idle segment that shrank is read again from the start (not taken for a copy)."""
    append(journal, lines("a", 5))
    reader = consumer.start(idle_after=0.05)
    await consumer.collect(5)
    await consumer.until(lambda: key_of(journal) in reader.idle)
    keep = len(b"".join(x + b"\n" for x in lines("a", 4)))
    assert keep > HEAD_BYTES  # same head as before: only the size tells
    os.truncate(journal, keep)
    append(journal, lines("b", 2))
    await consumer.collect(11)
    await consumer.quiet()
    assert consumer.lines == lines("a", 5) + lines("a", 4) + lines("b", 2)


async def test_idle_segment_deleted_is_released(journal: Path, consumer: Consumer) -> None:
    """An idle segment that disappears is released."""
    append(journal, lines("a", 2))
    reader = consumer.start(idle_after=0.05)
    await consumer.collect(2)
    key = key_of(journal)
    await consumer.until(lambda: key in reader.idle)
    os.unlink(journal)
    await consumer.until(lambda: any(isinstance(i, Release) and i.segment == key
                                     for i in consumer.items))
    assert key not in consumer.committed


# -- wake-ups -----------------------------------------------------------------------------


async def run_scenario(tmp_path: Path, **kw: object) -> list[bytes]:
    """Writes, a rotation and a copytruncate; returns the lines a reader received."""
    journal = tmp_path / "audit.jsonl"
    signal: ChangeSignal | None = kw.get("signal")  # type: ignore[assignment]
    c = Consumer(tmp_path, **kw)
    c.start()

    def changed() -> None:
        if signal is not None:
            signal.notify()

    try:
        append(journal, lines("a", 5))
        changed()
        await c.collect(5, timeout=3)
        append(journal, lines("a", 5, 5))
        os.rename(journal, journal.with_name("audit.jsonl.1"))
        append(journal, lines("a", 5, 10))
        changed()
        await c.collect(15, timeout=3)
        append(journal, lines("a", 3, 15))
        copytruncate(journal, "audit.jsonl.2")
        append(journal, lines("a", 3, 18))
        changed()
        await c.collect(21, timeout=3)
        await c.quiet(0.2)
    finally:
        c.close()
    return c.lines


async def test_polling_and_signal_wakeups_give_the_same_results(tmp_path: Path) -> None:
    """Polling only and ChangeSignal wake-ups (no polling) deliver the same lines."""
    (tmp_path / "p").mkdir()
    (tmp_path / "s").mkdir()
    polled = await run_scenario(tmp_path / "p", poll_interval=0.05)
    signal = ChangeSignal()
    signalled = await run_scenario(tmp_path / "s", poll_interval=60.0, signal=signal)
    assert_exact(polled, lines("a", 21))
    assert sorted(polled) == sorted(signalled)


async def test_signal_wakes_a_waiting_reader(journal: Path) -> None:
    """A reader waiting on a long poll interval wakes up at once on notify()."""
    signal = ChangeSignal()
    reader = JournalReader([str(journal) + "*"], CursorState(sink="t"), poll_interval=60.0,
                           signal=signal)
    try:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(reader.next_item(timeout=10))
        # until the reader waits on the signal (an asyncio.Event: its waiters), so that the
        # line below is found by the wake-up, not by the reader's first look
        deadline = loop.time() + 5
        while not getattr(signal.current, "_waiters", None):
            assert loop.time() < deadline and not task.done(), "the reader never waited"
            await asyncio.sleep(0.005)
        append(journal, lines("a", 1))
        t0 = loop.time()
        signal.notify()
        item = await asyncio.wait_for(task, 5)
        assert isinstance(item, Chunk) and item.data == ev("a", 0) + b"\n"
        assert loop.time() - t0 < 2
    finally:
        reader.close()


async def test_chunk_mark_at_matches_reader_marks(journal: Path, consumer: Consumer) -> None:
    """Chunk.mark_at(len(data)) equals the chunk's own mark (used for partial batches)."""
    append(journal, lines("a", 50))
    consumer.start()
    await consumer.collect(25)
    append(journal, lines("a", 5, 50))
    await consumer.collect(55)
    for c in consumer.items:
        assert isinstance(c, Chunk)
        assert c.mark_at(len(c.data)) == c.mark
    first = consumer.items[0]
    assert isinstance(first, Chunk)
    end = first.data.index(b"\n") + 1
    mid = first.mark_at(end)
    assert mid.offset == first.start + end
    # a restart from a mid-chunk mark resumes right after that line
    c2 = Consumer(journal.parent)
    c2.committed[first.segment] = mid
    c2.start()
    try:
        await c2.collect(54)
        await c2.quiet()
    finally:
        c2.close()
    assert c2.lines == lines("a", 54, 1)


# -- order across segments with coarse timestamps -----------------------------------------


def same_mtime(*paths: Path) -> None:
    """Simulate coarse file timestamps: a rotation and the next write in the same tick."""
    st = paths[0].stat()
    for p in paths:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


async def test_rename_rotation_order_with_equal_mtimes(journal: Path, consumer: Consumer) -> None:
    """Rotated segment and new file with the same mtime: the rotated one is drained first."""
    append(journal, lines("a", 5))
    consumer.start()
    await consumer.collect(5)
    append(journal, lines("a", 5, 5))
    rotated = journal.with_name("audit.jsonl.1")
    os.rename(journal, rotated)
    append(journal, lines("a", 5, 10))
    same_mtime(rotated, journal)
    await consumer.collect(15)
    await consumer.quiet()
    assert consumer.lines == lines("a", 15)


async def test_rename_rotation_while_stopped_order_with_equal_mtimes(
        journal: Path, consumer: Consumer) -> None:
    """After a restart, a resumed rotated segment is read before a new file of the same mtime."""
    append(journal, lines("a", 5))
    consumer.start()
    await consumer.collect(5)
    consumer.close()
    append(journal, lines("a", 5, 5))
    rotated = journal.with_name("audit.jsonl.20240101T000000.000000Z")
    os.rename(journal, rotated)
    append(journal, lines("a", 5, 10))
    same_mtime(rotated, journal)
    consumer.start()
    await consumer.collect(15)
    await consumer.quiet()
    assert consumer.lines == lines("a", 15)


async def test_first_start_order_with_equal_mtimes(journal: Path, consumer: Consumer) -> None:
    """First start, rotated segment and live file with the same mtime: rotated one first."""
    rotated = journal.with_name("audit.jsonl.20240101T000000.000000Z")
    append(rotated, lines("a", 5))
    append(journal, lines("a", 5, 5))
    same_mtime(rotated, journal)
    consumer.start()
    await consumer.collect(10)
    assert consumer.lines == lines("a", 10)


async def test_copy_seen_before_the_truncation_loses_nothing(
        journal: Path, consumer: Consumer) -> None:
    """The copy is scanned before the original is truncated: nothing lost (dups bounded)."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    append(journal, lines("a", 4, 10))
    shutil.copyfile(journal, journal.with_name("audit.jsonl.1"))
    await consumer.collect(14)  # reads the copy and/or the original
    os.truncate(journal, 0)
    append(journal, lines("a", 3, 14))
    await consumer.until(lambda: set(lines("a", 17)) <= set(consumer.lines))
    await consumer.quiet()
    assert set(consumer.lines) == set(lines("a", 17))
    dups = len(consumer.lines) - 17
    assert dups <= 4, "only the lines between the copy and the truncation may repeat"


async def test_cursor_entries_of_vanished_files_are_released(
        journal: Path, consumer: Consumer) -> None:
    """On restart, entries for files that no longer exist are released from the cursor."""
    append(journal, lines("a", 3))
    consumer.start()
    await consumer.collect(3)
    consumer.close()
    gone = key_of(journal)
    append(journal.with_name("audit.jsonl.x"), lines("b", 1))  # before: no inode reuse
    os.unlink(journal)
    consumer.start()
    await consumer.collect(4)
    await consumer.until(lambda: gone not in consumer.committed)
    assert any(isinstance(i, Release) and i.segment == gone for i in consumer.items)


async def test_nul_hole_across_restart(journal: Path, consumer: Consumer) -> None:
    """Copytruncate + writer at its old offset while stopped: NULs skipped after restart."""
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT, 0o644)  # no O_APPEND
    try:
        os.write(fd, b"".join(x + b"\n" for x in lines("a", 10)))
        consumer.start()
        await consumer.collect(10)
        consumer.close()
        os.write(fd, b"".join(x + b"\n" for x in lines("a", 3, 10)))
        copytruncate(journal)
        os.write(fd, b"".join(x + b"\n" for x in lines("a", 3, 13)))
    finally:
        os.close(fd)
    consumer.start()
    await consumer.collect(16)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 16))


async def test_truncated_while_skipping_an_oversize_line(
        journal: Path, consumer: Consumer) -> None:
    """A file truncated while an unfinished oversize line is skipped is read again from 0."""
    append(journal, lines("a", 2))
    with open(journal, "ab") as f:
        f.write(b"z" * 500)  # an oversize line, not finished
    consumer.start(max_line_bytes=100, block_bytes=64)
    await consumer.collect(2)
    assert await consumer.reader.next_item(timeout=0.2) is None
    os.truncate(journal, 0)
    append(journal, lines("b", 3))
    await consumer.collect(5)
    await consumer.quiet()
    assert consumer.lines == lines("a", 2) + lines("b", 3)
    assert not [i for i in consumer.items if isinstance(i, OversizeLine)]


async def test_copy_still_being_written(journal: Path, consumer: Consumer) -> None:
    """A copy shorter than our offset is waited for, then continued at the offset."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    append(journal, lines("a", 5, 10))
    data = journal.read_bytes()
    copy = journal.with_name("audit.jsonl.1")
    # cp in progress: its first block is written (a copy caught with fewer than
    # HEAD_BYTES cannot be told from a new file: cp writes far more in one write)
    copy.write_bytes(data[:HEAD_BYTES + 50])
    os.truncate(journal, 0)
    await consumer.quiet(0.2)
    assert len(consumer.lines) == 10
    with open(copy, "ab") as f:
        f.write(data[HEAD_BYTES + 50:])
    await consumer.collect(15)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 15))


async def test_copy_seen_while_empty_continues_at_the_offset(
        journal: Path, consumer: Consumer) -> None:
    """An empty copy is not tracked as a new file read from 0: once the copier wrote it,
    it is recognised as the copy and continues at the reader's offset (no line twice)."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    append(journal, lines("a", 5, 10))  # in the copy only once the original is truncated
    copy = journal.with_name("audit.jsonl.1")
    copy.touch()  # the copier created it...
    await consumer.quiet(0.2)  # ...and a scan saw it empty
    assert len(consumer.lines) <= 15
    copy.write_bytes(journal.read_bytes())  # then copied...
    os.truncate(journal, 0)  # ...and truncated the original
    append(journal, lines("a", 3, 15))
    await consumer.collect(18)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 18))
    copied = [i for i in consumer.items if isinstance(i, Chunk) and i.path == str(copy)]
    assert copied and all(c.start > 0 for c in copied), "the copy was read from its start"


async def test_empty_file_then_written_is_read_from_its_start(
        journal: Path, consumer: Consumer) -> None:
    """A new file that stays empty for a while (a rename rotation's new live file) is
    read from its start once written: waiting for its content loses nothing."""
    append(journal, lines("a", 4))
    consumer.start()
    await consumer.collect(4)
    os.rename(journal, journal.with_name("audit.jsonl.1"))
    journal.touch()
    await consumer.quiet(0.2)
    append(journal, lines("b", 6))
    await consumer.collect(10)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("a", 4) + lines("b", 6))


async def test_repeated_copytruncate_with_numbered_copies(
        journal: Path, consumer: Consumer) -> None:
    """logrotate-style copytruncate, .1 renamed to .2 each time: every line once."""
    written: list[bytes] = []
    consumer.start()
    for r in range(3):
        batch = lines("a", 7, len(written))
        append(journal, batch)
        written += batch
        await consumer.collect(len(written))
        more = lines("a", 3, len(written))
        append(journal, more)
        written += more
        one, two = journal.with_name("audit.jsonl.1"), journal.with_name("audit.jsonl.2")
        if one.exists():
            os.replace(one, two)
        copytruncate(journal)
        if r == 1:  # and a restart in the middle
            await consumer.collect(len(written))
            consumer.close()
            consumer.start()
    await consumer.collect(len(written))
    await consumer.quiet()
    assert_exact(consumer.lines, written)


async def test_reader_follows_a_rotating_writer_across_restarts(
        journal: Path, consumer: Consumer) -> None:
    """AuditJournal rotating under load while read, with restarts: every event exactly once."""
    n = 1500
    j = AuditJournal(journal, rotate_bytes=8_000)

    def write() -> None:
        for i in range(n):
            assert j.record("a", actor={"type": "user"}, id=f"w-{i:05d}")

    consumer.start()
    writer = asyncio.ensure_future(asyncio.to_thread(write))
    try:
        for target in (300, 700, 1100):
            await consumer.collect(target, timeout=10)
            consumer.close()  # restart: acked marks only
            consumer.start()
        await writer
        await consumer.collect(n, timeout=10)
        await consumer.quiet()
    finally:
        await asyncio.gather(writer, return_exceptions=True)
        j.close()
    ids = [msgspec.json.decode(x)["id"] for x in consumer.lines]
    assert len(ids) == n and len(set(ids)) == n
    assert ids == sorted(ids), "journal order across rotated segments"
    assert len(list(journal.parent.glob("audit.jsonl.*"))) > 5


async def test_copytruncate_order_with_equal_mtimes(journal: Path, consumer: Consumer) -> None:
    """Copy and truncated original with the same mtime: the copy's rest is read first."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    append(journal, lines("a", 5, 10))
    copytruncate(journal)
    append(journal, lines("a", 5, 15))
    same_mtime(journal.with_name("audit.jsonl.1"), journal)
    await consumer.collect(20)
    await consumer.quiet()
    assert consumer.lines == lines("a", 20)


async def test_segment_renamed_out_of_the_glob_and_back(
        tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """A released segment that comes back into the glob resumes where it was, not at 0."""
    append(journal, lines("a", 6))
    consumer.start()
    await consumer.collect(6)
    key = key_of(journal)
    outside = tmp_path / "parked.log"
    os.rename(journal, outside)
    await consumer.until(lambda: key not in consumer.committed)
    os.rename(outside, journal)
    append(journal, lines("a", 2, 6))
    await consumer.collect(8)
    await consumer.quiet()
    assert consumer.lines == lines("a", 8)


@pytest.mark.parametrize("seed", range(int(os.environ.get("TAIL_SEEDS", "3"))))
async def test_random_rotations_and_restarts(journal: Path, consumer: Consumer, seed: int) -> None:
    """Random appends, rename rotations, copytruncates, deletions and restarts: exact."""
    import random

    rnd = random.Random(seed)
    written: list[bytes] = []
    rotated: list[Path] = []
    consumer.start()
    for step in range(30):
        op = rnd.choice(["append", "append", "append", "rename", "copytruncate", "collect",
                         "restart", "delete"])
        if op == "append":
            batch = lines("r", rnd.randint(1, 12), len(written))
            append(journal, batch)
            written += batch
        elif op == "rename" and journal.exists():
            target = journal.with_name(f"audit.jsonl.{step:03d}")
            os.rename(journal, target)
            rotated.append(target)
        elif op == "copytruncate" and journal.exists():
            copytruncate(journal, f"audit.jsonl.{step:03d}")
            rotated.append(journal.with_name(f"audit.jsonl.{step:03d}"))
        elif op == "collect":
            await consumer.collect(len(written))
        elif op == "restart":
            consumer.close()
            consumer.start()
        elif op == "delete" and rotated:
            await consumer.collect(len(written))  # only drained segments are deleted
            await consumer.quiet(0.1)
            rotated.pop(0).unlink()
    await consumer.collect(len(written))
    await consumer.quiet(0.2)
    assert_exact(consumer.lines, written)
    assert consumer.lines == written, "journal order"


async def test_fully_read_copy_is_not_reread_after_restart(
        journal: Path, consumer: Consumer) -> None:
    """A copy with nothing left to read has its position committed: a restart skips it."""
    append(journal, lines("a", 10))
    consumer.start()
    await consumer.collect(10)
    copytruncate(journal)
    append(journal, lines("a", 1, 10))
    await consumer.collect(11)
    await consumer.quiet()
    copy_key = key_of(journal.with_name("audit.jsonl.1"))
    assert consumer.committed[copy_key].offset == journal.with_name("audit.jsonl.1").stat().st_size
    consumer.close()
    consumer.start()
    await consumer.quiet()
    assert consumer.lines == lines("a", 11)


async def test_start_at_end_positions_survive_a_restart(
        tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """start_at_end on two files, only one grows: after a restart the other is not read."""
    other = tmp_path / "audit.jsonl.1"
    append(other, lines("old", 5))
    append(journal, lines("old2", 5))
    consumer.start(start_at_end=True)
    await consumer.quiet(0.1)
    append(journal, lines("a", 2))
    await consumer.collect(2)
    consumer.close()
    consumer.start(start_at_end=True)
    await consumer.quiet()
    assert consumer.lines == lines("a", 2)


@pytest.mark.parametrize("seed", range(int(os.environ.get("TAIL_SEEDS", "3"))))
async def test_random_with_unacked_restarts_and_truncation(
        journal: Path, consumer: Consumer, seed: int) -> None:
    """Random ops incl. truncation and restarts losing un-acked items: no loss, dups bounded."""
    import random

    rnd = random.Random(1000 + seed)
    written: list[bytes] = []
    unacked: set[bytes] = set()  # lines received but not acked before a restart
    consumer.start()
    for step in range(30):
        op = rnd.choice(["append", "append", "append", "rename", "copytruncate", "truncate",
                         "restart_unacked", "restart"])
        if op == "append":
            batch = lines("u", rnd.randint(1, 10), len(written))
            append(journal, batch)
            written += batch
        elif op == "rename" and journal.exists():
            os.rename(journal, journal.with_name(f"audit.jsonl.{step:03d}"))
        elif op == "copytruncate" and journal.exists():
            copytruncate(journal, f"audit.jsonl.{step:03d}")
        elif op == "truncate" and journal.exists():
            # unread lines would be lost (by design): read them first
            await consumer.until(lambda w=written: set(w) <= set(consumer.lines))
            await consumer.quiet(0.1)
            os.truncate(journal, 0)
        elif op == "restart_unacked":
            before = len(consumer.lines)
            item = await consumer.reader.next_item(timeout=0.3)
            if item is not None:
                consumer.take(item, ack=False)
                unacked.update(consumer.lines[before:])
            consumer.close()
            consumer.start()
        elif op == "restart":
            consumer.close()
            consumer.start()
    await consumer.until(lambda: set(written) <= set(consumer.lines), timeout=8)
    await consumer.quiet(0.2)
    assert set(consumer.lines) == set(written)
    dups = {x for x, n in Counter(consumer.lines).items() if n > 1}
    assert dups <= unacked, f"duplicates beyond the un-acked items: {sorted(dups - unacked)[:3]}"


async def test_lag_bytes_and_close(tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """lag_bytes counts unread bytes over all segments; a closed reader returns None."""
    append(journal, lines("a", 2))
    append(tmp_path / "audit.jsonl.1", lines("b", 3))
    reader = consumer.start()
    item = await reader.next_item(timeout=2)
    assert isinstance(item, Chunk)
    total = journal.stat().st_size + (tmp_path / "audit.jsonl.1").stat().st_size
    assert reader.lag_bytes() == total - len(item.data)
    consumer.take(item)
    await consumer.collect(5)
    assert reader.lag_bytes() == 0
    reader.close()
    append(journal, lines("a", 1, 2))
    assert await reader.next_item(timeout=0.2) is None


async def test_deleted_segment_with_a_torn_last_line_is_released(
        journal: Path, consumer: Consumer, caplog: pytest.LogCaptureFixture) -> None:
    """A deleted file ending with a partial line is released after idle_after (fd closed)."""
    append(journal, lines("a", 3))
    with open(journal, "ab") as f:
        f.write(b'{"id":"torn"')
    reader = consumer.start(idle_after=0.2)
    await consumer.collect(3)
    key = key_of(journal)
    os.unlink(journal)
    await consumer.until(lambda: any(isinstance(i, Release) and i.segment == key
                                     for i in consumer.items))
    assert key not in reader.segments
    assert "torn last line" in caplog.text
    assert consumer.lines == lines("a", 3)
    torn = [i for i in consumer.items if isinstance(i, OversizeLine)]
    assert [(t.offset, t.preview, t.reason) for t in torn] == [
        (len(b"".join(x + b"\n" for x in lines("a", 3))), b'{"id":"torn"', TORN)]


def _age(path: Path, seconds: float) -> None:
    """Set ``path``'s mtime ``seconds`` into the past (its last write, as a reader sees it)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_a_rotated_segment_in_the_glob_with_a_torn_last_line_is_quarantined(
        tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """Numbered rotation moved a file whose writer stopped mid-line to audit.jsonl.1 (still
    in the glob) and the writer went on in a new audit.jsonl: once the fragment is
    untouched for TORN_IN_GLOB_AFTER, it is handed out as a torn line (for the
    quarantine), the cursor passes it and nothing is left pending; the live file's
    partial line is not."""
    append(journal, lines("a", 2))
    with open(journal, "ab") as f:
        f.write(b'{"id":"half')
    reader = consumer.start(idle_after=0.3)
    await consumer.collect(2)
    rotated = tmp_path / "audit.jsonl.1"
    os.rename(journal, rotated)
    append(journal, lines("b", 2))
    with open(journal, "ab") as f:
        f.write(b'{"id":"live')  # the live file's own partial line: the writer is on it
    _age(rotated, TORN_IN_GLOB_AFTER + 60)
    await consumer.until(lambda: any(isinstance(i, OversizeLine) for i in consumer.items))
    await consumer.collect(4)
    torn = [i for i in consumer.items if isinstance(i, OversizeLine)]
    assert [(t.path, t.preview, t.reason, t.length) for t in torn] == [
        (str(rotated), b'{"id":"half', TORN, len(b'{"id":"half'))]
    assert consumer.committed[key_of(rotated)].offset == rotated.stat().st_size
    await consumer.quiet(0.5)
    assert len([i for i in consumer.items if isinstance(i, OversizeLine)]) == 1
    assert reader.lag_bytes() == len(b'{"id":"live')
    assert consumer.lines == lines("a", 2) + lines("b", 2)


async def test_a_torn_segment_that_left_the_glob_waits_rotate_wait_for_its_writer(
        tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """A file renamed out of the glob whose last line has been unfinished for longer than
    idle_after is kept rotate_wait seconds after it left: a writer still holding its
    descriptor ends the line (and writes another), and both are read, none quarantined."""
    append(journal, lines("a", 1))
    f = open(journal, "ab")  # noqa: SIM115 - the writer's descriptor, kept across the rename
    try:
        f.write(b'{"id":"slow"')
        f.flush()
        consumer.start(idle_after=0.2, rotate_wait=3.0)
        await consumer.collect(1)
        _age(journal, 60)
        os.rename(journal, tmp_path / "old.jsonl")
        await consumer.quiet(1.0)  # well past idle_after, inside rotate_wait
        f.write(b',"late":1}\n' + ev("a", 9) + b"\n")
        f.flush()
    finally:
        f.close()
    await consumer.collect(3)
    assert consumer.lines == [ev("a", 0), b'{"id":"slow","late":1}', ev("a", 9)]
    assert not any(isinstance(i, OversizeLine) for i in consumer.items)


async def test_segment_that_cannot_be_opened_keeps_its_cursor(
        journal: Path, consumer: Consumer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file failing to open on the first scan (EMFILE) resumes at its cursor later."""
    import errno

    append(journal, lines("a", 4))
    consumer.start()
    await consumer.collect(4)
    consumer.close()
    append(journal, lines("a", 2, 4))
    real_open = os.open
    failures = {"n": 0}

    def flaky_open(path, flags, *args):
        if str(path) == str(journal) and failures["n"] < 2:
            failures["n"] += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", flaky_open)
    consumer.start()
    await consumer.collect(6)
    await consumer.quiet()
    assert failures["n"] == 2
    assert consumer.lines == lines("a", 6)
    assert not any(isinstance(i, Release) for i in consumer.items)


async def test_unreadable_glob_matches_are_ignored(
        tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """A symlink loop, a dangling link and a directory matched by the glob are ignored."""
    (tmp_path / "audit.jsonl.loop").symlink_to(tmp_path / "audit.jsonl.loop")
    (tmp_path / "audit.jsonl.dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "audit.jsonl.d").mkdir()
    append(journal, lines("a", 3))
    consumer.start()
    await consumer.collect(3)
    await consumer.quiet()
    assert consumer.lines == lines("a", 3)


async def test_oversize_line_is_not_reported_again_after_restart(
        journal: Path, consumer: Consumer) -> None:
    """An acked OversizeLine mark moves the cursor past the line: a restart skips it."""
    append(journal, [b"q" * 400])
    consumer.start(max_line_bytes=100, block_bytes=64)
    await consumer.until(lambda: any(isinstance(i, OversizeLine) for i in consumer.items))
    consumer.close()
    append(journal, lines("a", 2))
    consumer.start(max_line_bytes=100, block_bytes=64)
    await consumer.collect(2)
    await consumer.quiet()
    assert consumer.lines == lines("a", 2)
    assert sum(isinstance(i, OversizeLine) for i in consumer.items) == 1


async def test_transient_read_errors_do_not_stop_the_reader(
        journal: Path, consumer: Consumer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """EIO on reads (adoption, tailing, checks) is retried; nothing lost, no duplicate."""
    import errno

    from auditshipd.journal import reader as tail_mod
    from auditshipd.journal import segment_reads

    append(journal, lines("a", 5))
    consumer.start()
    await consumer.collect(5)
    consumer.close()
    append(journal, lines("a", 5, 5))
    real = tail_mod._pread
    calls = {"n": 0}

    def flaky(fd: int, n: int, off: int) -> bytes:
        calls["n"] += 1
        if calls["n"] % 2 == 0 and calls["n"] < 60:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, n, off)

    monkeypatch.setattr(tail_mod, "_pread", flaky)  # adoption and checks
    monkeypatch.setattr(segment_reads, "_pread", flaky)  # tailing
    consumer.start()
    await consumer.collect(10)
    append(journal, lines("a", 5, 10))
    await consumer.collect(15)
    await consumer.quiet()
    assert consumer.lines == lines("a", 15)
    assert "Input/output error" in caplog.text


async def test_read_error_after_reading_lines_changes_nothing(
        journal: Path, consumer: Consumer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read error while recording the new position leaves it unchanged (no re-read)."""
    import errno

    from auditshipd.journal import segments as tail_mod

    append(journal, lines("a", 10))
    reader = consumer.start()
    await consumer.collect(10)
    append(journal, lines("a", 1, 10))
    size = journal.stat().st_size
    real = tail_mod._pread
    failed = {"n": 0}

    def flaky(fd: int, n: int, off: int) -> bytes:
        if (off, n) == (0, size) and failed["n"] == 0:  # the window before the new end
            failed["n"] += 1
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, n, off)

    monkeypatch.setattr(tail_mod, "_pread", flaky)
    await consumer.collect(11)
    await consumer.quiet()
    assert failed["n"] == 1
    assert consumer.lines == lines("a", 11), "not re-read from 0 as if truncated"
    assert reader.segments[key_of(journal)].offset == size


# -- what the reader refuses to open ------------------------------------------------------


def secret_file(tmp_path: Path) -> Path:
    """A file outside the journal directory: event-shaped lines and one that is not."""
    secret = tmp_path / "outside" / "shadow"
    secret.parent.mkdir()
    append(secret, [*lines("secret", 3), b"root:$6$hash:19000:0:99999:7:::"])
    return secret


def refusals(caplog: pytest.LogCaptureFixture, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "auditshipd.tail" and f"not reading {path}:" in r.getMessage()]


async def test_symlink_in_the_journal_directory_is_not_followed(
        tmp_path: Path, journal: Path, consumer: Consumer,
        caplog: pytest.LogCaptureFixture) -> None:
    """A link audit.jsonl.x -> a file outside is neither read nor adopted; logged once."""
    link = tmp_path / "audit.jsonl.x"
    link.symlink_to(secret_file(tmp_path))
    append(journal, lines("a", 3))
    reader = consumer.start()
    await consumer.collect(3)
    append(journal, lines("a", 3, 3))  # more scans after the first
    await consumer.collect(6)
    await consumer.quiet()
    assert consumer.lines == lines("a", 6)
    assert all(i.path == str(journal) for i in consumer.items if isinstance(i, Chunk))
    assert list(reader.segments) == [key_of(journal)]
    msgs = refusals(caplog, link)
    assert len(msgs) == 1 and "symbolic link" in msgs[0] and "follow_symlinks" in msgs[0]


async def test_follow_symlinks_reads_a_linked_segment(
        tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """With follow_symlinks a link to a regular file is read like any segment."""
    target = tmp_path / "outside" / "segment"
    target.parent.mkdir()
    append(target, lines("l", 2))
    (tmp_path / "audit.jsonl.1").symlink_to(target)
    append(journal, lines("a", 2))
    consumer.start(follow_symlinks=True)
    await consumer.collect(4)
    await consumer.quiet()
    assert_exact(consumer.lines, lines("l", 2) + lines("a", 2))


async def test_fifo_socket_directory_and_foreign_file_are_not_adopted(
        tmp_path: Path, journal: Path, consumer: Consumer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A FIFO, a socket, a directory and another user's file: none read, none blocks; each logged once."""
    import socket

    from auditshipd.journal import reader as tail_mod

    fifo = tmp_path / "audit.jsonl.fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "audit.jsonl.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    directory = tmp_path / "audit.jsonl.d"
    directory.mkdir()
    foreign = tmp_path / "audit.jsonl.foreign"
    append(foreign, lines("foreign", 2))
    other_uid = 65534 if os.geteuid() != 65534 else 65533
    if os.geteuid() == 0:
        os.chown(foreign, other_uid, other_uid)
    else:  # only root can give a file away: report another owner for this one path
        real_lstat = os.lstat

        def lstat(path, *a, **kw):
            st = real_lstat(path, *a, **kw)
            if str(path) != str(foreign):
                return st
            fields = list(st)
            fields[stat.ST_UID] = other_uid
            return os.stat_result(fields)

        monkeypatch.setattr(tail_mod.os, "lstat", lstat)
    try:
        append(journal, lines("a", 2))
        reader = consumer.start()
        await consumer.collect(2)
        append(journal, lines("a", 2, 2))
        await consumer.collect(4)
        await consumer.quiet()
    finally:
        sock.close()
    assert consumer.lines == lines("a", 4)
    assert list(reader.segments) == [key_of(journal)]
    for path, what in ((fifo, "FIFO"), (sock_path, "socket"), (directory, "directory"),
                       (foreign, f"owned by uid {other_uid}")):
        msgs = refusals(caplog, path)
        assert len(msgs) == 1 and what in msgs[0], (path, msgs)


async def test_fifo_swapped_in_after_the_check_does_not_block_the_reader(
        tmp_path: Path, journal: Path, consumer: Consumer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A regular file replaced by a FIFO between lstat and open: refused, the reader goes on."""
    swapped = tmp_path / "audit.jsonl.1"
    append(swapped, lines("s", 1))
    append(journal, lines("a", 2))
    real_open = os.open

    def open_after_swap(path, flags, *args):
        if str(path) == str(swapped) and swapped.is_file():
            swapped.unlink()
            os.mkfifo(swapped)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_after_swap)
    try:
        consumer.start()
        await asyncio.wait_for(consumer.collect(2), 5)
        await consumer.quiet()
    finally:
        # Without O_NONBLOCK a worker thread is stuck opening the FIFO: release it.
        with contextlib.suppress(OSError):
            os.close(real_open(swapped, os.O_WRONLY | os.O_NONBLOCK))
    assert consumer.lines == lines("a", 2)


def test_refusal_trusts_only_this_user_root_and_the_directory_owner(tmp_path: Path) -> None:
    """refusal(): a regular file of this user, of root or of the directory's owner is read."""
    from auditshipd.journal.segments import refusal

    f = tmp_path / "audit.jsonl"
    f.write_bytes(b"")
    base = list(os.lstat(f))

    def with_uid(uid: int) -> os.stat_result:
        fields = list(base)
        fields[stat.ST_UID] = uid
        return os.stat_result(fields)

    me = os.geteuid()
    assert refusal(with_uid(me), None) is None
    assert refusal(with_uid(0), None) is None
    assert refusal(with_uid(4242), 4242) is None
    why = refusal(with_uid(4243), 4242)
    assert why is not None and "uid 4243" in why
    link = tmp_path / "audit.jsonl.l"
    link.symlink_to(f)
    assert "symbolic link" in (refusal(os.lstat(link), me) or "")
    assert refusal(os.stat(link), me) is None  # followed: the target decides


_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"
       " Safari/537.36 scim-sync-agent/4.2")


def _sorted_keys_lines(tag: str, n: int) -> list[bytes]:
    """A recurring service action written with sorted keys: the id comes late, so every
    line (and every segment) starts with the same 256 bytes."""
    return [msgspec.json.encode({
        "action": "scim.sync", "actor": {"email": "scim-bot@acme.test", "type": "service"},
        "context": {"location": "203.0.113.7", "request_id_header": "x-request-id",
                    "user_agent": _UA},
        "id": f"{tag}-{i:05d}", "occurred_at": "2024-01-01T00:00:00.000Z", "version": 1,
    }, order="sorted") for i in range(n)]


async def test_segments_starting_alike_are_each_read_from_their_start(
        journal: Path, consumer: Consumer) -> None:
    """Rename rotations whose segments start with the same bytes and are smaller than the
    one before: each is a new file, read at once from 0, not awaited as a copy in progress
    (its predecessor open, or released after it was renamed away)."""
    a, b, c = (_sorted_keys_lines(t, n) for t, n in (("a", 50), ("b", 5), ("c", 48)))
    assert a[0][:HEAD_BYTES] == b[0][:HEAD_BYTES] == c[0][:HEAD_BYTES]
    append(journal, a)
    consumer.start()
    await consumer.collect(50)
    os.rename(journal, journal.with_name("audit.jsonl.1"))
    append(journal, b)  # smaller than the segment before, which is still open
    await consumer.collect(55)
    os.rename(journal, journal.with_name("audit.jsonl.2"))
    append(journal, c)
    await consumer.collect(103)
    await consumer.quiet()
    assert_exact(consumer.lines, a + b + c)


async def test_a_rotated_segment_whose_writer_may_still_end_its_line_is_waited_for(
        tmp_path: Path, journal: Path, consumer: Consumer) -> None:
    """In the glob, a fragment untouched for minutes (not an hour) in a rotated file is
    still waited for, as is one whose only newer file belongs to another pattern (another
    application's journal): its writer ends the line and the event is read whole."""
    other = tmp_path / "other"
    other.mkdir()
    append(journal, lines("a", 1))
    rotated = tmp_path / "audit.jsonl.1"
    f = open(journal, "ab")  # noqa: SIM115 - the writer's descriptor, kept across the rename
    try:
        f.write(b'{"id":"slow"')
        f.flush()
        consumer.start(idle_after=0.2)
        await consumer.collect(1)
        os.rename(journal, rotated)
        append(journal, lines("b", 1))
        _age(rotated, 600)  # ten minutes: well past idle_after, not the hour
        await consumer.collect(2)
        await consumer.quiet(0.6)
        f.write(b',"late":1}\n')
        f.flush()
    finally:
        f.close()
    await consumer.collect(3)
    assert b'{"id":"slow","late":1}' in consumer.lines
    assert not any(isinstance(i, OversizeLine) for i in consumer.items)


async def test_another_patterns_newer_file_is_not_this_writer_moving_on(tmp_path: Path) -> None:
    """Two journals (two patterns): the other one's live file being newer says nothing of
    this one's writer; its fragment stays unread however long it sits."""
    mine, theirs = tmp_path / "audit.jsonl", tmp_path / "app" / "app.jsonl"
    theirs.parent.mkdir()
    append(mine, lines("a", 1))
    with open(mine, "ab") as f:
        f.write(b'{"id":"half')
    _age(mine, TORN_IN_GLOB_AFTER + 60)
    append(theirs, lines("b", 1))
    reader = JournalReader([str(tmp_path / "audit.jsonl*"), str(theirs.parent / "app.jsonl*")],
                           CursorState(sink="t"), poll_interval=0.05, idle_after=0.2)
    try:
        items = []
        for _ in range(20):
            item = await reader.next_item(timeout=0.1)
            if item is not None:
                items.append(item)
        assert not any(isinstance(i, OversizeLine) for i in items)
        assert sum(i.data.count(b"\n") for i in items if isinstance(i, Chunk)) == 2
    finally:
        reader.close()


async def test_a_reader_stopped_by_its_limit_quarantines_nothing(tmp_path: Path) -> None:
    """A reader bounded by ``limit`` (a sink reading alone behind the shared pass) reads
    nothing past the bound: the whole lines after it are not a torn tail, even in a
    rotated segment untouched for long and gone from the glob."""
    journal = tmp_path / "audit.jsonl"
    append(journal, lines("a", 10))
    key = key_of(journal)
    bound_at = len(b"".join(x + b"\n" for x in lines("a", 4)))
    limit = {key: SegmentCursor(path=str(journal), offset=bound_at, head_len=0, head_hash="",
                                tail_hash="")}  # only the offset bounds a read
    reader = JournalReader([str(tmp_path / "audit.jsonl*")], CursorState(sink="t"),
                           poll_interval=0.05, idle_after=0.1, rotate_wait=0.0, limit=limit)
    try:
        items = [await reader.next_item(timeout=2)]
        os.rename(journal, tmp_path / "gone.jsonl")
        _age(tmp_path / "gone.jsonl", TORN_IN_GLOB_AFTER + 60)
        for _ in range(20):
            item = await reader.next_item(timeout=0.1)
            if item is not None:
                items.append(item)
        assert not any(isinstance(i, OversizeLine) for i in items)
        assert b"".join(i.data for i in items if isinstance(i, Chunk)).count(b"\n") == 4
    finally:
        reader.close()


async def test_aclose_waits_for_a_read_running_in_its_thread(
        journal: Path, consumer: Consumer) -> None:
    """Cancelling the task awaiting a read does not stop the read's thread: aclose closes
    the descriptors once that read is done, never under it."""
    append(journal, lines("a", 2))
    reader = consumer.start()
    await consumer.collect(2)
    entered, go, seen = block_reads(reader)
    pending = asyncio.ensure_future(reader.next_item(None))
    try:
        while not entered.is_set():
            await asyncio.sleep(0.01)
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        closing = asyncio.ensure_future(reader.aclose())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not closing.done() and reader.segments
    finally:
        go.set()
    await asyncio.wait_for(closing, 10)
    assert seen == [journal.stat().st_ino] and reader.segments == {}
