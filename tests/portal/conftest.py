"""Fixtures of the portal tests: a seeded store of 100,000 events and its oracle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from portal_data import SEED_EVENTS, Oracle, make_events

from auditshipd.portal.store import SQLiteEventStore


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


@pytest.fixture
async def seeded_store(seeded_db: Path) -> AsyncIterator[SQLiteEventStore]:
    """A store opened on the seeded file, for reading."""
    store = SQLiteEventStore(seeded_db)
    await store.open()
    yield store
    await store.close()
