"""Which failures the portal answers with 503 (the store's server unreachable or not
serving now) rather than 500."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from auditshipd.portal.outage import store_unreachable


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5432)"),
    socket.gaierror(-2, "Name or service not known"),
    TimeoutError(),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection"),
    asyncpg.exceptions.InvalidAuthorizationSpecificationError("role may not log in"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.InterfaceError("cannot perform operation: connection is closed"),
])
def test_the_servers_conditions_are_an_outage(exc: BaseException) -> None:
    assert store_unreachable(exc)


@pytest.mark.parametrize("exc", [
    ValueError("bad filter"),
    OSError(28, "No space left on device"),
    ConnectionResetError(104, "client went away"),
    asyncpg.exceptions.UndefinedColumnError("column does not exist"),
    asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is in progress"),
    KeyError("x"),
])
def test_other_failures_are_not(exc: BaseException) -> None:
    assert not store_unreachable(exc)


async def _serve(handler) -> tuple[object, str]:  # type: ignore[no-untyped-def]
    from aiohttp import web

    from auditshipd.portal.outage import StoreOutage
    from auditshipd.testing import free_port

    app = web.Application(middlewares=[StoreOutage().middleware])
    app.router.add_get("/api/x", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/api/x"


async def test_an_outage_before_the_answer_is_a_503_and_during_a_stream_cuts_it() -> None:
    """Before anything is sent: 503 with Retry-After. In the middle of a streamed answer
    (an export): the stream is cut short, as without the middleware, never followed by
    a second answer written into its body."""
    import aiohttp
    from aiohttp import web

    async def refused(request: web.Request) -> web.StreamResponse:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"id": "e1"}\n')
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    runner, url = await _serve(refused)
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "5"
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
    runner, url = await _serve(streamed)
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
