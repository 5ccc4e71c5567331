"""Metrics and health answer only requests whose Host is one they serve (DNS rebinding)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from test_metrics import fake_daemon

from auditshipd.hostcheck import host_of
from auditshipd.service.metrics import MetricsConfig, start_metrics_server
from auditshipd.testing import free_port


def test_host_of_strips_port_and_brackets() -> None:
    """The Host header's host part: no port, no IPv6 brackets, lower case."""
    assert host_of("LOCALHOST:8750") == "localhost"
    assert host_of("[::1]:9750") == "::1"
    assert host_of("portal.example.") == "portal.example"
    assert host_of("localhost:") == "localhost"


@pytest.mark.parametrize("header", ["localhost:8750junk", "localhost:87 50", "[::1]:9750x",
                                    "[::1]x", "[::1", "localhost:８７５０"])
def test_host_of_refuses_what_is_not_a_port(header: str) -> None:
    """Text after the host that is not a port makes the header match no host at all."""
    assert host_of(header) == ""


async def _status(url: str, host: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Host": host},
                                                        allow_redirects=False) as r:
        return r.status


@pytest.mark.parametrize("allowed", [[], ["metrics.internal"]])
async def test_metrics_refuse_foreign_host(tmp_path: Path, allowed: list[str]) -> None:
    """/healthz and /metrics: a rebinding name gets 421; the listen address and localhost
    (by default) or the configured names are answered."""
    port = free_port()
    mc = MetricsConfig(listen=f"127.0.0.1:{port}", allowed_hosts=allowed)
    runner = await start_metrics_server(fake_daemon(tmp_path), mc)
    base = f"http://127.0.0.1:{port}"
    try:
        for path in ("/healthz", "/metrics", "/readyz"):
            assert await _status(base + path, f"rebind.attacker.example:{port}") == 421
        ours = allowed or ["127.0.0.1", "localhost"]
        for host in ours:
            assert await _status(base + "/healthz", f"{host}:{port}") == 200
        if allowed:
            assert await _status(base + "/healthz", f"localhost:{port}") == 421
    finally:
        await runner.cleanup()
