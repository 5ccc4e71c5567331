"""Real HTTP servers that speak the protocols of our sinks' receivers, for tests.

Each fake is an ``aiohttp.web`` application run in-process on a free port, records
every event it accepted (the test oracle) and can be told to fail::

    async with SplunkHecServer(token="t0k3n") as srv:
        srv.fail_next("busy", retry_after=2)      # next request: 503 code 9
        ...                                       # point a sink at srv.url
        await srv.wait_for_events(100)
        assert sorted(srv.event_ids) == sorted(ids)

``await srv.stop()`` makes the port refuse connections; ``await srv.start()`` listens
again on the same port. ``fail_next("hang")`` holds a request without answering until
the server stops or ``srv.release()`` is called.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeServer", "Failure", "RecordedRequest"]


@dataclass
class Failure:
    """A scripted failure: ``kind`` with ``params``, applied ``times`` times after
    ``after`` requests were served normally."""

    kind: str
    times: int = 1
    after: int = 0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    """What a fake saw of one request (the credential header is not kept)."""

    path: str
    headers: dict[str, str]
    wire_bytes: int
    body_bytes: int
    gzip: bool
    events: int
    status: int


class FakeServer:
    """Lifecycle, failure script and waiting shared by the fakes.

    Subclasses add routes in :meth:`routes` and call :meth:`_record_events`.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.failures_served: list[str] = []
        self._script: deque[Failure] = deque()
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()
        self._changed = asyncio.Event()
        self.hanging = 0

    # -- lifecycle --------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen (again) on ``port``; the first start picks a free port."""
        if self._runner is not None:
            return
        self._release = asyncio.Event()
        # Bodies are decoded by the fake itself, so it can tell whether gzip was used.
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.add_routes(self.routes())
        runner = web.AppRunner(app, auto_decompress=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        runner, self._runner = self._runner, None
        self._release.set()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- failure script ---------------------------------------------------------------

    def fail_next(self, kind: str, *, times: int = 1, after: int = 0, **params: Any) -> None:
        """Fail the next ``times`` requests (after ``after`` normal ones) with ``kind``."""
        self._script.append(Failure(kind, times, after, params))

    def clear_failures(self) -> None:
        self._script.clear()

    def release(self) -> None:
        """Let hanging requests finish (they answer 503)."""
        self._release.set()

    def _next_failure(self) -> Failure | None:
        if not self._script:
            return None
        head = self._script[0]
        if head.after > 0:
            head.after -= 1
            return None
        head.times -= 1
        if head.times <= 0:
            self._script.popleft()
        self.failures_served.append(head.kind)
        return head

    async def _hang(self) -> None:
        self.hanging += 1
        self._notify()
        await self._release.wait()

    # -- waiting ----------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()

    async def wait_until(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` is true (re-checked whenever the server records)."""
        async def until() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)
