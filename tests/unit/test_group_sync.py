"""Making many files durable at once: ``sync_files`` (one syncfs per file system for many
files, fsync for few, errors told per file), ``atomic_write_many`` (the cursor saver's
round) and the file sinks' ``GroupWriter`` (their batches written and synced together,
a failure failing only its own file's batches)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path

import msgspec
import pytest

from auditshipd import durable
from auditshipd.delivery.batch import Batch
from auditshipd.journal.cursor import CursorState, CursorStore
from auditshipd.plugin import SinkContext
from auditshipd.sinks import file_writes
from auditshipd.sinks.file import FileOptions, FileSink


def _open(paths: list[Path]) -> list[int]:
    return [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) for p in paths]


def test_many_files_take_one_syncfs_and_few_take_fsyncs(tmp_path: Path, monkeypatch) -> None:
    """Eight files of one file system are synced by one syncfs call; two by two fsyncs."""
    if durable._syncfs is None:
        pytest.fail("syncfs(2) is not available on this Linux")
    calls: list[int] = []
    real = durable._syncfs
    monkeypatch.setattr(durable, "_syncfs", lambda fd: calls.append(fd) or real(fd))
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    fds = _open([tmp_path / f"f{i}" for i in range(8)])
    try:
        for fd in fds:
            os.write(fd, b"x\n")
        assert durable.sync_files(fds) == {}
        assert len(calls) == 1 and synced == []
        assert durable.sync_files(fds[:2]) == {}
        assert len(calls) == 1 and sorted(synced) == sorted(fds[:2])
    finally:
        for fd in fds:
            os.close(fd)


def test_a_file_that_cannot_be_synced_is_named_alone(tmp_path: Path) -> None:
    """Among regular files, a pipe (fsync: EINVAL) and a closed descriptor (EBADF), the
    failures name exactly those two, each with its own error."""
    fds = _open([tmp_path / f"f{i}" for i in range(5)])
    r, w = os.pipe()
    closed = os.open(tmp_path / "gone", os.O_WRONLY | os.O_CREAT)
    os.close(closed)
    try:
        failed = durable.sync_files([*fds, w, closed])
        assert set(failed) == {w, closed}
        assert failed[w].errno == errno.EINVAL and failed[closed].errno == errno.EBADF
    finally:
        for fd in (*fds, r, w):
            os.close(fd)


def test_atomic_write_many_replaces_every_file_whole(tmp_path: Path, monkeypatch) -> None:
    """Five files written through groups of two: each holds its new content and no temp
    file is left in the directory."""
    monkeypatch.setattr(durable, "_OPEN_AT_ONCE", 2)
    files = [(tmp_path / f"c{i}.json", b"old") for i in range(5)]
    for path, data in files:
        path.write_bytes(data)
    durable.atomic_write_many([(str(p), b"new %d" % i) for i, (p, _d) in enumerate(files)])
    assert [p.read_bytes() for p, _d in files] == [b"new %d" % i for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p, _d in files)


def test_a_failed_sync_renames_nothing_and_leaves_no_temp_file(tmp_path: Path,
                                                               monkeypatch) -> None:
    """When the files cannot be made durable (EIO), no file is replaced (each keeps its old
    content), the error is raised and the temp files are gone."""
    files = [tmp_path / f"c{i}.json" for i in range(6)]
    for path in files:
        path.write_bytes(b"old")
    monkeypatch.setattr(durable, "sync_files",
                        lambda fds: {fd: OSError(errno.EIO, "I/O error") for fd in fds})
    with pytest.raises(OSError) as info:
        durable.atomic_write_many([(str(p), b"new") for p in files])
    assert info.value.errno == errno.EIO
    assert [p.read_bytes() for p in files] == [b"old"] * 6
    assert sorted(tmp_path.iterdir()) == sorted(files)


def test_cursor_round_saves_the_latest_snapshot_of_each_sink(tmp_path: Path) -> None:
    """Two snapshots of one sink in one round: the newer is saved, whatever the order."""
    store = CursorStore(tmp_path)
    store.save_many([CursorState(sink="a", acked_events=7), CursorState(sink="b", acked_events=1),
                     CursorState(sink="a", acked_events=3)])
    assert store.load("a").acked_events == 7 and store.load("b").acked_events == 1
    assert sorted(p.name for p in (tmp_path / "cursors").iterdir()) == ["a.json", "b.json"]


def _sink(path: Path) -> FileSink:
    ctx = SinkContext(name=path.stem, state_dir=path.parent, logger=logging.getLogger("test"))
    return FileSink(path.stem, FileOptions(path=str(path)), ctx)


async def test_file_sinks_of_one_file_system_write_in_groups(tmp_path: Path) -> None:
    """Twenty file sinks sending at once: every batch lands whole in its own file, in
    fewer groups than batches (one worker hop and one sync for many sinks)."""
    sinks = [_sink(tmp_path / f"s{k}.jsonl") for k in range(20)]
    for s in sinks:
        await s.start()
    writer = file_writes.writer_for(os.stat(tmp_path).st_dev)
    before = writer.groups
    for round_ in range(3):
        await asyncio.gather(*(
            s.send(Batch(lines=[b'{"s":%d,"r":%d,"i":%d}' % (k, round_, i) for i in range(5)]))
            for k, s in enumerate(sinks)))
    for s in sinks:
        await s.close()
    for k in range(20):
        got = [msgspec.json.decode(line) for line in
               (tmp_path / f"s{k}.jsonl").read_bytes().splitlines()]
        assert got == [{"s": k, "r": r, "i": i} for r in range(3) for i in range(5)]
    assert 3 <= writer.groups - before < 60


async def test_a_failing_file_fails_only_its_own_batch(tmp_path: Path) -> None:
    """One sink's descriptor is closed under it (EBADF on write): its send raises a
    retryable error naming its file; the other sinks of the same group deliver."""
    from auditshipd.plugin import RetryableError

    sinks = [_sink(tmp_path / f"s{k}.jsonl") for k in range(6)]
    for s in sinks:
        await s.start()
    broken = sinks[2]
    assert broken._fd is not None
    os.close(broken._fd)
    broken._fd = os.open(os.devnull, os.O_RDONLY)  # a write fails: EBADF
    results = await asyncio.gather(*(s.send(Batch(lines=[b'{"k":%d}' % k]))
                                     for k, s in enumerate(sinks)), return_exceptions=True)
    assert isinstance(results[2], RetryableError) and "s2.jsonl" in str(results[2])
    assert [r for k, r in enumerate(results) if k != 2] == [None] * 5
    for k, s in enumerate(sinks):
        await s.close()
        if k != 2:
            assert (tmp_path / f"s{k}.jsonl").read_bytes() == b'{"k":%d}\n' % k


def test_syncfs_is_used_only_where_it_reports_write_back_errors(monkeypatch) -> None:
    """Before Linux 5.8 syncfs returned 0 after a failed write-back: there every file is
    fsynced instead; from 5.8 on syncfs is used."""
    monkeypatch.setattr(durable, "_kernel", lambda: (5, 7))
    assert durable._load_syncfs() is None
    monkeypatch.setattr(durable, "_kernel", lambda: (5, 8))
    assert durable._load_syncfs() is not None
