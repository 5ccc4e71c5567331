"""Self-service stream definitions saved in a real portal store, for the commands that
read them (status, check-config, dlq), and the config of a host that runs them."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from auditshipd.portal.backend import event_store, stream_store
from auditshipd.portal.stream_defs import StreamDefinition
from auditshipd.portal.stream_secrets import ENV_VAR, load_secret_box

# A secrets key (``AUDITSHIPD_SECRETS_KEY``) and another one, which does not open the first's seals.
KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
OTHER_KEY = "AAAAEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
WHEN = "2026-01-01T00:00:00Z"


def host_config(tmp: Path, database: Path, allow: str = '["127.0.0.1"]',
                name: str = "auditshipd.toml") -> Path:
    """A config file in ``tmp``: a journal, a state dir, one file sink ``archive``, and
    the portal store ``database`` with ``stream_allow_hosts = allow``."""
    journal = tmp / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    config = tmp / name
    config.write_text(textwrap.dedent(f"""
        [journal]
        path = "{journal}"
        paths = ["{journal}*"]
        state_dir = "{tmp / 'state'}"
        [[sinks]]
        name = "archive"
        type = "file"
        path = "{tmp / 'out.jsonl'}"
        [portal]
        enabled = true
        database = "{database}"
        stream_allow_hosts = {allow}
    """))
    return config


def http_definition(org: str, name: str, url: str, token: str, key: str = KEY,
                    paused: bool = False) -> StreamDefinition:
    """An ``http`` stream to ``url`` whose bearer token is sealed under ``key``."""
    stream_id = StreamDefinition.new_id()
    sealed = load_secret_box(None, {ENV_VAR: key}).seal(stream_id, {"bearer_token": token})
    return StreamDefinition(stream_id, org, name, "http", {"url": url}, sealed,
                            ["bearer_token"], paused, WHEN, WHEN, "admin", "admin")


async def save_definitions(database: str | os.PathLike[str], defs: list[StreamDefinition]) -> None:
    """Open the store ``database`` names (creating it) and insert ``defs``."""
    events = event_store(str(database))
    await events.open()
    try:
        for d in defs:
            await stream_store(events).insert(d, 100)
    finally:
        await events.close()
