"""Answering only requests addressed to us: the ``Host`` header check of the portal and
of the metrics endpoints, against DNS rebinding.

A page on ``evil.example`` whose name is made to resolve to 127.0.0.1 can make the
browser send requests to a local port; the browser then sends ``Host: evil.example``.
Refusing every Host that is not one of ours closes that door. An IP literal cannot be
rebound, so when the server listens on a wildcard address (``0.0.0.0``, ``::``) any IP
literal is accepted besides the names configured.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

__all__ = ["allowed_hosts_middleware", "default_allowed_hosts", "host_of"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_WILDCARDS = {"0.0.0.0", "::", ""}


def default_allowed_hosts(listen_host: str) -> list[str]:
    """The listen address and ``localhost``."""
    return [listen_host.strip("[]").lower(), "localhost"]


def _is_port(text: str) -> bool:
    """``:`` and digits, or nothing (an empty port is allowed by RFC 3986)."""
    port = text[1:]
    return not text or (text[0] == ":" and (not port or (port.isascii() and port.isdigit())))


def host_of(header: str) -> str:
    """The host part of a ``Host`` header, without port or IPv6 brackets, lower-cased;
    empty (so never allowed) when what follows the host is not a port."""
    text = header.strip().lower()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        return host if bracket and _is_port(rest) else ""
    if text.count(":") == 1:
        text, port = text.split(":", 1)
        if not _is_port(":" + port):
            return ""
    return text.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def allowed_hosts_middleware(allowed: Iterable[str], listen_host: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware answering 421 to a request whose ``Host`` is not in ``allowed``."""
    names = {host_of(h) for h in allowed if h.strip()} - {""}
    any_ip = listen_host.strip("[]") in _WILDCARDS

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = host_of(request.headers.get("Host", ""))
        if host not in names and not (any_ip and _is_ip(host)):
            # No echo of the header: it is attacker-chosen text.
            return web.Response(status=421, text="This server does not serve that host name.\n")
        return await handler(request)

    return check_host
