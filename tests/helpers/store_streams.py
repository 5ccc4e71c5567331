"""Self-service stream definitions saved in a real portal store, for the commands that
read them (status, check-config)."""

from __future__ import annotations

import os

from auditshipd.portal.backend import event_store, stream_store
from auditshipd.portal.stream_defs import StreamDefinition


async def save_definitions(database: str | os.PathLike[str], defs: list[StreamDefinition]) -> None:
    """Open the store ``database`` names (creating it) and insert ``defs``."""
    events = event_store(str(database))
    await events.open()
    try:
        for d in defs:
            await stream_store(events).insert(d, 100)
    finally:
        await events.close()
