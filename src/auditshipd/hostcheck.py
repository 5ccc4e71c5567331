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


def host_of(header: str) -> str:
    """The host part of a ``Host`` header, without port or IPv6 brackets, lower-cased."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def allowed_hosts_middleware(allowed: Iterable[str], listen_host: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware answering 421 to a request whose ``Host`` is not in ``allowed``."""
    names = {host_of(h) for h in allowed if h.strip()}
    any_ip = listen_host.strip("[]") in _WILDCARDS

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = host_of(request.headers.get("Host", ""))
        if host not in names and not (any_ip and _is_ip(host)):
            # No echo of the header: it is attacker-chosen text.
            return web.Response(status=421, text="This server does not serve that host name.\n")
        return await handler(request)

    return check_host
