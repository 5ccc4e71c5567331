"""Start-up of the portal never dies on a transient SQLite lock: the daemon's portal and
its ``portal`` sink open one fresh database at the same moment, while a ``token create``
runs and the CPU is busy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Workspace

from auditshipd.portal.store_sqlite import SQLiteEventStore
from auditshipd.testing import free_port

pytestmark = pytest.mark.integration
STARTS = 12


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Two busy loops (the machine has about two cores) for the length of the test."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(10)


async def test_stores_opening_one_fresh_database_at_once_all_open(tmp_path: Path, cpu_load) -> None:
    """Two stores opening one new file together, 300 times: each open succeeds (WAL
    switch and schema creation raced and failed with "database is locked" ~5% of the time)."""
    failures = []
    for i in range(300):
        path = tmp_path / f"db{i}" / "portal.sqlite3"
        stores = [SQLiteEventStore(path), SQLiteEventStore(path)]
        results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
        failures += [r for r in results if isinstance(r, BaseException)]
        for s in stores:
            await s.close()
    assert failures == []


def test_many_daemon_starts_with_a_concurrent_token_create(tmp_path: Path, cpu_load) -> None:
    """Twelve daemons with the portal and a portal sink start at once on fresh state dirs,
    each with a `token create` on its config meanwhile, the CPU busy: all come up."""
    daemons = []
    tokens = []
    try:
        for i in range(STARTS):
            ws = Workspace(tmp_path / f"d{i}")
            ws.write_config(f"""
                [portal]
                enabled = true
                listen = "127.0.0.1:{free_port()}"

                [[sinks]]
                name = "portal"
                type = "portal"
            """)
            daemons.append(ws.daemon().start())
            tokens.append(subprocess.Popen(
                [sys.executable, "-m", "auditshipd.cli", "token", "create", "-c", str(ws.config),
                 "--name", "ops", "--role", "admin"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for token in tokens:
            out, _ = token.communicate(timeout=120)
            assert token.returncode == 0, out.decode(errors="replace")
        for d in daemons:
            d.wait_started(timeout=120)
        for d in daemons:
            assert d.poll() is None, d.log().decode(errors="replace")
            assert b"database is locked" not in d.log()
        for d in daemons:
            assert d.terminate() == 0, d.log().decode(errors="replace")
    finally:
        for d in daemons:
            if d.poll() is None:
                d.kill()
        for token in tokens:
            if token.poll() is None:
                token.kill()
