"""Portal details: private database files, links to any event id, Host header checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from auditshipd.portal.store import SQLiteEventStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_database_wal_and_shm_are_created_0600(tmp_path: Path) -> None:
    """With a permissive umask, the database, -wal and -shm files are still 0600."""
    old = os.umask(0o002)
    try:
        path = tmp_path / "portal.sqlite3"
        store = SQLiteEventStore(path)
        await store.open()
        await store.insert_events([{"id": "e1", "occurred_at": "2026-01-01T00:00:00Z"}])
        await store.count()
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        await store.close()
    finally:
        os.umask(old)


async def test_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    """A database left 0644 (and its -wal) by an earlier version becomes 0600 when opened."""
    path = tmp_path / "portal.sqlite3"
    store = SQLiteEventStore(path)
    await store.open()
    await store.close()
    path.chmod(0o644)
    wal = path.with_name(path.name + "-wal")
    wal.write_bytes(b"")
    wal.chmod(0o644)
    store = SQLiteEventStore(path)
    await store.open()
    try:
        assert _mode(path) == 0o600
        assert not wal.exists() or _mode(wal) == 0o600
    finally:
        await store.close()
