"""A reload takes nothing else down and reaches every sink it changes: a sink that cannot
start, a server address that is taken, the portal store unreadable at that moment or a
broken stream file stop no other sink; what a sink takes from shared tables
(``stream_allow_hosts``, ``[portal]``, ``[formats]``) reaches the running sink."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.sinks import file_sink
from tests.helpers.store_streams import KEY, http_definition, save_definitions
from tests.helpers.tcp_proxy import TcpProxy
from tests.servers.postgres import migrated_schema_sync

from auditshipd.journal.writer import AuditJournal
from auditshipd.portal.stream_secrets import ENV_VAR
from auditshipd.service import sink_restarts
from auditshipd.testing import WebhookReceiver, free_port, read_jsonl_ids, write_events

pytestmark = pytest.mark.integration

TOKEN = "stream-bearer-0d9e8f7a6b"

PICKY_PLUGIN = '''
from auditshipd.plugin import SinkOptions, SinkType, hookimpl


class PickyOptions(SinkOptions):
    out: str
    label: str = ""


class PickySink:
    """A drop-in sink with a bug: its constructor raises for one option value."""

    def __init__(self, name, options, context):
        if options.label == "bad":
            raise KeyError("label")
        self.options = options

    async def start(self):
        pass

    async def send(self, batch):
        with open(self.options.out, "ab") as f:
            f.write(batch.jsonl())

    async def close(self):
        pass


@hookimpl
def register_sink_types():
    return [SinkType("picky", PickyOptions, PickySink, "writes JSON lines")]
'''


def _config(root: Path, tables: str, top: str = "", metrics: str | None = None) -> str:
    """A config: the top-level keys ``top``, the journal and state dir under ``root``,
    [metrics] on ``metrics`` (a free port by default), then ``tables``."""
    journal = root / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    listen = metrics or f"127.0.0.1:{free_port()}"
    return f"""
shutdown_timeout = 3.0
config_watch = false
{top}
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{root / 'state'}"
poll_interval = 0.2

[metrics]
listen = "{listen}"

{tables}
"""


def _journal(root: Path) -> Path:
    return root / "journal" / "audit.jsonl"


def _acme_events(journal: Path, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    with AuditJournal(journal) as j:
        for eid in ids:
            assert j.record("user.signed_in", id=eid, actor={"type": "user", "email": "jo@acme.test"},
                            organization={"slug": "acme"})
    return ids


def _file_sink(name: str, path: Path, extra: str = "") -> str:
    return file_sink(path, name, extra, batch="timeout = 0.05")


def test_a_sink_that_cannot_start_after_a_reload_is_tried_again_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sink_restarts, "FIRST_DELAY", 0.2)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "picky_sink.py").write_text(PICKY_PLUGIN)
    main, picky = tmp_path / "main.jsonl", tmp_path / "picky.jsonl"
    config = tmp_path / "auditshipd.toml"

    def write(label: str) -> None:
        config.write_text(_config(tmp_path, _file_sink("main", main) + f"""
[[sinks]]
name = "picky"
type = "picky"
out = "{picky}"
label = "{label}"
[sinks.batch]
timeout = 0.05
""", top=f'plugin_dirs = ["{plugins}"]'))

    write("good")

    async def scenario() -> None:
        async with running_daemon(config) as d:
            first = write_events(_journal(tmp_path), "a", 5)
            await until(lambda: set(first) <= set(read_jsonl_ids(picky)), "picky delivers")
            write("bad")  # the new settings make the plugin's constructor raise
            assert await d.reload()
            second = write_events(_journal(tmp_path), "b", 5)
            await until(lambda: set(second) <= set(read_jsonl_ids(main)), "the other sink goes on")
            status = json.loads((tmp_path / "state" / "status" / "picky.json").read_bytes())
            assert status["state"] == "error", status
            assert "did not start" in status["last_error"] and "KeyError" in status["last_error"]
            assert "picky" not in d.drivers
            write("good")
            assert await d.reload()
            await until(lambda: set(second) <= set(read_jsonl_ids(picky)), "picky catches up")

    asyncio.run(scenario())
    assert "sink picky did not start: KeyError" in caplog.text
    assert set(read_jsonl_ids(main)) == set(read_jsonl_ids(picky))


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        return answer.status


def test_a_reload_to_a_taken_metrics_address_is_refused(tmp_path: Path) -> None:
    """The reload is refused as a whole; the endpoint stays where it was."""
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    before = free_port()
    config.write_text(_config(tmp_path, _file_sink("out", out), metrics=f"127.0.0.1:{before}"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()

        async def scenario() -> None:
            async with running_daemon(config) as d:
                config.write_text(_config(tmp_path, _file_sink("out", out),
                                          metrics=f"127.0.0.1:{taken.getsockname()[1]}"))
                assert not await d.reload()
                assert await asyncio.to_thread(_healthz, before) == 200
                ids = write_events(_journal(tmp_path), "a", 5)
                await until(lambda: set(ids) <= set(read_jsonl_ids(out)), "delivery goes on")

        asyncio.run(scenario())


def test_the_default_metrics_address_taken_is_not_fatal(tmp_path: Path) -> None:
    """Another auditshipd on the host holds 127.0.0.1:9750: this one runs without the
    endpoint (an address the operator chose must work; the default need not)."""
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    config.write_text(_config(tmp_path, _file_sink("out", out)).replace(
        "[metrics]\nlisten", "[metrics]\n# listen"))
    with socket.socket() as holder:
        try:
            holder.bind(("127.0.0.1", 9750))
            holder.listen()
        except OSError:
            pass  # taken already: the same situation

        async def scenario() -> None:
            async with running_daemon(config) as d:
                assert d.metrics is None
                ids = write_events(_journal(tmp_path), "a", 5)
                await until(lambda: set(ids) <= set(read_jsonl_ids(out)), "delivery")

        asyncio.run(scenario())


def _stream_host(root: Path, database: str, allow: str, poll: float = 60.0, top: str = "") -> str:
    return _config(root, _file_sink("archive", root / "archive.jsonl") + f"""
[portal]
enabled = false
database = "{database}"
stream_allow_hosts = {allow}
stream_poll_interval = {poll}
""", top=top)


def test_narrowing_stream_allow_hosts_reaches_the_running_streams(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, KEY)
    database, config = tmp_path / "portal.sqlite3", tmp_path / "auditshipd.toml"
    with WebhookReceiver(bearer_token=TOKEN) as rx:
        url = rx.url.replace("127.0.0.1", "localhost")  # a name that resolves to loopback
        asyncio.run(save_definitions(database, [http_definition("acme", "siem", url, TOKEN)]))
        config.write_text(_stream_host(tmp_path, str(database), '["localhost"]'))

        async def scenario() -> None:
            async with running_daemon(config) as d:
                first = _acme_events(_journal(tmp_path), "a", 5)
                await until(lambda: set(first) <= set(rx.ids()), "the allowed stream delivers")
                config.write_text(_stream_host(tmp_path, str(database), "[]"))
                assert await d.reload()
                second = _acme_events(_journal(tmp_path), "b", 5)
                await until(lambda: "loopback" in (d.drivers["acme.siem"].stats.last_error or ""),
                            "the stream's connections are refused")
                assert not set(second) & set(rx.ids())

        asyncio.run(scenario())


@pytest.mark.parametrize("host", ["127\u30020\u30020\u30021", "\uff11\uff12\uff17.0.0.1"])
def test_an_address_written_with_other_characters_is_refused_as_that_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """127.0.0.1 written with ideographic full stops or fullwidth digits (saved while
    stream_allow_hosts allowed loopback): the HTTP client maps it to the address and
    connects without a lookup, so the daemon refuses it as 127.0.0.1 when it builds the
    stream, naming the reason; the receiver never sees a request."""
    monkeypatch.setenv(ENV_VAR, KEY)
    database, config = tmp_path / "portal.sqlite3", tmp_path / "auditshipd.toml"
    with WebhookReceiver(bearer_token=TOKEN) as rx:
        stream = http_definition("acme", "siem", rx.url.replace("127.0.0.1", host), TOKEN)
        asyncio.run(save_definitions(database, [stream]))
        config.write_text(_stream_host(tmp_path, str(database), "[]"))

        async def scenario() -> None:
            async with running_daemon(config) as d:
                ids = _acme_events(_journal(tmp_path), "a", 5)
                await until(lambda: set(ids) <= set(read_jsonl_ids(tmp_path / "archive.jsonl")),
                            "the archive has the events")
                assert "loopback" in d.store_streams.errors.get(stream.id, "")
                assert "acme.siem" not in d.drivers
            assert rx.requests == 0

        asyncio.run(scenario())


def _stored(database: Path, prefix: str) -> int:
    """Events of ``database`` whose id starts with ``prefix`` (the reload's own audit
    event is stored too)."""
    if not database.exists():
        return 0
    with sqlite3.connect(database) as db:
        try:
            return db.execute("SELECT count(*) FROM events WHERE id LIKE ?",
                              (prefix + "%",)).fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0


def test_the_portal_sink_follows_the_portal_table(tmp_path: Path) -> None:
    a, b, config = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3", tmp_path / "auditshipd.toml"
    sink = '[[sinks]]\nname = "portal"\ntype = "portal"\n[sinks.batch]\ntimeout = 0.05\n'

    def write(database: Path, retention: int) -> None:
        config.write_text(_config(tmp_path, sink + f"""
[portal]
enabled = false
database = "{database}"
retention_days = {retention}
"""))

    write(a, 30)

    async def scenario() -> None:
        async with running_daemon(config) as d:
            write_events(_journal(tmp_path), "a", 5)
            await until(lambda: _stored(a, "a-") == 5, "5 events in a")
            write(b, 3650)
            assert await d.reload()
            assert d.drivers["portal"].sink.retention.default == 3650
            write_events(_journal(tmp_path), "b", 5)
            await until(lambda: _stored(b, "b-") == 5, "the new events in b")
            assert _stored(a, "b-") == 0

    asyncio.run(scenario())


def test_a_formats_change_reaches_the_formatted_sinks(tmp_path: Path) -> None:
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"

    def write(product: str) -> None:
        config.write_text(_config(tmp_path, _file_sink("siem", out, 'format = "ocsf"')
                                  + f'\n[formats.ocsf]\nproduct_name = "{product}"\n'))

    def products() -> list[str]:
        """The product name of each test event (the reload's own audit event left out)."""
        lines = out.read_text().splitlines() if out.exists() else []
        events = [json.loads(line) for line in lines if line]
        return [e["metadata"]["product"]["name"] for e in events
                if e["metadata"].get("uid", "").startswith(("a-", "b-"))]

    write("Before")

    async def scenario() -> None:
        async with running_daemon(config) as d:
            write_events(_journal(tmp_path), "a", 3)
            await until(lambda: len(products()) == 3, "3 events")
            write("After")
            assert await d.reload()
            write_events(_journal(tmp_path), "b", 3)
            await until(lambda: len(products()) == 6, "6 events")

    asyncio.run(scenario())
    assert products() == ["Before"] * 3 + ["After"] * 3


def test_a_broken_stream_file_keeps_its_sink_from_a_portal_stream_of_its_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """acme.toml's sink and a portal stream are both named acme.siem (the file's runs). An
    invalid edit of acme.toml keeps its sink running; the portal stream does not take the
    name, nor the file sink's cursor."""
    monkeypatch.setenv(ENV_VAR, KEY)
    database, config = tmp_path / "portal.sqlite3", tmp_path / "auditshipd.toml"
    streams, out = tmp_path / "streams", tmp_path / "acme-file.jsonl"
    streams.mkdir()
    stream_file = _file_sink("siem", out)
    (streams / "acme.toml").write_text(stream_file)
    with WebhookReceiver(bearer_token=TOKEN) as rx:
        asyncio.run(save_definitions(database, [http_definition("acme", "siem", rx.url, TOKEN)]))
        config.write_text(_stream_host(tmp_path, str(database), '["127.0.0.1"]',
                                       top=f'streams_dir = "{streams}"'))

        async def scenario() -> None:
            async with running_daemon(config) as d:
                assert d.drivers["acme.siem"].sc.type == "file"
                first = _acme_events(_journal(tmp_path), "a", 5)
                await until(lambda: set(first) <= set(read_jsonl_ids(out)), "the file sink delivers")
                (streams / "acme.toml").write_text("[[sinks]\n")  # an invalid edit
                assert await d.reload()
                assert d.drivers["acme.siem"].sc.type == "file"
                second = _acme_events(_journal(tmp_path), "b", 5)
                await until(lambda: set(second) <= set(read_jsonl_ids(out)), "the file sink goes on")
                (streams / "acme.toml").write_text(stream_file)
                assert await d.reload()
                third = _acme_events(_journal(tmp_path), "c", 5)
                await until(lambda: set(third) <= set(read_jsonl_ids(out)), "and after the fix")

        asyncio.run(scenario())
        assert rx.requests == 0


def test_a_store_outage_during_a_reload_stops_no_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_database: str) -> None:
    """The portal store (PostgreSQL) restarts while a reload reads it: the running
    self-service streams keep running, and once the store answers again the next poll
    reloads (a definition changed meanwhile would be applied)."""
    monkeypatch.setenv(ENV_VAR, KEY)
    direct = migrated_schema_sync(pg_database)
    where = urlsplit(direct)
    proxy = TcpProxy((where.hostname or "127.0.0.1", where.port or 5432))
    through_proxy = direct.replace(where.netloc, f"{where.username}@127.0.0.1:{proxy.port}")
    config = tmp_path / "auditshipd.toml"
    try:
        with WebhookReceiver(bearer_token=TOKEN) as rx:
            asyncio.run(save_definitions(direct, [http_definition("acme", "siem", rx.url, TOKEN)]))
            config.write_text(_stream_host(tmp_path, through_proxy, '["127.0.0.1"]'))

            async def scenario() -> None:
                async with running_daemon(config) as d:
                    first = _acme_events(_journal(tmp_path), "a", 5)
                    await until(lambda: set(first) <= set(rx.ids()), "the stream delivers")
                    proxy.down()  # the store's server restarts: connections drop
                    assert await d.reload()
                    assert "acme.siem" in d.drivers
                    proxy.up()
                    assert await d.store_streams.changed(d.config)  # what the poll asks
                    assert await d.reload()
                    assert "acme.siem" in d.drivers
                    second = _acme_events(_journal(tmp_path), "b", 5)
                    await until(lambda: set(second) <= set(rx.ids()), "the stream goes on")

            asyncio.run(scenario())
        assert sorted(rx.ids()) == sorted(set(rx.ids()))  # each once
    finally:
        proxy.close()


def test_a_reload_rejected_for_its_state_dir_leaves_the_store_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new config that moves the state directory (needs a restart) and changes [portal]
    database: the reload is refused before the new store is opened, so the next poll sees nothing to
    reload (it used to flip between the two stores, refusing again every poll)."""
    monkeypatch.setenv(ENV_VAR, KEY)
    a, b, config = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3", tmp_path / "auditshipd.toml"
    asyncio.run(save_definitions(a, []))
    config.write_text(_stream_host(tmp_path, str(a), "[]"))

    async def scenario() -> None:
        async with running_daemon(config) as d:
            changed = _stream_host(tmp_path, str(b), "[]").replace(
                f"{tmp_path / 'state'}", f"{tmp_path / 'state2'}")
            config.write_text(changed)
            assert not await d.reload()
            assert not await d.store_streams.changed(d.config)
            assert not b.exists()

    asyncio.run(scenario())
