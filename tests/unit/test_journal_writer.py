"""AuditJournal: event fields, never raising, whole lines from threads and processes."""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from auditshipd.journal import writer as journal_mod
from auditshipd.journal.writer import EVENT_VERSION, AuditJournal

ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ACTOR = {"type": "user", "email": "a@example.com"}


def read_events(*paths: Path) -> list[dict]:
    out = []
    for p in paths:
        for line in p.read_bytes().split(b"\n")[:-1]:
            out.append(msgspec.json.decode(line))  # every line whole, valid JSON
    return out


def segments(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + "*"))


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "auditshipd.journal" and r.levelno >= logging.ERROR]


# -- fields -------------------------------------------------------------------------------


def test_record_fields(tmp_path: Path) -> None:
    """record() writes one object with id (ULID), occurred_at (RFC 3339 UTC) and version."""
    path = tmp_path / "audit.jsonl"
    with AuditJournal(path) as j:
        assert j.record("user.login", actor=ACTOR, targets=[{"type": "doc", "id": "d1"}],
                        organization={"slug": "acme"}, context={"location": "1.2.3.4"},
                        metadata={"k": "v\nw"}) is True
        assert j.record("user.logout", actor=ACTOR) is True
    first, second = read_events(path)
    assert ULID_RE.match(first["id"]) and ULID_RE.match(second["id"])
    assert first["id"] < second["id"] or first["id"][:10] == second["id"][:10]
    assert RFC3339_UTC.match(first["occurred_at"])
    when = dt.datetime.fromisoformat(first["occurred_at"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 60
    assert first["version"] == EVENT_VERSION
    assert first["action"] == "user.login"
    assert first["actor"] == ACTOR
    assert first["targets"] == [{"type": "doc", "id": "d1"}]
    assert first["organization"] == {"slug": "acme"}
    assert first["context"] == {"location": "1.2.3.4"}
    assert first["metadata"] == {"k": "v\nw"}
    assert second["targets"] == [] and "metadata" not in second
    assert path.read_bytes().count(b"\n") == 2


def test_record_keeps_given_id_and_converts_datetimes_to_utc(tmp_path: Path) -> None:
    """A given id is kept; aware datetimes are converted to UTC, naive ones taken as UTC."""
    path = tmp_path / "audit.jsonl"
    paris = dt.timezone(dt.timedelta(hours=2))
    with AuditJournal(path) as j:
        assert j.record("a", actor=ACTOR, id="evt-1",
                        occurred_at=dt.datetime(2024, 5, 1, 12, 30, 1, 123456, tzinfo=paris))
        assert j.record("a", actor=ACTOR, occurred_at=dt.datetime(2024, 5, 1, 12, 30))
        assert j.record("a", actor=ACTOR, occurred_at="2024-05-01T00:00:00Z")
    a, b, c = read_events(path)
    assert a["id"] == "evt-1"
    assert a["occurred_at"] == "2024-05-01T10:30:01.123Z"
    assert b["occurred_at"] == "2024-05-01T12:30:00.000Z"
    assert c["occurred_at"] == "2024-05-01T00:00:00Z"


def test_ids_are_unique_and_sortable(tmp_path: Path) -> None:
    """Ids of many records are unique; their time part never goes backwards."""
    path = tmp_path / "audit.jsonl"
    with AuditJournal(path) as j:
        for _ in range(300):
            j.record("a", actor=ACTOR)
    ids = [e["id"] for e in read_events(path)]
    assert len(set(ids)) == 300
    times = [i[:10] for i in ids]
    assert times == sorted(times)


def test_append_line_adds_newline(tmp_path: Path) -> None:
    """append_line writes an encoded event as one line, adding the newline."""
    path = tmp_path / "audit.jsonl"
    with AuditJournal(path) as j:
        assert j.append_line(b'{"id":"x"}')
        assert j.append_line(b'{"id":"y"}\n')
    assert path.read_bytes() == b'{"id":"x"}\n{"id":"y"}\n'


# -- never raises -------------------------------------------------------------------------


def test_unserialisable_value_returns_false_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An unserialisable value: False, ONE log record, nothing written; later records work."""
    path = tmp_path / "audit.jsonl"
    caplog.set_level(logging.WARNING, logger="auditshipd.journal")
    with AuditJournal(path) as j:
        assert j.record("a", actor=ACTOR, metadata={"x": object()}) is False
        assert j.record("a", actor=ACTOR, metadata={"x": object()}) is False
        assert j.record("a", actor="not a mapping") is False  # type: ignore[arg-type]
        assert j.record("", actor=ACTOR) is False
        assert len(errors(caplog)) == 1
        assert "cannot encode" in errors(caplog)[0].getMessage()
        assert not path.exists() or path.read_bytes() == b""
        assert j.record("a", actor=ACTOR) is True
    assert len(read_events(path)) == 1


def test_disk_full_returns_false_logs_once_and_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ENOSPC (/dev/full): False and one log; after a success, a new failure logs again."""
    path = tmp_path / "audit.jsonl"
    path.symlink_to("/dev/full")
    caplog.set_level(logging.WARNING, logger="auditshipd.journal")
    j = AuditJournal(path)
    try:
        assert j.record("a", actor=ACTOR) is False
        assert j.record("a", actor=ACTOR) is False
        assert j.append_line(b'{"id":"x"}') is False
        assert len(errors(caplog)) == 1
        assert "No space left" in errors(caplog)[0].getMessage()
        # the disk "recovers": the path now names a regular file
        path.unlink()
        assert j.record("a", actor=ACTOR) is True
        assert any("writable again" in r.getMessage() for r in caplog.records)
        # and fails again: logged again
        path.unlink()
        path.symlink_to("/dev/full")
        assert j.record("a", actor=ACTOR) is False
        assert len(errors(caplog)) == 2
    finally:
        j.close()


def test_path_under_a_regular_file_returns_false(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ENOTDIR (a path under a regular file): False and one log record, never an exception."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    caplog.set_level(logging.WARNING, logger="auditshipd.journal")
    j = AuditJournal(blocker / "sub" / "audit.jsonl")
    assert j.record("a", actor=ACTOR) is False
    assert j.record("a", actor=ACTOR) is False
    assert len(errors(caplog)) == 1
    j.close()
    j2 = AuditJournal(blocker / "audit.jsonl")  # parent exists but is not a directory
    assert j2.record("a", actor=ACTOR) is False
    j2.close()


def test_failed_partial_write_leaves_no_torn_line(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way is cut back: the next record starts on a fresh line."""
    path = tmp_path / "audit.jsonl"
    with AuditJournal(path) as j:
        assert j.record("a", actor=ACTOR)
        real_write = os.write
        calls = {"n": 0}

        def flaky(fd: int, data: bytes) -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                return real_write(fd, bytes(data[:10]))
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(journal_mod.os, "write", flaky)
        assert j.record("b", actor=ACTOR) is False
        monkeypatch.setattr(journal_mod.os, "write", real_write)
        assert j.record("c", actor=ACTOR)
    assert [e["action"] for e in read_events(path)] == ["a", "c"]


def test_a_line_a_crashed_writer_left_unfinished_does_not_swallow_the_next(tmp_path: Path) -> None:
    """Another process died mid-line (no newline): the next record ends that line first,
    so the fragment is a line of its own and the record stays whole, from a writer
    opened before the crash as from one opened after it."""
    path = tmp_path / "audit.jsonl"
    with AuditJournal(path) as before:
        assert before.record("a", actor=ACTOR)
        with open(path, "ab") as crashed:
            crashed.write(b'{"id": "TORN-1", "action": "user.inv')
        assert before.record("b", actor=ACTOR)
    with open(path, "ab") as crashed:
        crashed.write(b'{"id": "TORN-2"')
    with AuditJournal(path) as after:
        assert after.record("c", actor=ACTOR)
        assert after.record("d", actor=ACTOR)
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == b'{"id": "TORN-1", "action": "user.inv' and lines[3] == b'{"id": "TORN-2"'
    assert [msgspec.json.decode(x)["action"] for x in (lines[0], lines[2], lines[4], lines[5])] == \
        ["a", "b", "c", "d"]
    assert lines[6:] == [b""]


def test_a_journal_the_writer_may_only_append_to_still_takes_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Write permission without read permission (an append-only drop box; refused as the
    kernel refuses it for a non-root writer): records are written, without the check for
    an unfinished line."""
    path = tmp_path / "audit.jsonl"
    real_open = journal_mod.open_with_mode

    def write_only(target: Any, flags: int, mode: int) -> int:
        if Path(target) == path and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(target))
        return real_open(target, flags, mode)

    monkeypatch.setattr(journal_mod, "open_with_mode", write_only)
    with AuditJournal(path) as j:
        assert j.record("a", actor=ACTOR) and j.record("b", actor=ACTOR)
    assert [e["action"] for e in read_events(path)] == ["a", "b"]


@pytest.mark.parametrize("mode", ["never", "always", "interval"])
def test_fsync_modes(tmp_path: Path, mode: str) -> None:
    """Every fsync mode records and the lines are whole."""
    path = tmp_path / "audit.jsonl"
    with AuditJournal(path, fsync=mode, fsync_interval=0.0) as j:  # type: ignore[arg-type]
        for _ in range(5):
            assert j.record("a", actor=ACTOR)
    assert len(read_events(path)) == 5


# -- rotation -----------------------------------------------------------------------------


def test_size_rotation(tmp_path: Path) -> None:
    """With rotate_bytes, segments stay under the limit and hold every record, in order."""
    path = tmp_path / "audit.jsonl"
    with AuditJournal(path, rotate_bytes=1000) as j:
        for i in range(60):
            assert j.record("a", actor=ACTOR, id=f"e{i:03d}")
    segs = segments(path)
    assert len(segs) > 3
    assert all(p.stat().st_size <= 1000 for p in segs)
    rotated = [p for p in segs if p != path]
    ids = [e["id"] for e in read_events(*rotated, path)]  # names sort by rotation time
    assert ids == [f"e{i:03d}" for i in range(60)]
    assert not any(p.name.startswith(".") for p in segs)
    assert (tmp_path / ".audit.jsonl.lock").exists()


def test_rotation_never_overwrites_an_existing_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rotations with the same timestamp keep both segments (no silent overwrite)."""

    class FrozenDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> FrozenDatetime:  # type: ignore[override]
            return cls(2024, 1, 1, tzinfo=dt.timezone.utc)

    class FakeDt:
        datetime = FrozenDatetime
        timezone = dt.timezone

    monkeypatch.setattr(journal_mod, "_dt", FakeDt)
    path = tmp_path / "audit.jsonl"
    with AuditJournal(path, rotate_bytes=300) as j:
        for i in range(20):
            assert j.record("a", actor=ACTOR, id=f"e{i:03d}", occurred_at="2024-01-01T00:00:00Z")
    ids = sorted(e["id"] for e in read_events(*segments(path)))
    assert ids == [f"e{i:03d}" for i in range(20)]


# -- concurrency --------------------------------------------------------------------------


def test_many_threads_with_rotation(tmp_path: Path) -> None:
    """Many threads appending with rotation: every line whole JSON, exact count, no dup."""
    path = tmp_path / "audit.jsonl"
    j = AuditJournal(path, rotate_bytes=20_000)
    n_threads, per = 8, 250

    def work(t: int) -> None:
        for i in range(per):
            assert j.record("a", actor=ACTOR, id=f"t{t}-{i}", metadata={"pad": "x" * (i % 50)})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    j.close()
    ids = [e["id"] for e in read_events(*segments(path))]
    assert len(ids) == n_threads * per
    assert len(set(ids)) == len(ids)
    assert len(segments(path)) > 2


def _process_writer(path: str, n: int, tag: str) -> None:
    j = AuditJournal(path, rotate_bytes=30_000)
    for i in range(n):
        if not j.record("a", actor=ACTOR, id=f"{tag}-{i}", metadata={"pad": "y" * (i % 70)}):
            os._exit(3)
    j.close()


def test_several_processes_with_rotation(tmp_path: Path) -> None:
    """Several processes (fork) appending with rotation: whole lines, exact count, no dup."""
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_writer, args=(str(path), 400, f"p{k}"))
             for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = [e["id"] for e in read_events(*segments(path))]
    assert len(ids) == 1600
    assert len(set(ids)) == 1600
    assert len(segments(path)) > 2
    for k in range(4):  # each writer's lines keep their order across segments
        rotated = [p for p in segments(path) if p != path] + [path]
        mine = [int(e["id"].split("-")[1]) for e in read_events(*rotated)
                if e["id"].startswith(f"p{k}-")]
        assert mine == list(range(400))


def test_journal_shared_across_fork(tmp_path: Path) -> None:
    """A journal used before fork keeps working in parent and child (own lock descriptor)."""
    path = tmp_path / "audit.jsonl"
    j = AuditJournal(path, rotate_bytes=5_000)
    assert j.record("a", actor=ACTOR, id="parent-0")
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            for i in range(200):
                if not j.record("a", actor=ACTOR, id=f"child-{i}"):
                    code = 3
        finally:
            os._exit(code)
    for i in range(1, 200):
        assert j.record("a", actor=ACTOR, id=f"parent-{i}")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    j.close()
    ids = [e["id"] for e in read_events(*segments(path))]
    assert len(ids) == 400 and len(set(ids)) == 400


def test_fork_while_another_thread_holds_the_lock(tmp_path: Path) -> None:
    """A child forked while another thread is inside record() can still record (no hang)."""
    path = tmp_path / "audit.jsonl"
    j = AuditJournal(path)
    assert j.record("a", actor=ACTOR, id="parent-0")
    j._lock.acquire()  # as if another thread were appending at the moment of the fork
    try:
        pid = os.fork()
        if pid == 0:  # child
            os._exit(0 if j.record("a", actor=ACTOR, id="child-0") else 3)
    finally:
        j._lock.release()
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung on the journal's lock")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    j.close()
    assert sorted(e["id"] for e in read_events(path)) == ["child-0", "parent-0"]


def test_append_line_with_wrong_type_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """append_line with a str or None returns False and logs; it never raises."""
    caplog.set_level(logging.WARNING, logger="auditshipd.journal")
    with AuditJournal(tmp_path / "audit.jsonl") as j:
        assert j.append_line('{"id":"x"}') is False  # type: ignore[arg-type]
        assert j.append_line(None) is False  # type: ignore[arg-type]
        assert len(errors(caplog)) == 1
        assert j.append_line(bytearray(b'{"id":"y"}')) is True


@pytest.mark.parametrize(("mode", "at_record", "at_close"),
                         [("never", 0, 0), ("always", 3, 1), ("interval", 0, 1)])
def test_fsync_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                     at_record: int, at_close: int) -> None:
    """always: fsync per record; interval: at most per interval, and on close; never: none."""
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(journal_mod.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    j = AuditJournal(tmp_path / "audit.jsonl", fsync=mode, fsync_interval=3600)  # type: ignore[arg-type]
    for _ in range(3):
        assert j.record("a", actor=ACTOR)
    assert len(calls) == at_record
    j.close()
    assert len(calls) == at_record + at_close


def test_invalid_options_are_rejected_at_construction(tmp_path: Path) -> None:
    """A misspelt fsync mode or a negative rotate_bytes is a ValueError, not silent."""
    with pytest.raises(ValueError, match="fsync"):
        AuditJournal(tmp_path / "a", fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rotate_bytes"):
        AuditJournal(tmp_path / "a", rotate_bytes=-1)
    AuditJournal(tmp_path / "a", rotate_bytes=0).close()  # 0 / None: no rotation


def test_non_str_id_is_stored_as_text(tmp_path: Path) -> None:
    """An id given as a UUID or an int is written as a string (consumers require one)."""
    import uuid

    path = tmp_path / "audit.jsonl"
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with AuditJournal(path) as j:
        assert j.record("a", actor=ACTOR, id=u)  # type: ignore[arg-type]
        assert j.record("a", actor=ACTOR, id=0)  # type: ignore[arg-type]
        assert j.record("a", actor=ACTOR, id="")
    a, b, c = read_events(path)
    assert a["id"] == str(u) and b["id"] == "0" and ULID_RE.match(c["id"])


def test_recovers_when_the_journal_directory_is_deleted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The journal directory removed while in use: the next record makes it again."""
    import shutil

    d = tmp_path / "journal"
    path = d / "audit.jsonl"
    with AuditJournal(path) as j:
        assert j.record("a", actor=ACTOR, id="before")
        shutil.rmtree(d)
        assert j.record("a", actor=ACTOR, id="after")
        assert (d / ".audit.jsonl.lock").exists()
    assert [e["id"] for e in read_events(path)] == ["after"]


def test_dev_full_path_directly(caplog: pytest.LogCaptureFixture) -> None:
    """AuditJournal('/dev/full') itself: every record returns False, logged once."""
    lock = Path("/dev/.full.lock")
    existed = lock.exists()
    caplog.set_level(logging.WARNING, logger="auditshipd.journal")
    j = AuditJournal("/dev/full")
    try:
        assert j.record("a", actor=ACTOR) is False
        assert j.record("a", actor=ACTOR) is False
        assert len(errors(caplog)) == 1
    finally:
        j.close()
        if not existed:
            lock.unlink(missing_ok=True)


def test_separate_interpreters_with_rotation(tmp_path: Path) -> None:
    """Independent processes (subprocess, no fork) share the flock: whole lines, exact count."""
    import subprocess
    import sys

    path = tmp_path / "audit.jsonl"
    code = (
        "import sys\n"
        "from auditshipd.journal.writer import AuditJournal\n"
        "j = AuditJournal(sys.argv[1], rotate_bytes=20000)\n"
        "ok = all(j.record('a', actor={'type': 'user'}, id=f'{sys.argv[2]}-{i}',\n"
        "                  metadata={'pad': 'z' * (i % 90)}) for i in range(500))\n"
        "sys.exit(0 if ok else 3)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"s{k}"])
             for k in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    ids = [e["id"] for e in read_events(*segments(path))]
    assert len(ids) == 1500 and len(set(ids)) == 1500
    assert len(segments(path)) > 3


def test_files_are_created_with_the_mode_asked_whatever_the_umask(tmp_path):
    """mode=0o660 under umask 022: the journal, its lock file and a journal created by
    rotation are group-writable, so the application and the daemon can share them."""
    old = os.umask(0o022)
    try:
        j = AuditJournal(tmp_path / "audit.jsonl", mode=0o660, rotate_bytes=300)
        for i in range(5):
            assert j.record("user.invited", id=f"e{i}", actor={"type": "user", "email": "a@b.test"})
        j.close()
    finally:
        os.umask(old)
    files = sorted(p for p in tmp_path.iterdir())
    assert len([p for p in files if p.name.startswith("audit.jsonl.")]) >= 1  # rotated
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o660, p


def test_the_daemons_own_writer_shares_a_setgid_directory(tmp_path):
    """In a group-shared (setgid) journal directory the daemon's writer creates 0o660
    files, elsewhere 0o640."""
    from auditshipd.journal.writer import daemon_journal

    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir(mode=0o2770)
    os.chmod(shared, 0o2770)
    private.mkdir()
    for directory, mode in ((shared, 0o660), (private, 0o640)):
        j = daemon_journal(directory / "audit.jsonl")
        assert j.record("user.invited", id="e1", actor={"type": "user", "email": "a@b.test"})
        j.close()
        assert (directory / "audit.jsonl").stat().st_mode & 0o777 == mode
