"""Fixtures of the portal tests: a seeded store of 100,000 events and its oracle, on each
backend (embedded SQLite and PostgreSQL): the tests that exercise the store run on both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from portal_data import SEED_EVENTS, Oracle, make_events
from portal_env import PortalEnv, make_config

from auditshipd.portal.backend import event_store
from auditshipd.portal.store import EventStore
from auditshipd.portal.store_sqlite import SQLiteEventStore


@pytest.fixture(scope="session")
def seeded_events() -> list[dict[str, Any]]:
    """The 100,000 events of the seeded store, in insertion order."""
    return make_events(SEED_EVENTS)


@pytest.fixture(scope="session")
def seeded_oracle(seeded_events: list[dict[str, Any]]) -> Oracle:
    """The oracle over the seeded events."""
    return Oracle(seeded_events)


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory, seeded_events: list[dict[str, Any]]) -> Path:
    """A SQLite index holding the seeded events (built once per session, never modified)."""
    path = tmp_path_factory.mktemp("seeded") / "portal.sqlite3"

    async def seed() -> None:
        store = SQLiteEventStore(path)
        await store.open()
        for i in range(0, len(seeded_events), 5000):
            await store.insert_events(seeded_events[i : i + 5000])
        await store.optimize()
        await store.close()

    asyncio.run(seed())
    return path


@pytest.fixture(scope="session")
def seeded_pg(pg_database: str, seeded_events: list[dict[str, Any]]) -> str:
    """A PostgreSQL schema holding the seeded events (built once per run, never modified)."""
    from tests.servers.postgres import migrated_schema

    async def seed() -> str:
        url = await migrated_schema(pg_database)
        store = event_store(url)
        await store.open()
        for i in range(0, len(seeded_events), 5000):
            await store.insert_events(seeded_events[i : i + 5000])
        await store.optimize()  # type: ignore[attr-defined]
        await store.close()
        return url

    return asyncio.run(seed())


@pytest.fixture(params=["sqlite", "postgres"])
def seeded_database(request: pytest.FixtureRequest) -> str:
    """``[portal] database`` of the seeded store, once per backend."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("seeded_db"))
    return request.getfixturevalue("seeded_pg")


@pytest.fixture
async def seeded_store(seeded_database: str) -> AsyncIterator[EventStore]:
    """A store opened on the seeded events, for reading."""
    store = event_store(seeded_database)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def portal(tmp_path: Path, seeded_database: str) -> AsyncIterator[PortalEnv]:
    """The portal serving the seeded 100,000-event store on a free port (each backend)."""
    from auditshipd.portal import start_portal

    config = make_config(tmp_path, seeded_database)
    server = await start_portal(config, port=0)
    try:
        yield await PortalEnv.start(server, Path(config.journal.path))
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    """An aiohttp client session (cookie jar accepting IP hosts)."""
    import aiohttp

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session
