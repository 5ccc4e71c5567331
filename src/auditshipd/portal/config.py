"""The ``[portal]`` table's values checked, its defaults resolved.

``Config.portal`` arrives typed (:class:`~auditshipd.config.PortalConfig`, keys and
types checked when the file loads); :func:`portal_config` checks what a type cannot say
and reports it as :class:`~auditshipd.errors.ConfigError` naming ``portal.<key>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ..config.tables import (
    ORGANIZATION_SLUG_RE,
    PortalConfig,
    parse_listen,
)
from ..errors import ConfigError
from ..netguard import DestinationPolicy

__all__ = [
    "ORGANIZATION_SLUG_RE",
    "PortalConfig",
    "check_organization_retention",
    "is_postgres_url",
    "parse_listen",
    "portal_config",
]

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


def is_postgres_url(database: str) -> bool:
    """Whether ``[portal] database`` names a PostgreSQL server rather than a SQLite file."""
    return database.startswith(("postgresql://", "postgres://"))


def portal_config(config: Any) -> PortalConfig:
    """``config.portal`` checked, with its defaults filled in from ``config`` (a copy:
    ``config`` stays as loaded)."""
    pc = msgspec.structs.replace(getattr(config, "portal", None) or PortalConfig())
    source = getattr(config, "source", None)

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
    try:
        DestinationPolicy.parse(pc.stream_allow_hosts)
    except ValueError as exc:
        raise bad("stream_allow_hosts", f"{exc}: list host names, addresses and networks"
                                        " (CIDR)") from None
    if pc.max_streams_per_organization < 0:
        raise bad("max_streams_per_organization", "must be 0 (no self-service streams) or more")
    if pc.stream_tests_per_minute < 1:
        raise bad("stream_tests_per_minute", "must be at least 1")
    if pc.stream_poll_interval <= 0:
        raise bad("stream_poll_interval", "must be a positive number of seconds")
    if pc.session_ttl <= 0:
        raise bad("session_ttl", "must be a positive number of seconds")
    if bool(pc.tls_cert) != bool(pc.tls_key):
        missing = "tls_key" if pc.tls_cert else "tls_cert"
        raise bad(missing, "tls_cert and tls_key must be given together")
    for key in ("tls_cert", "tls_key"):
        value = getattr(pc, key)
        if value and not Path(value).is_file():
            raise bad(key, "file not found")
    if is_postgres_url(pc.database):
        try:
            urlsplit(pc.database).port  # noqa: B018 - raises for a port that is no number
        except ValueError as exc:
            raise bad("database", f"not a valid PostgreSQL URL: {exc}") from None
    if not pc.database:
        state_dir = Path(getattr(config, "state_dir", "var/state"))
        pc.database = str(state_dir / "portal.sqlite3")
    return pc

