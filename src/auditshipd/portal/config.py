"""The ``[portal]`` table: validated into a :class:`PortalConfig`.

``Config.portal`` arrives as a raw dict; :func:`portal_config` converts it and reports
problems as :class:`~auditshipd.errors.ConfigError` naming ``portal.<key>``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import msgspec

from ..errors import ConfigError

__all__ = [
    "ORGANIZATION_SLUG_RE",
    "PortalConfig",
    "check_organization_retention",
    "parse_listen",
    "portal_config",
]

DEFAULT_LISTEN = "127.0.0.1:8750"


class PortalConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The web portal's settings (``[portal]`` in the TOML file)."""

    enabled: bool = False
    listen: str = DEFAULT_LISTEN
    # SQLite file of the index; empty means ``<state_dir>/portal.sqlite3``.
    database: str = ""
    # 0 keeps events forever.
    retention_days: int = 365
    # Per-organization overrides of retention_days: ``{ acme = 30, globex = 730 }``.
    organization_retention_days: dict[str, int] = msgspec.field(default_factory=dict)
    purge_interval: float = 3600.0
    tls_cert: str | None = None
    tls_key: str | None = None
    session_ttl: float = 8 * 3600.0
    # Host header values answered (names or addresses, no port); others get 421, against
    # DNS rebinding. Empty: the listen address and "localhost".
    allowed_hosts: list[str] = msgspec.field(default_factory=list)

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


_LISTEN_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})$")


# The organization slugs a stream file may be named after (see auditshipd.config.loading).
ORGANIZATION_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_organization_retention(table: dict[str, int]) -> tuple[str, str] | None:
    """``(slug, reason)`` of the first bad entry of an ``organization_retention_days``
    table, or None when every key is a lowercase slug and every value whole days >= 0."""
    for slug, days in table.items():
        if not ORGANIZATION_SLUG_RE.match(slug):
            return slug, ("organization slugs are lowercase letters, digits, '-' and '_'"
                          " (1-63 characters)")
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            return slug, "must be 0 (keep forever) or a number of days"
    return None


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; ValueError when malformed."""
    m = _LISTEN_RE.match(listen)
    if not m:
        raise ValueError("must be \"host:port\" (IPv6 as \"[::1]:port\")")
    port = int(m.group("port"))
    if port > 65535:
        raise ValueError("port must be between 0 and 65535")
    host = m.group("v6") or m.group("host")
    if m.group("v6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("invalid IPv6 address") from None
    return host, port


def portal_config(config: Any) -> PortalConfig:
    """Validate ``config.portal`` (a raw dict) and fill in defaults from ``config``."""
    raw = dict(getattr(config, "portal", None) or {})
    source = getattr(config, "source", None)
    try:
        pc = msgspec.convert(raw, PortalConfig, str_keys=True)
    except msgspec.ValidationError as exc:
        reason, key = _describe(str(exc))
        raise ConfigError(reason, file=source, key=key) from None

    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(msg, file=source, key=f"portal.{key}")

    try:
        parse_listen(pc.listen)
    except ValueError as exc:
        raise bad("listen", str(exc)) from None
    if pc.retention_days < 0:
        raise bad("retention_days", "must be 0 (keep forever) or a number of days")
    problem = check_organization_retention(pc.organization_retention_days)
    if problem is not None:
        slug, reason = problem
        # The slug is a config key, not a secret: naming it says which entry to fix.
        raise bad(f"organization_retention_days.{slug}", reason)
    if pc.purge_interval <= 0:
        raise bad("purge_interval", "must be a positive number of seconds")
    if pc.session_ttl <= 0:
        raise bad("session_ttl", "must be a positive number of seconds")
    if bool(pc.tls_cert) != bool(pc.tls_key):
        missing = "tls_key" if pc.tls_cert else "tls_cert"
        raise bad(missing, "tls_cert and tls_key must be given together")
    for key in ("tls_cert", "tls_key"):
        value = getattr(pc, key)
        if value and not Path(value).is_file():
            raise bad(key, "file not found")
    if not pc.database:
        state_dir = Path(getattr(config, "state_dir", "var/state"))
        pc.database = str(state_dir / "portal.sqlite3")
    return pc


def _describe(msg: str) -> tuple[str, str]:
    """msgspec's message -> (reason, ``portal.<key>``)."""
    key = ""
    m = re.search(r" - at `\$\.?(.*)`$", msg)
    if m:
        key = m.group(1)
        msg = msg[: m.start()]
    um = re.match(r"Object contains unknown field `(.+)`", msg)
    if um:
        key, msg = um.group(1), "unknown key (known: " + ", ".join(PortalConfig.__struct_fields__) + ")"
    tm = re.match(r"Expected `(.+)`, got `(.+)`", msg)
    if tm:
        msg = f"wrong type: expected {tm.group(1)}, got {tm.group(2)}"
    return msg, f"portal.{key}" if key else "portal"
