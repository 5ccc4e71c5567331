"""An address the portal or the metrics server cannot listen on (another process holds
it): at start, a configuration error naming the key and its line (exit 2, no
traceback); at a reload, the reload is refused as a whole and the daemon goes on with
its running config and servers."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from tests.conftest import Workspace
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.sinks import file_sink

from auditshipd.testing import free_port, read_jsonl_ids, write_events

pytestmark = pytest.mark.integration


@pytest.fixture
def taken() -> Iterator[int]:
    """A port of 127.0.0.1 another process listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _portal(listen: str) -> str:
    return f'\n[portal]\nenabled = true\nlisten = "{listen}"\n'


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return int(answer.status)


def test_run_with_the_portal_address_taken_is_a_configuration_error(
        ws: Workspace, taken: int) -> None:
    config = ws.write_config(file_sink(ws.out, "out") + _portal(f"127.0.0.1:{taken}"))
    line = config.read_text().splitlines().index(f'listen = "127.0.0.1:{taken}"') + 1
    daemon = ws.daemon().start()
    assert daemon.proc is not None
    assert daemon.proc.wait(60) == 2
    log = daemon.log().decode(errors="replace")
    assert f"configuration error: {config}:{line}: portal.listen: cannot listen on" \
           f" 127.0.0.1:{taken}: " in log
    assert "address already in use" in log and "Traceback" not in log


def test_run_with_the_metrics_address_taken_names_its_line(ws: Workspace, taken: int) -> None:
    config = ws.write_config(file_sink(ws.out, "out")
                             + f'\n[metrics]\nlisten = "127.0.0.1:{taken}"\n')
    line = config.read_text().splitlines().index(f'listen = "127.0.0.1:{taken}"') + 1
    daemon = ws.daemon().start()
    assert daemon.proc is not None
    assert daemon.proc.wait(60) == 2
    log = daemon.log().decode(errors="replace")
    assert f"configuration error: {config}:{line}: metrics.listen: cannot listen on" \
           f" 127.0.0.1:{taken}: " in log
    assert "Traceback" not in log


def test_a_reload_to_a_taken_portal_address_is_refused(
        ws: Workspace, taken: int, caplog: pytest.LogCaptureFixture) -> None:
    """The new config moves the portal to a taken port and adds a sink: neither happens;
    the portal answers where it did, the running sink goes on delivering."""
    before = free_port()
    added = ws.root / "added.jsonl"
    sinks = file_sink(ws.out, "out", batch="timeout = 0.05")
    config = ws.write_config(sinks + _portal(f"127.0.0.1:{before}"))
    metrics = config.read_text().split("[metrics]", 1)[1]

    async def scenario() -> None:
        async with running_daemon(config) as d:
            assert await asyncio.to_thread(_status, f"http://127.0.0.1:{before}/login") == 200
            ws.write_config(sinks + file_sink(added, "added")
                            + _portal(f"127.0.0.1:{taken}") + "\n[metrics]" + metrics)
            line = config.read_text().splitlines().index(f'listen = "127.0.0.1:{taken}"') + 1
            with caplog.at_level(logging.INFO, logger="auditshipd"):
                assert not await d.reload()
            assert (f"config reload rejected, the running config stays: {config}:{line}:"
                    f" portal.listen: cannot listen on 127.0.0.1:{taken}: ") in caplog.text
            assert sorted(d.drivers) == ["out"]
            assert await asyncio.to_thread(_status, f"http://127.0.0.1:{before}/login") == 200
            ids = write_events(ws.journal, "a", 5)
            await until(lambda: set(ids) <= set(read_jsonl_ids(ws.out)), "delivery goes on")
            assert not added.exists()

    asyncio.run(scenario())


def test_a_reload_may_swap_the_ports_of_its_own_servers(ws: Workspace) -> None:
    """The ports the daemon's own servers hold are free once they stop: a reload that
    swaps the portal's and the metrics server's ports is applied."""
    portal, metrics = free_port(), free_port()
    sinks = file_sink(ws.out, "out")
    config = ws.write_config(sinks + _portal(f"127.0.0.1:{portal}")
                             + f'\n[metrics]\nlisten = "127.0.0.1:{metrics}"\n')

    async def scenario() -> None:
        async with running_daemon(config) as d:
            ws.write_config(sinks + _portal(f"127.0.0.1:{metrics}")
                            + f'\n[metrics]\nlisten = "127.0.0.1:{portal}"\n')
            assert await d.reload()
            assert await asyncio.to_thread(_status, f"http://127.0.0.1:{metrics}/login") == 200
            assert await asyncio.to_thread(_status, f"http://127.0.0.1:{portal}/healthz") == 200

    asyncio.run(scenario())
