"""Shared fixtures: temp dirs with a config, the daemon as a subprocess, a receiver."""

from __future__ import annotations

import textwrap
from pathlib import Path

import hypothesis  # noqa: F401 - imported early: a late import at session end trips a CPython 3.11 AST bug
import pytest

from auditshipd.testing import DaemonProcess, WebhookReceiver, free_port

REPO = Path(__file__).resolve().parents[1]
TEST_PLUGINS = REPO / "tests" / "plugins"


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


class Workspace:
    """A temp dir laid out like the default config: var/journal, var/state, var/out."""

    def __init__(self, root: Path):
        self.root = root
        self.journal = root / "var" / "journal" / "audit.jsonl"
        self.state = root / "var" / "state"
        self.out = root / "var" / "out" / "audit.jsonl"
        self.config = root / "auditshipd.toml"
        self.journal.parent.mkdir(parents=True)

    def write_config(self, sinks: str, extra: str = "", journal_extra: str = "",
                     plugin_dir: Path = TEST_PLUGINS, shutdown_timeout: float = 10.0) -> Path:
        text = textwrap.dedent(f"""
            shutdown_timeout = {shutdown_timeout}
            plugin_dirs = ["{plugin_dir}"]
            {textwrap.dedent(extra)}
            [journal]
            path = "{self.journal}"
            paths = ["{self.journal}*"]
            state_dir = "{self.state}"
            poll_interval = 0.2
            {textwrap.dedent(journal_extra)}
        """) + textwrap.dedent(sinks)
        if "[metrics]" not in text:
            # Every daemon serves metrics; tests run in parallel, so each on its own port.
            text += f'\n[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
        self.config.write_text(text)
        return self.config

    def daemon(self, env: dict[str, str] | None = None) -> DaemonProcess:
        return DaemonProcess(self.config, self.root, env)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture(scope="session")
def pg_database():
    """A fresh database on the machine's PostgreSQL server for this test run (this xdist
    worker), dropped at the end. The server not running is a failure, never a skip."""
    from tests.servers.postgres import create_database, drop_database

    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture
async def pg_url(pg_database: str) -> str:
    """A fresh schema with the portal's current schema migrated, in the run's database:
    the URL (its search_path names the schema) of a PostgreSQL portal store."""
    from tests.servers.postgres import migrated_schema

    return await migrated_schema(pg_database)


PORTAL_BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=PORTAL_BACKENDS)
def portal_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``[portal] database`` of an empty store, once per backend: a SQLite file in the
    test's temp dir, or a fresh migrated PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "portal.sqlite3")
    from tests.servers.postgres import migrated_schema_sync

    return migrated_schema_sync(request.getfixturevalue("pg_database"))


@pytest.fixture
async def portal_store(portal_database: str):
    """An empty, opened event store of each backend (the same tests run on both)."""
    from auditshipd.portal.backend import event_store

    store = event_store(portal_database)
    await store.open()
    yield store
    await store.close()
