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
