"""``auditshipd check-config --check-connections``: can each sink reach its endpoint?

Nothing is sent: a URL-based sink gets a TCP connection to its host and port, with the
TLS handshake for ``https://``, ``mqtts://``, ``wss://`` and ``tls://`` (``tls_verify``
and ``ca_file`` honoured), then the connection is closed. A sink type may check itself
instead (``SinkType.check_connection``). Sinks without a network endpoint (``file``,
``stdout``, ``portal``, a cloud store on its provider's default endpoint) are skipped.
Reasons are scrubbed of the sink's secrets. A self-service stream's destination is
first checked as when it was saved: a host that now resolves to an internal address is
reported as refused, and not connected to. Its probe connects to an address its guard
passed (never to what a second, unchecked lookup answers, since DNS may change between
the two).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..config import Config, SinkConfig
from ..netguard import GuardedResolver, check_destination
from ..scrub import scrub_secrets, sink_secrets

__all__ = ["ConnectionResult", "check_connections", "endpoint_of", "probe_url"]

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "mqtt": 1883,
                 "mqtts": 8883, "nats": 4222, "tls": 4222}
TLS_SCHEMES = frozenset({"https", "wss", "mqtts", "tls"})


@dataclass
class ConnectionResult:
    sink: str
    type: str
    status: str  # "ok" | "failed" | "skipped"
    detail: str

    def __str__(self) -> str:
        return f"{self.sink} ({self.type}): {self.status}: {self.detail}"


def endpoint_of(sc: SinkConfig) -> str | None:
    """The URL a sink connects to, or None when it has no network endpoint of its own."""
    o = sc.options
    for attr in ("url", "endpoint_url", "account_url"):
        value = getattr(o, attr, None)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, str) and value:
            return value
    site = getattr(o, "site", None)
    if sc.type == "datadog" and isinstance(site, str) and site:
        return f"https://http-intake.logs.{site}"
    return None


async def probe_url(url: str, *, tls_verify: bool = True, ca_file: str | None = None,
                    timeout: float = 10.0, resolver: Any = None) -> str:
    """Connect to ``url``'s host and port (TLS handshake for TLS schemes) and close;
    what was reached, or an exception. ``resolver`` (an aiohttp resolver, a
    :class:`~auditshipd.netguard.GuardedResolver` for a self-service stream) picks the
    address connected to; without one, the system's lookup does."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    port = parts.port or DEFAULT_PORTS.get(scheme)
    if not host or not port:
        raise ValueError("the URL names no host and port")
    context = None
    if scheme in TLS_SCHEMES:
        context = ssl.create_default_context(cafile=ca_file)
        if not tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    _reader, writer = await asyncio.wait_for(_connect(host, port, context, resolver), timeout)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return f"{'TLS' if context else 'TCP'} connection to {host}:{port}"


async def _connect(host: str, port: int, context: ssl.SSLContext | None, resolver: Any
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = host
    if resolver is not None:
        address = (await resolver.resolve(host, port, socket.AF_UNSPEC))[0]["host"]
    return await asyncio.open_connection(address, port, ssl=context,
                                         server_hostname=host if context else None)


async def _check(sc: SinkConfig, timeout: float, resolver: Any = None) -> ConnectionResult:
    own = getattr(sc.sink_type, "check_connection", None)
    url = endpoint_of(sc)
    if own is None and url is None:
        return ConnectionResult(sc.name, sc.type, "skipped", "no network endpoint to check")
    o: Any = sc.options
    guard = None
    try:
        if sc.destinations is not None and url is not None:
            # A self-service stream: its destination is checked as at save time (a name
            # now resolving to an internal address is refused) before any connection,
            # and the connection goes only to an address the same check passed.
            await asyncio.wait_for(check_destination(url, sc.destinations, resolver), timeout)
            guard = GuardedResolver(sc.destinations, resolver)
        if own is not None:
            detail = await asyncio.wait_for(own(o), timeout)
        else:
            assert url is not None
            detail = await probe_url(url, tls_verify=getattr(o, "tls_verify", True),
                                     ca_file=getattr(o, "ca_file", None), timeout=timeout,
                                     resolver=guard)
    except Exception as exc:  # every failure is a report line, never a traceback
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            reason = f"no answer within {timeout:g} s"
        reason = scrub_secrets(f"{type(exc).__name__}: {reason}", sink_secrets(sc)) or ""
        return ConnectionResult(sc.name, sc.type, "failed", reason)
    finally:
        if guard is not None:
            await guard.close()
    return ConnectionResult(sc.name, sc.type, "ok", detail)


async def check_connections(config: Config, timeout: float = 10.0,
                            resolver: Any = None) -> list[ConnectionResult]:
    """One result per sink of ``config``, checked side by side. ``resolver`` (an aiohttp
    resolver) does the self-service streams' lookups (the system's by default)."""
    return list(await asyncio.gather(*(_check(sc, timeout, resolver) for sc in config.sinks)))
