"""``auditshipd status`` and the portal's store: no store, an unreachable one, and
streams saved in a real SQLite store (listed without their secrets)."""

from __future__ import annotations

import asyncio
import dataclasses
import textwrap
from pathlib import Path

import pytest
from tests.helpers.store_streams import save_definitions

from auditshipd.config import Config, parse_config
from auditshipd.portal.stream_defs import StreamDefinition
from auditshipd.service.status import sink_status
from auditshipd.service.status_cli import store_stream_sinks


def _config(tmp: Path, portal: str) -> Config:
    journal = tmp / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(f"""
        [journal]
        path = "{journal}"
        paths = ["{journal}*"]
        state_dir = "{tmp / 'state'}"
        [[sinks]]
        name = "siem"
        type = "file"
        path = "{tmp / 'out.jsonl'}"
        [portal]
    """) + textwrap.dedent(portal)
    return parse_config(text, str(tmp / "auditshipd.toml"))


def _definition(org: str, name: str, paused: bool = False) -> StreamDefinition:
    return StreamDefinition(StreamDefinition.new_id(), org, name, "http",
                            {"url": "https://siem.example/in"}, "sealed-secret-bytes",
                            ["bearer_token"], paused, "2026-01-01T00:00:00Z",
                            "2026-01-01T00:00:00Z", "admin", "admin")



def test_no_portal_or_no_store_yet_lists_nothing_and_creates_nothing(tmp_path: Path) -> None:
    assert store_stream_sinks(_config(tmp_path, "enabled = false\n")) == []
    config = _config(tmp_path, 'enabled = true\ndatabase = "portal.sqlite3"\n')
    assert store_stream_sinks(config) == []
    assert not list(tmp_path.rglob("*.sqlite3"))


def test_streams_of_the_store_are_listed_by_name_paused_ones_disabled(tmp_path: Path) -> None:
    database = tmp_path / "state" / "portal.sqlite3"
    config = _config(tmp_path, f'enabled = true\ndatabase = "{database}"\n')
    asyncio.run(save_definitions(str(database), [_definition("acme", "splunk"),
                                      _definition("globex", "siem", paused=True),
                                      _definition("initech", "siem")]))
    # a stream file's sink of the same name: the daemon does not run the stored one
    config.sinks[0].name = "initech.siem"
    listed = store_stream_sinks(config)
    assert [(s.name, s.type, s.enabled, s.organizations) for s in listed] == [
        ("acme.splunk", "http", True, ["acme"]), ("globex.siem", "http", False, ["globex"])]
    assert all(s.options is None for s in listed)
    rows = sink_status(dataclasses.replace(config, sinks=[*config.sinks, *listed]))
    assert [(r["name"], r["state"]) for r in rows] == [
        ("initech.siem", "inactive"), ("acme.splunk", "inactive"), ("globex.siem", "inactive")]


def test_an_unreachable_store_is_said_and_the_other_sinks_listed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, 'enabled = true\n'
                     'database = "postgresql://auditshipd:s3cret-pw@127.0.0.1:1/portal"\n')
    assert store_stream_sinks(config) == []
    err = capsys.readouterr().err
    assert "self-service streams not listed: the portal store cannot be read" in err
    assert "s3cret-pw" not in err
