"""`auditshipd check-config`: every problem of a file in one run (with lines, "did you
mean" and sink-named keys), --no-env for configs whose secrets are not set, and
--check-connections against a real local server and a closed port."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from auditshipd.config import parse_config
from auditshipd.errors import ConfigError, ConfigErrors
from auditshipd.netguard import DestinationPolicy
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.service.connections import check_connections
from auditshipd.service.loading import load_runtime
from auditshipd.testing import StaticResolver, free_port

TYPES = sink_types(build_plugin_manager())

MISTAKES = """\
[journal]
max_line_bytes = 10
colour = 3

[portal]
listn = "127.0.0.1:8750"

[[sinks]]
name = "siem"
type = "http"
url = "https://siem.example.com/ingest"
bearer_token = "${CHECKCFG_TOKEN}"
gzipp = true
concurrency = 0
[sinks.batch]
max_evnts = 5

[[sinks]]
name = "out"
type = "file"
path = "/tmp/out.jsonl"
concurrency = 0
"""


def check_config(path: Path, *extra: str, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditshipd.cli", "check-config", "-c",
                           str(path), *extra], capture_output=True, text=True, timeout=60,
                          env=env)


def test_every_error_in_one_run(tmp_path, monkeypatch):
    """Mistakes in [journal], [portal] and two sinks are all listed in one run, each with
    its line, the key meant and the sink's name; exit 2; a secret value never shows."""
    monkeypatch.setenv("CHECKCFG_TOKEN", "tok-very-secret-value")
    path = tmp_path / "auditshipd.toml"
    path.write_text(MISTAKES)
    r = check_config(path)
    assert r.returncode == 2, r.stdout + r.stderr
    expected = [
        f"{path}:3: journal.colour: unknown key",
        f"{path}:6: portal.listn: unknown key (did you mean 'listen'?)",
        f"{path}:2: journal.max_line_bytes: must be at least 64",
        f"{path}:16: sinks[0] (siem).batch.max_evnts: unknown key (did you mean 'max_events'?)",
        f"{path}:13: sinks[0] (siem).gzipp: unknown key (did you mean 'gzip'?)",
        f"{path}:22: sinks[1] (out).concurrency: value out of range",
    ]
    for line in expected:
        assert line in r.stderr, r.stderr
    assert "6 configuration errors" in r.stderr
    # sinks[0] has key errors: its values (concurrency = 0) are not checked on top.
    assert "sinks[0] (siem).concurrency" not in r.stderr
    assert "tok-very-secret-value" not in r.stderr + r.stdout


def test_run_and_reload_refuse_with_all_errors(monkeypatch, tmp_path):
    """load_runtime (what `run` and a reload use) still refuses the file, listing all."""
    monkeypatch.setenv("CHECKCFG_TOKEN", "x")
    path = tmp_path / "auditshipd.toml"
    path.write_text(MISTAKES)
    with pytest.raises(ConfigErrors) as info:
        load_runtime(path)
    assert len(info.value.errors) == 6
    assert info.value.key == "journal.colour" and info.value.line == 3


def test_unset_variables_are_all_reported_with_the_rest(monkeypatch):
    """Without --no-env, every unset ${VAR} is an error next to the other problems."""
    monkeypatch.delenv("CHECKCFG_A", raising=False)
    monkeypatch.delenv("CHECKCFG_B", raising=False)
    text = ('bogus = 1\n[[sinks]]\nname = "w"\ntype = "http"\nurl = "https://x.test"\n'
            'bearer_token = "${CHECKCFG_A}"\nhmac_secret = "${CHECKCFG_B}"\n')
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "c.toml", TYPES)
    assert [str(e) for e in info.value.errors] == [
        "c.toml:6: sinks[0] (w).bearer_token: environment variable CHECKCFG_A is not set",
        "c.toml:7: sinks[0] (w).hmac_secret: environment variable CHECKCFG_B is not set",
        "c.toml:1: bogus: unknown key",
    ]


def test_syntax_error_has_its_line():
    """A TOML syntax error names its line in the file:line: form."""
    with pytest.raises(ConfigError) as info:
        parse_config('[journal]\npaths = ["x"]\nmax_line_bytes = = 3\n', "c.toml", TYPES)
    assert info.value.line == 3 and str(info.value).startswith("c.toml:3: invalid TOML")


def test_a_key_written_in_a_table_and_a_sub_table_gets_the_line_of_its_own():
    """A sink's own `timeout` and its [sinks.retry] `timeout`: each error names the line
    in its own table."""
    text = ('[[sinks]]\nname = "w"\ntype = "file"\npath = "/tmp/a"\ntimeout = 1\n'
            '[sinks.retry]\ntimeout = 2\n')
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "c.toml", TYPES)
    assert {e.key: e.line for e in info.value.errors} == {
        "sinks[0] (w).timeout": 5, "sinks[0] (w).retry.timeout": 7}


def test_ambiguous_key_gets_no_line():
    """A key written twice in its table (once in an inline sub-table) gets no line
    rather than a wrong one."""
    text = ('[[sinks]]\nname = "w"\ntype = "file"\npath = "/tmp/a"\ntimeout = 1\n'
            'retry = { timeout = 2 }\n')
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "c.toml", TYPES)
    assert {e.key: e.line for e in info.value.errors} == {
        "sinks[0] (w).timeout": None, "sinks[0] (w).retry.timeout": None}


def test_no_env_checks_a_config_without_its_secrets(tmp_path):
    """--no-env: unset ${VAR}s are placeholders, not errors; other problems still are."""
    path = tmp_path / "auditshipd.toml"
    path.write_text('[[sinks]]\nname = "siem"\ntype = "http"\n'
                    'url = "https://siem.example.com/ingest"\n'
                    'bearer_token = "${CHECKCFG_UNSET_TOKEN}"\n')
    env = {k: v for k, v in __import__("os").environ.items() if k != "CHECKCFG_UNSET_TOKEN"}
    r = check_config(path, env=env)
    assert r.returncode == 2 and "CHECKCFG_UNSET_TOKEN is not set" in r.stderr
    r = check_config(path, "--no-env", env=env)
    assert r.returncode == 0, r.stderr
    assert "OK (1 sink(s): siem (http))" in r.stdout
    path.write_text(path.read_text() + "gzip = 3\n")
    r = check_config(path, "--no-env", env=env)
    assert r.returncode == 2 and "sinks[0] (siem).gzip: wrong type" in r.stderr
    assert "CHECKCFG_UNSET_TOKEN" not in r.stderr


def test_no_env_checks_a_config_whose_urls_are_variables(tmp_path):
    """--no-env: a whole URL from the environment (``url = "${SIEM_URL}"``) has no shape
    to check; the sinks' URL checks still refuse a URL written out wrong."""
    path = tmp_path / "auditshipd.toml"
    path.write_text('[[sinks]]\nname = "siem"\ntype = "http"\nurl = "${CHECKCFG_SIEM_URL}"\n'
                    '[[sinks]]\nname = "hec"\ntype = "splunk_hec"\nurl = "${CHECKCFG_HEC_URL}"\n'
                    'token = "${CHECKCFG_HEC_TOKEN}"\n'
                    '[[sinks]]\nname = "mq"\ntype = "mqtt"\nurl = "${CHECKCFG_MQTT_URL}"\n'
                    'topic = "audit"\n')
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("CHECKCFG_")}
    r = check_config(path, "--no-env", env=env)
    assert r.returncode == 0, r.stderr
    path.write_text(path.read_text() + '[[sinks]]\nname = "bad"\ntype = "http"\nurl = "ftp://x"\n')
    r = check_config(path, "--no-env", env=env)
    assert r.returncode == 2 and r.stderr.count("configuration error") == 1
    assert "sinks[3] (bad).url: must be an http:// or https:// URL" in r.stderr


def _sinks(ok_port: int, closed_port: int) -> str:
    return (f'[[sinks]]\nname = "up"\ntype = "http"\nurl = "http://127.0.0.1:{ok_port}/in"\n'
            f'[[sinks]]\nname = "down"\ntype = "http"\n'
            f'url = "http://user:pw-secret-9@127.0.0.1:{closed_port}/in?code=q-secret-8"\n'
            f'[[sinks]]\nname = "tls"\ntype = "http"\nurl = "https://127.0.0.1:{ok_port}/in"\n'
            f'tls_verify = false\n'
            f'[[sinks]]\nname = "local"\ntype = "file"\npath = "/tmp/checkcfg.jsonl"\n')


async def test_check_connections_against_a_real_server_and_afree_port():
    """The sink whose server listens is ok (and got no request), the closed port fails,
    a TLS handshake with a plain HTTP server fails (tls_verify = false still needs TLS),
    a file sink is skipped; reasons carry no secret."""
    requests: list[str] = []

    async def ingest(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.Response()

    app = web.Application()
    app.router.add_post("/in", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        config = parse_config(_sinks(port, free_port()), "c.toml", TYPES)
        results = {r.sink: r for r in await check_connections(config, timeout=5)}
    finally:
        await runner.cleanup()
    assert results["up"].status == "ok" and f"127.0.0.1:{port}" in results["up"].detail
    assert results["down"].status == "failed"
    assert results["tls"].status == "failed"
    assert results["local"].status == "skipped"
    text = " ".join(str(r) for r in results.values())
    assert "pw-secret-9" not in text and "q-secret-8" not in text
    assert requests == []


class _Rebinding(StaticResolver):
    """DNS that answers a public address to the first lookup of each name, then
    ``then`` (a rebinding attacker's name server)."""

    def __init__(self, then: str) -> None:
        super().__init__({})
        self.then = then

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[dict[str, Any]]:
        self.answers[host] = [self.then] if host in self.asked else ["93.184.216.34"]
        return await super().resolve(host, port, family)


async def test_check_connections_connects_a_stream_only_to_an_address_that_passed():
    """A self-service stream whose name answers a public address when it is checked,
    then a loopback one: the probe connects only through the same guard, so it is
    refused with the reason and the local listener never sees a connection (a second,
    unguarded lookup connected to it)."""
    accepted: list[int] = []

    async def on_connect(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(1)
        w.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = parse_config(f'[[sinks]]\nname = "acme.siem"\ntype = "http"\n'
                          f'url = "http://localhost:{port}/in"\norganizations = ["acme"]\n',
                          "c.toml", TYPES)
    config.sinks[0].destinations = DestinationPolicy()
    try:
        [result] = await check_connections(config, timeout=5, resolver=_Rebinding("127.0.0.1"))
    finally:
        server.close()
        await server.wait_closed()
    assert result.status == "failed", result
    assert "BlockedDestination" in result.detail and "loopback" in result.detail
    assert accepted == []


def test_check_connections_cli_exit_status(tmp_path):
    """`check-config --check-connections` prints one line per sink and exits 1 when one
    failed, 0 when all reached their endpoint."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        runner = web.AppRunner(web.Application())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        holder["runner"] = runner
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert started.wait(10)
    try:
        port = int(holder["port"])  # type: ignore[call-overload]
        path = tmp_path / "auditshipd.toml"
        path.write_text(_sinks(port, free_port()))
        r = check_config(path, "--check-connections")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "connection: up (http): ok: TCP connection to 127.0.0.1" in r.stdout
        assert "connection: down (http): failed:" in r.stdout
        assert "pw-secret-9" not in r.stdout + r.stderr
        path.write_text(f'[[sinks]]\nname = "up"\ntype = "http"\n'
                        f'url = "http://127.0.0.1:{port}/in"\n')
        r = check_config(path, "--check-connections")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
