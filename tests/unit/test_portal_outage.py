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
