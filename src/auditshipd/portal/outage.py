"""A portal whose store cannot be reached (the database server down, restarting, refusing
logins) answers ``503 Service Unavailable`` with ``Retry-After``, not a 500 with a
traceback: a load balancer in front of several replicas retries or takes the replica out,
a script knows to try again, and the log says once what is wrong and once when it is
over. Any other error stays a 500."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .pg_errors import describe, retry_kind

__all__ = ["RETRY_AFTER", "StoreOutage", "store_unreachable"]

log = logging.getLogger("auditshipd.portal")

RETRY_AFTER = 5  # seconds
MESSAGE = "the portal's store cannot be reached at the moment; try again in a few seconds"
_PAGE = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Audit log"
         " unavailable</title></head><body><h1>Audit log unavailable</h1><p>{}.</p></body>"
         "</html>")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def store_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store's server cannot be reached or will not serve now
    (a condition of the server that passes), rather than a fault of the request."""
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror, TimeoutError)):
        return True
    if type(exc) is OSError and "Connect call failed" in str(exc):  # every address refused
        return True
    if type(exc).__module__.startswith("asyncpg") and (
            type(exc).__name__ == "InternalClientError"  # a pooled connection the server ended
            or (type(exc).__name__ == "InterfaceError" and "closed" in str(exc))):
        return True
    return retry_kind(getattr(exc, "sqlstate", None)) == "unavailable"


class StoreOutage:
    """The middleware: ``503`` for a request the store's outage failed. Logged when the
    outage starts (or its cause changes) and when a request succeeds again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.cause: str | None = None
        self.since = 0.0

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            if not store_unreachable(exc) or _started(request):
                raise  # another failure; or a streamed answer cut short (nothing to add)
            cause = describe(exc)
            if cause != self.cause:
                log.warning("portal store unavailable (%s %s answered 503): %s",
                            request.method, request.path, cause)
                if self.cause is None:
                    self.since = self.clock()
                self.cause = cause
            return _unavailable(request)
        if self.cause is not None:
            log.warning("portal store reachable again after %.0fs", self.clock() - self.since)
            self.cause = None
        return response


def _started(request: web.Request) -> bool:
    """Whether the handler already sent part of its answer (a streamed export): a second
    answer written after it would corrupt the first."""
    writer = request.writer
    return writer is not None and writer.output_size > 0


def _unavailable(request: web.Request) -> web.Response:
    headers = {"Retry-After": str(RETRY_AFTER)}
    if request.path.startswith("/api/"):
        return web.json_response({"error": MESSAGE}, status=503, headers=headers)
    return web.Response(status=503, text=_PAGE.format(MESSAGE), content_type="text/html",
                        headers=headers)
