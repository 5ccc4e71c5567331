"""The machine's PostgreSQL server for tests: one fresh database per test run (per xdist
worker), one schema per test, and a private server for tests that must restart it.

The server at 127.0.0.1:5432 (trust auth, user ``postgres``; ``PORTAL_TEST_PG`` overrides
the base URL) must be running: ``.ci/run`` starts it. When it is not reachable the tests
fail: they never skip.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_URL = os.environ.get("PORTAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_database(url: str, database: str, search_path: str | None = None) -> str:
    parts = urlsplit(url)
    query = f"search_path={search_path}" if search_path else ""
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, query, ""))


def _psql(url: str, sql: str) -> None:
    """Run SQL with psql (synchronous: usable from fixtures inside or outside a loop)."""
    psql = shutil.which("psql")
    if psql is None:
        raise RuntimeError("psql not found: install postgresql (scripts/test.sh does)")
    done = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True, text=True, timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"psql on {urlsplit(url).netloc} failed: {done.stderr.strip()}; is PostgreSQL"
            " running? (pg_ctlcluster 15 main start, or service postgresql start)"
        )


def create_database(prefix: str = "auditshipd_test") -> str:
    """A new empty database on the shared server; returns its URL."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    _psql(BASE_URL, f'CREATE DATABASE "{name}"')
    return with_database(BASE_URL, name)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    _psql(BASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_schema(database_url: str) -> str:
    """A new schema in ``database_url``; returns a URL whose search_path is that schema."""
    schema = f"t_{secrets.token_hex(6)}"
    _psql(database_url, f'CREATE SCHEMA "{schema}"')
    return with_database(database_url, urlsplit(database_url).path.lstrip("/"), schema)


async def migrated_schema(database_url: str) -> str:
    """A new schema with the current portal schema applied; returns its URL."""
    import asyncpg

    from auditshipd.portal.pg_schema import migrate

    url = create_schema(database_url)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


def migrated_schema_sync(database_url: str) -> str:
    """:func:`migrated_schema` for synchronous fixtures (no event loop running)."""
    return asyncio.run(migrated_schema(database_url))


def _pg_bin(name: str) -> str:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install postgresql")
    return found


class PrivatePostgres:
    """A throwaway PostgreSQL server in a temp dir, for tests that stop and start it."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _psql(self.url, "SELECT 1")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def private_postgres(root: Path, port: int) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(root, port)
    server.init()
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        except Exception:
            pass
