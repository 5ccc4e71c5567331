"""Test helpers shipped with the package, for our tests and for plugin authors.

- :class:`WebhookReceiver`: a real aiohttp HTTP server in a background thread that
  records every event it accepts and answers according to a script (503 with
  Retry-After, 429, 400, hang, refuse...), so a sink can be tested against failures.
- :class:`DaemonProcess`: ``auditshipd run`` as a subprocess on a temp dir, with
  SIGTERM / SIGKILL and log capture.
- :func:`wait_for`: poll a condition with a deadline instead of sleeping.
- :func:`read_jsonl_ids`: the event ids found in a JSONL file.
- :class:`StaticResolver`: an aiohttp resolver answering from a table, to test what a
  sink does when a name resolves to a given address (or changes between two looks).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import msgspec

__all__ = [
    "DaemonProcess",
    "StaticResolver",
    "ThreadedHttpServer",
    "WebhookReceiver",
    "free_port",
    "read_jsonl_ids",
    "wait_for",
]


# Ports handed out by free_port in this process: never the same one twice.
_GIVEN: set[int] = set()
_LOWEST_PORT = 10000


def _ephemeral_start() -> int:
    """The first port of the kernel's range for outgoing connections (Linux; 32768
    elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``host`` right now, not handed out before by this
    process. Picked at random below the kernel's range for outgoing connections: a port
    the kernel gives for ``bind(0)`` comes from that range, where any client connection
    (a test's HTTP client, a database connection) may take it as its local port before
    the server that was meant to listen there binds it."""
    top = _ephemeral_start()
    rng = random.SystemRandom()
    for _ in range(200 if top - _LOWEST_PORT > 1000 else 0):
        port = rng.randrange(_LOWEST_PORT, top)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket() as s:  # no room below the range: the kernel's choice
        s.bind((host, 0))
        port = s.getsockname()[1]
    _GIVEN.add(port)
    return port


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02,
             message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def wait_for_async(cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02,
                         message: str = "condition") -> Any:
    """:func:`wait_for` inside an event loop: polls ``cond`` without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def write_events(path: str | os.PathLike[str], prefix: str, n: int, *, seq: bool = False) -> list[str]:
    """Append ``n`` user.invited events with ids ``PREFIX-000000``... to the journal at
    ``path`` (with ``metadata.seq`` = their index when ``seq``); return the ids."""
    from .journal.writer import AuditJournal

    j = AuditJournal(path)
    ids = [f"{prefix}-{i:06d}" for i in range(n)]
    for i, eid in enumerate(ids):
        extra = {"metadata": {"seq": i}} if seq else {}
        assert j.record("user.invited", id=eid, actor={"type": "user", "email": "a@acme.test"}, **extra)
    j.close()
    return ids


def read_jsonl_ids(path: str | os.PathLike[str]) -> list[str]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    # Only complete lines: a writer may be in the middle of the last one right now.
    data = data[:data.rfind(b"\n") + 1]
    dec = msgspec.json.Decoder()
    return [dec.decode(line)["id"] for line in data.splitlines() if line.strip()]


class ThreadedHttpServer:
    """An aiohttp application on ``127.0.0.1:port``, served from its own thread and event
    loop (the receivers of the tests and benchmarks). A subclass adds its routes in
    :meth:`routes`. ``stop()`` stops listening, cancels the handlers still running (one
    told to hang) and closes the kept-alive connections."""

    client_max_size = 64 * 1024 * 1024

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None

    def routes(self, app: Any) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            fut = asyncio.run_coroutine_threadsafe(self._close_site(), self._loop)
            try:
                fut.result(10)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    async def _close_site(self) -> None:
        # Stop listening (connections are refused from now on), free handlers told to
        # hang, then close the kept-alive connections too.
        for site in list(self._runner.sites):
            await site.stop()
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()
        try:
            await asyncio.wait_for(self._runner.cleanup(), 5)
        except Exception:
            pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        app = web.Application(client_max_size=self.client_max_size)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        loop.run_until_complete(site.start())
        ready.set()
        loop.run_forever()
        # Handlers told to "hang" are still pending: cancel them before closing.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


class WebhookReceiver(ThreadedHttpServer):
    """An HTTP receiver in its own thread and event loop.

    ``script``: a list of answers consumed one per request before the default
    (``200``). An answer is an int status, a ``(status, headers[, body])`` tuple, ``"hang"``
    (never answer) or ``"close"`` (drop the connection). Accepted (2xx) requests add
    their events to ``events`` (and to ``batches``, one list per request).
    """

    def __init__(self, port: int | None = None, *, hmac_secret: str | None = None,
                 bearer_token: str | None = None, max_body_bytes: int | None = None):
        super().__init__(port)
        self.hmac_secret = hmac_secret
        self.bearer_token = bearer_token
        # A body (uncompressed) over this size is answered 413, as a proxy's limit would.
        self.max_body_bytes = max_body_bytes
        self.too_large = 0
        self.batch_headers: list[str] = []  # X-Auditshipd-Batch of each accepted request
        self.paths: list[str] = []  # the path and query of each accepted request
        self.script: list[Any] = []
        self.default: Any = 200
        self.events: list[dict[str, Any]] = []
        self.batches: list[list[dict[str, Any]]] = []  # the events of each accepted request
        self.requests = 0
        self.rejected_auth = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def ids(self) -> list[str]:
        with self._lock:
            return [e["id"] for e in self.events]

    def counts(self) -> Counter[str]:
        return Counter(self.ids())

    def set_script(self, answers: list[Any], default: Any = 200) -> None:
        with self._lock:
            self.script = list(answers)
            self.default = default

    def routes(self, app: Any) -> None:
        app.router.add_post("/ingest", self._handle)
        app.router.add_post("/ingest/{rest:.*}", self._handle)  # a token in the path

    async def _handle(self, request: Any) -> Any:
        import hashlib
        import hmac

        from aiohttp import web

        body = await request.read()  # aiohttp already undid Content-Encoding: gzip
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        with self._lock:
            self.requests += 1
            if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
                self.too_large += 1
                return web.Response(status=413, text="request entity too large")
            answer = self.script.pop(0) if self.script else self.default
        if answer == "hang":
            await asyncio.sleep(3600)
        if answer == "close":
            request.transport.close()
            return web.Response(status=500)
        body_text = "{}"
        if isinstance(answer, int):
            status, headers = answer, {}
        elif len(answer) == 3:
            status, headers, body_text = answer
        else:
            status, headers = answer
        if self.bearer_token and request.headers.get("Authorization") != f"Bearer {self.bearer_token}":
            self.rejected_auth += 1
            return web.Response(status=401, text="bad token")
        if self.hmac_secret:
            ts = request.headers.get("X-Auditshipd-Timestamp", "")
            expected = "v1=" + hmac.new(self.hmac_secret.encode(), ts.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, request.headers.get("X-Auditshipd-Signature", "")):
                self.rejected_auth += 1
                return web.Response(status=401, text="bad signature")
        if 200 <= status < 300:
            if request.content_type == "application/x-ndjson":
                events = [msgspec.json.decode(x) for x in body.splitlines() if x]
            else:
                events = msgspec.json.decode(body)
            with self._lock:
                self.events.extend(events)
                self.batches.append(events)
                self.batch_headers.append(request.headers.get("X-Auditshipd-Batch", ""))
                self.paths.append(request.path_qs)
        return web.Response(status=status, headers=headers, text=body_text)


class DaemonProcess:
    """``auditshipd run -c CONFIG`` as a child process (its own process group)."""

    def __init__(self, config_path: str | os.PathLike[str], cwd: str | os.PathLike[str],
                 env: dict[str, str] | None = None):
        self.config_path = str(config_path)
        self.cwd = str(cwd)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(cwd) / "daemon.log"
        self.starts = 0
        self._log_start = 0

    def start(self) -> DaemonProcess:
        self.starts += 1
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "auditshipd.cli", "run", "-c", self.config_path],
                cwd=self.cwd, env=self.env, stdout=log, stderr=log, start_new_session=True,
            )
        return self

    def wait_started(self, timeout: float = 20.0) -> None:
        wait_for(lambda: b"auditshipd started" in self.log()[self._log_start:]
                 or self.poll() is not None,
                 timeout, message="daemon start")
        if self.poll() is not None:
            raise RuntimeError(f"daemon exited early:\n{self.log().decode(errors='replace')}")

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def log(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class StaticResolver:
    """An aiohttp resolver (``aiohttp.abc.AbstractResolver``'s two methods) answering from
    ``answers`` (host -> addresses), which a test may change while it is in use, as DNS
    may. ``asked`` lists the names looked up."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[dict[str, Any]]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"{host}: name not known")
        return [{"hostname": host, "host": a, "port": port,
                 "family": socket.AF_INET6 if ":" in a else socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST} for a in self.answers[host]]

    async def close(self) -> None:
        return None
