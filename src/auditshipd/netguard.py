"""Where a customer-supplied destination may send: no loopback, private, link-local,
multicast or cloud-metadata address (server-side request forgery).

A stream an organization's admin defines in the portal names a URL that the daemon and
the portal then connect to from inside the operator's network. The destination is
checked when the stream is saved and again at every connection, because DNS may answer
differently between the two: :class:`GuardedResolver` is the aiohttp resolver of those
sinks' connections, so a connection only ever goes to an address that passed the check.
An IP literal never reaches a resolver (aiohttp connects to it directly), so
:func:`check_literal` refuses one when the sink is built; it cannot change afterwards.

The operator can allow named hosts and networks (``[portal] stream_allow_hosts``): a
name listed there may resolve to anything; an address inside a listed network passes.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

__all__ = [
    "BlockedDestination",
    "DestinationPolicy",
    "GuardedResolver",
    "blocked_reason",
    "check_destination",
    "check_literal",
    "destination_host",
    "is_loopback",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Named so a refusal can say which kind of address it was; anything else that is not
# globally routable is refused too (see blocked_reason).
_BLOCKED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("169.254.169.254/32", "cloud metadata"),
    ("169.254.0.0/16", "link-local"),
    ("100.64.0.0/10", "shared (carrier-grade NAT, cloud metadata)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated private)"),
    ("ff00::/8", "multicast"),
)
_NETWORKS = tuple((ipaddress.ip_network(net), kind) for net, kind in _BLOCKED)


class BlockedDestination(OSError):
    """A destination that resolves to an address streams may not send to."""


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, IPv4-compatible, 6to4, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    packed = ip.packed
    if packed[:12] == bytes(12) and ip not in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")):
        return ipaddress.IPv4Address(packed[12:])  # ::a.b.c.d (IPv4-compatible, deprecated)
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):
        return ipaddress.IPv4Address(packed[12:])
    return None


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why a stream may not connect to ``address`` (``"loopback"``, ``"private"``...), or
    None when it is a public address."""
    ip = ipaddress.ip_address(str(address).split("%", 1)[0]) if isinstance(address, str) else address
    inner = _embedded_v4(ip)
    if inner is not None:
        reason = blocked_reason(inner)
        return f"{reason} (inside an IPv6 address)" if reason else None
    for net, kind in _NETWORKS:
        if ip.version == net.version and ip in net:
            return kind
    if not ip.is_global or ip.is_reserved or ip.is_multicast:
        return "not globally routable"
    return None


def _client_host(name: str) -> str:
    """A host name as the HTTP client sends and resolves it (IDNA-encoded: an allowed
    ``bücher.de`` is ``xn--bcher-kva.de`` at connection time)."""
    return URL.build(scheme="http", host=name).raw_host or name


@dataclass(frozen=True)
class DestinationPolicy:
    """The operator's exceptions: host names allowed whatever they resolve to, and
    networks whose addresses are allowed (``[portal] stream_allow_hosts``)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())

    @classmethod
    def parse(cls, entries: Iterable[str]) -> DestinationPolicy:
        """From a list of host names, addresses and CIDR networks; ValueError names a
        bad entry."""
        hosts, networks = set(), []
        for entry in entries:
            text = str(entry).strip().lower().rstrip(".")
            if not text:
                raise ValueError("an empty entry")
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                if "/" in text or ":" in text:
                    raise ValueError(f"{entry!r} is neither a host name nor a network") from None
            try:
                hosts.add(_client_host(text))
            except (ValueError, UnicodeError) as exc:
                raise ValueError(f"{entry!r} is not a host name ({exc})") from None
        return cls(frozenset(hosts), tuple(networks))

    def allows_name(self, host: str) -> bool:
        name = host.strip("[]").lower().rstrip(".")
        try:
            return _client_host(name) in self.hosts
        except (ValueError, UnicodeError):
            return name in self.hosts

    def refusal(self, host: str, address: str) -> str | None:
        """Why ``host`` may not be reached at ``address``, or None."""
        if self.allows_name(host):
            return None
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip.version == n.version and ip in n for n in self.networks):
            return None
        reason = blocked_reason(ip)
        if reason is None:
            return None
        what = host if host == address else f"{host} resolves to {address}, which"
        return (f"{what} is a {reason} address: streams may not send there"
                " (an operator can allow it in [portal] stream_allow_hosts)")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def check_literal(host: str, policy: DestinationPolicy) -> None:
    """Refuse an IP literal destination that the policy does not allow (a host name is
    checked when it is resolved)."""
    ip = _literal(host)
    if ip is not None:
        problem = policy.refusal(str(ip), str(ip))
        if problem is not None:
            raise BlockedDestination(problem)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that answers only with addresses the policy allows: when a
    name resolves to any refused address, the connection fails with the reason
    (:class:`BlockedDestination`), before a byte is sent. ``inner`` does the resolving
    (the system's by default; tests inject one)."""

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner
        self._own = inner is None

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        check_literal(host, self.policy)
        answers = await self._inner.resolve(host, port, family)
        if not answers:
            raise BlockedDestination(f"{host} does not resolve to any address")
        for answer in answers:
            problem = self.policy.refusal(host, answer["host"])
            if problem is not None:
                raise BlockedDestination(problem)
        return answers

    async def close(self) -> None:
        if self._own and self._inner is not None:
            await self._inner.close()
            self._inner = None


def is_loopback(host: str | None) -> bool:
    """``host`` (an address or ``localhost``) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def destination_host(url: str | None) -> tuple[str, int] | None:
    """(host, port) of a destination URL, or None when it has no host. The host is the
    one the HTTP client connects to (yarl's, IDNA-mapped): 127.0.0.1 written with
    ideographic full stops or fullwidth digits is that address to the client, which
    connects to it without a lookup, so it is checked as that address, not as a name."""
    if not url:
        return None
    try:
        parts = URL(url)
        host = parts.raw_host
        port = parts.explicit_port or (443 if parts.scheme == "https" else 80)
    except (ValueError, UnicodeError):
        return None
    return (host, port) if host else None


async def check_destination(url: str, policy: DestinationPolicy,
                            inner: AbstractResolver | None = None) -> None:
    """Raise :class:`BlockedDestination` when ``url``'s host is, or resolves to, a
    refused address (or does not resolve): the check made when a stream is saved."""
    where = destination_host(url)
    if where is None:
        raise BlockedDestination("the destination has no host")
    host, port = where
    check_literal(host, policy)
    if _literal(host) is not None or policy.allows_name(host):
        return
    resolver = GuardedResolver(policy, inner)
    try:
        await resolver.resolve(host, port, socket.AF_UNSPEC)
    except BlockedDestination:
        raise
    except UnicodeError:  # a label over 63 characters, an empty one (IDNA encoding)
        raise BlockedDestination(f"{host} is not a valid host name") from None
    except OSError as exc:
        raise BlockedDestination(f"{host} does not resolve: {exc.strerror or exc}") from None
    finally:
        await resolver.close()

