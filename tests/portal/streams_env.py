"""Helpers of the self-service stream tests: a portal on an empty store with a secrets key,
tokens of every kind, a browser session, and a resolver answering what a test says.
A module of its own, imported by a name no other test directory uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from auditshipd.testing import StaticResolver

KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="


# What DNS would say, injected at the resolver seam.
FakeResolver = StaticResolver


class StreamsPortal:
    """A running portal with tokens: operator, acme and globex admins, a viewer of acme,
    a revoked acme admin."""

    def __init__(self, server: Any, journal: Path) -> None:
        self.server = server
        self.url = server.url
        self.journal = journal

    @classmethod
    async def start(cls, server: Any, journal: Path) -> StreamsPortal:
        env = cls(server, journal)
        tokens = server.tokens
        env.operator = await tokens.create("operator", "admin")
        env.acme = await tokens.create("acme-admin", "admin", "acme")
        env.globex = await tokens.create("globex-admin", "admin", "globex")
        env.viewer = await tokens.create("acme-viewer", "viewer", "acme")
        env.revoked = await tokens.create("acme-gone", "admin", "acme")
        await tokens.revoke("acme-gone")
        return env

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def login(self, http: Any, token: str) -> str:
        """Log ``http`` in with ``token``; the session's CSRF token."""
        async with http.get(f"{self.url}/login") as r:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)
        async with http.post(f"{self.url}/login", data={"token": token, "csrf": csrf},
                             allow_redirects=False) as r:
            assert r.status == 303, await r.text()
        async with http.get(f"{self.url}/streams") as r:
            return re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)


def streams_config(tmp_path: Path, database: str, extra: str = "") -> Any:
    from portal_env import make_config

    return make_config(tmp_path, database, 'stream_allow_hosts = ["127.0.0.1"]\n'
                                           'max_streams_per_organization = 3\n' + extra)
