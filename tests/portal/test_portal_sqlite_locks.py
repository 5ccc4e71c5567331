"""Several stores of one SQLite file in one process (the daemon's portal, its ``portal``
sink and its stream poller) while other processes open and close the file (``auditshipd
status``, ``token create``, a portal replica): every commit stays visible to every
process.

Opening a second store used to open and close the database file to check its mode,
which dropped the POSIX locks the first store's connections held on it. The next
process to close its connection then took itself for the last user, checkpointed and
deleted the WAL under the running writer, and that writer's later commits were seen by
no other process (and readers could get "disk I/O error")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from portal_data import make_events

from auditshipd.portal.store_sqlite import SQLiteEventStore

_COUNT = "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM events').fetchone()[0])"


def _count_elsewhere(path: Path) -> int:
    """The events another process sees (its connection closed when it exits)."""
    out = subprocess.run([sys.executable, "-c", _COUNT, str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


async def test_a_second_store_of_the_file_keeps_the_writes_of_the_first_visible(tmp_path: Path) -> None:
    path = tmp_path / "portal.sqlite3"
    events = make_events(40, seed=21)
    first = SQLiteEventStore(path)
    await first.open()
    second = SQLiteEventStore(path)
    try:
        assert await first.insert_events(events[:20]) == 20
        await second.open()  # the same file, this process
        assert _count_elsewhere(path) == 20  # another process opens and closes it
        assert await first.insert_events(events[20:]) == 20
        assert _count_elsewhere(path) == 40
        assert await second.count() == 40
    finally:
        await second.close()
        await first.close()
    assert _count_elsewhere(path) == 40


async def test_the_file_is_created_private_and_an_open_one_made_private(tmp_path: Path) -> None:
    """0600 when created; group and other access taken away from an existing file and its
    WAL files without opening them (while another store has them open)."""
    path = tmp_path / "portal.sqlite3"
    first = SQLiteEventStore(path)
    await first.open()
    try:
        assert await first.insert_events(make_events(5, seed=22)) == 5
        assert path.stat().st_mode & 0o777 == 0o600
        for p in (path, path.with_name(path.name + "-wal")):
            os.chmod(p, 0o644)
        second = SQLiteEventStore(path)
        await second.open()
        try:
            for p in (path, path.with_name(path.name + "-wal")):
                assert p.stat().st_mode & 0o777 == 0o600, p
            assert await first.insert_events(make_events(5, seed=23, start=100)) == 5
            assert _count_elsewhere(path) == 10
        finally:
            await second.close()
    finally:
        await first.close()
