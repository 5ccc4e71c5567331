"""Helpers of the portal tests: a real Config of a portal on a given database, and a
running portal with tokens of every kind. A module of its own (not conftest.py), so that
test modules import it by a name no other test directory uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_config(tmp_path: Path, database: Path | str, extra: str = "") -> Any:
    """A real Config (parsed from TOML) whose state and journal live in ``tmp_path``."""
    from auditshipd.config import parse_config

    text = f"""
[journal]
path = "{tmp_path}/journal/audit.jsonl"
paths = ["{tmp_path}/journal/audit.jsonl*"]
state_dir = "{tmp_path}/state"

[portal]
enabled = true
listen = "127.0.0.1:0"
database = "{database}"
{extra}
[[sinks]]
name = "index"
type = "portal"

[[sinks]]
name = "acme-siem"
type = "http"
organizations = ["acme"]
"""
    return parse_config(text, str(tmp_path / "auditshipd.toml"))


class PortalEnv:
    """A running portal on the seeded store, with tokens of every kind."""

    def __init__(self, server: Any, journal: Path) -> None:
        self.server = server
        self.url = server.url
        self.journal = journal

    @classmethod
    async def start(cls, server: Any, journal: Path) -> PortalEnv:
        """The env with fresh tokens. The seeded store is shared by the tests of a run
        (tokens live in it), so the previous test's tokens of these names are revoked."""
        env = cls(server, journal)
        tokens = server.tokens
        for name in ("root-admin", "just-viewer", "gone", "acme-admin"):
            await tokens.revoke(name)
        env.admin = await tokens.create("root-admin", "admin")
        env.viewer = await tokens.create("just-viewer", "viewer")
        env.revoked = await tokens.create("gone", "admin")
        await tokens.revoke("gone")
        env.acme = await tokens.create("acme-admin", "admin", "acme")
        return env

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def journal_events(self) -> list[dict[str, Any]]:
        import json

        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines()]

    def operator_records(self) -> list[dict[str, Any]]:
        """The journal's records of the operators' log (without an organization)."""
        return [e for e in self.journal_events() if not e.get("organization")]
