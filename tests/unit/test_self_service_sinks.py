"""The daemon's side of self-service streams: definitions from a real (SQLite) store turned
into org-scoped sinks; a definition that cannot run is left out with its reason while the
others run; no secrets key starts none and says so; changes are noticed by the counter."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from auditshipd.config import parse_config
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.portal.backend import event_store, stream_store
from auditshipd.portal.stream_defs import StreamDefinition
from auditshipd.portal.stream_secrets import SecretBox
from auditshipd.service.store_streams import StoreStreams

KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
TYPES = sink_types(build_plugin_manager([]))


def _config(tmp_path: Path, allow: str = '["127.0.0.1"]') -> object:
    return parse_config(f"""
[journal]
path = "{tmp_path}/j/audit.jsonl"
state_dir = "{tmp_path}/state"
[portal]
database = "{tmp_path}/portal.sqlite3"
stream_allow_hosts = {allow}
[[sinks]]
name = "acme.taken"
type = "file"
path = "{tmp_path}/out.jsonl"
""", str(tmp_path / "auditshipd.toml"), TYPES)


def _definition(name: str, url: str, *, paused: bool = False, org: str = "acme",
                sealed: dict[str, str] | None = None, box: SecretBox | None = None) -> StreamDefinition:
    sid = StreamDefinition.new_id()
    return StreamDefinition(sid, org, name, "http", {"url": url},
                            box.seal(sid, sealed) if box and sealed else None,
                            sorted(sealed or {}), paused, "2026-01-01T00:00:00Z",
                            "2026-01-01T00:00:00Z", "t", "t")


async def test_definitions_become_scoped_sinks_and_bad_ones_only_fail_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Runnable definitions become sinks scoped to their organization, starting at their
    creation, with the destination policy; a paused one is left out silently; a name
    clash, secrets sealed with another key and a refused literal address are left out
    with their reasons; a change moves the counter."""
    monkeypatch.setenv("AUDITSHIPD_SECRETS_KEY", KEY)
    config = _config(tmp_path)
    events = event_store(f"{tmp_path}/portal.sqlite3")
    await events.open()
    store = stream_store(events)
    box = SecretBox(bytes(32))  # not the daemon's key
    good = _definition("siem", "http://127.0.0.1:9/in")
    for d in (good, _definition("held", "http://127.0.0.1:9/in", paused=True),
              _definition("taken", "http://127.0.0.1:9/in"),
              _definition("rekeyed", "http://127.0.0.1:9/in", sealed={"bearer_token": "tok-123456"}, box=box),
              _definition("meta", "http://169.254.169.254/latest"),
              _definition("other", "http://127.0.0.1:9/in", org="globex")):
        await store.insert(d, 10)
    streams = StoreStreams()
    try:
        caplog.set_level(logging.ERROR)
        sinks = await streams.sink_configs(config, TYPES)
        assert sorted(s.name for s in sinks) == ["acme.siem", "globex.other"]
        siem = next(s for s in sinks if s.name == "acme.siem")
        assert siem.organizations == ["acme"] and siem.stream_org == "acme"
        assert siem.start_at == "2026-01-01T00:00:00Z" and siem.destinations is not None
        assert siem.source == "portal"
        reasons = {d.name: streams.errors.get(d.id, "") for d in await store.list()}
        assert "configured by the operator too" in reasons["taken"]
        assert "do not decrypt" in reasons["rekeyed"]
        assert "cloud metadata" in reasons["meta"]
        assert reasons["held"] == "" and reasons["siem"] == ""
        assert "tok-123456" not in caplog.text
        assert not await streams.changed(config)
        await store.delete(good.id)
        assert await streams.changed(config)
        assert not await streams.changed(config)  # said once, even before a reload
        await store.delete((await store.list("globex"))[0].id)
        assert await streams.changed(config)
    finally:
        await streams.close()
        await events.close()


async def test_without_a_key_no_stream_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """No AUDITSHIPD_SECRETS_KEY and no key file: no self-service sink, one clear error,
    each unpaused stream carries the reason for the portal."""
    monkeypatch.delenv("AUDITSHIPD_SECRETS_KEY", raising=False)
    config = _config(tmp_path)
    events = event_store(f"{tmp_path}/portal.sqlite3")
    await events.open()
    d = _definition("siem", "http://127.0.0.1:9/in")
    await stream_store(events).insert(d, 10)
    streams = StoreStreams()
    try:
        caplog.set_level(logging.ERROR)
        assert await streams.sink_configs(config, TYPES) == []
        assert await streams.sink_configs(config, TYPES) == []
        assert caplog.text.count("self-service streams not started on this host: no secrets key") == 1
        assert "AUDITSHIPD_SECRETS_KEY" in streams.errors[d.id]
    finally:
        await streams.close()
        await events.close()


async def test_a_config_naming_another_store_takes_its_streams(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``[portal] database`` changed by a reload: the streams are the new store's, and its
    changes are noticed; the portal taken out of the config: no store, no streams."""
    monkeypatch.setenv("AUDITSHIPD_SECRETS_KEY", KEY)
    first = _config(tmp_path)
    second = _config(tmp_path)
    second.portal.database = f"{tmp_path}/other.sqlite3"
    stores = {}
    for config, org in ((first, "acme"), (second, "globex")):
        events = event_store(config.portal.database)
        await events.open()
        stores[org] = (events, stream_store(events))
        await stores[org][1].insert(_definition("siem", "http://127.0.0.1:9/in", org=org), 10)
    streams = StoreStreams()
    try:
        assert [s.name for s in await streams.sink_configs(first, TYPES)] == ["acme.siem"]
        assert await streams.changed(second)  # the config names another store
        assert [s.name for s in await streams.sink_configs(second, TYPES)] == ["globex.siem"]
        assert not await streams.changed(second)
        await stores["acme"][1].insert(_definition("more", "http://127.0.0.1:9/in"), 10)
        assert not await streams.changed(second)  # the old store is no longer read
        await stores["globex"][1].insert(_definition("more", "http://127.0.0.1:9/in",
                                                     org="globex"), 10)
        assert await streams.changed(second)
        assert sorted(s.name for s in await streams.sink_configs(second, TYPES)) == [
            "globex.more", "globex.siem"]
        none = _config(tmp_path)
        none.portal.database = ""
        none.portal.enabled = False
        assert await streams.sink_configs(none, TYPES) == [] and streams.streams is None
    finally:
        await streams.close()
        for events, _ in stores.values():
            await events.close()
