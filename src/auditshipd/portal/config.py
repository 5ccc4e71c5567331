"""The ``[portal]`` table's values checked, its defaults resolved.

``Config.portal`` arrives typed (:class:`~auditshipd.config.PortalConfig`, keys and
types checked when the file loads); :func:`portal_config` checks what a type cannot say
and reports it as :class:`~auditshipd.errors.ConfigError` naming ``portal.<key>``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec

from ..config.tables import (
    ORGANIZATION_SLUG_RE,
    PortalConfig,
    parse_listen,
)
from ..errors import ConfigError, ConfigErrors
from ..netguard import DestinationPolicy
from .pg_errors import url_problem

__all__ = [
    "ORGANIZATION_SLUG_RE",
    "PortalConfig",
    "check_database",
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


_POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(database: str) -> bool:
    """Whether ``[portal] database`` names a PostgreSQL server rather than a SQLite file
    (the scheme in any case: ``PostgreSQL://`` too)."""
    scheme, sep, _ = database.partition("://")
    return bool(sep) and scheme.lower() in _POSTGRES_SCHEMES


def check_database(database: str) -> tuple[str, str | None]:
    """``database`` with a PostgreSQL URL's scheme in lowercase (as libpq wants it), and
    what is wrong with it (None: nothing). Any other ``scheme://`` is refused rather than
    taken for a SQLite file name; the message names the scheme only, never the URL (it
    may hold a password). A PostgreSQL URL must split the same way for every reader
    (:func:`~auditshipd.portal.pg_errors.url_problem`): the message is then a fixed
    sentence, since a parser's own would quote the piece of the password it tripped on."""
    scheme, sep, rest = database.partition("://")
    if not sep:
        return database, None
    if not is_postgres_url(database):
        return database, (f"a {scheme!r} URL is not a database auditshipd can use: give a"
                          " SQLite file path or a postgresql:// URL")
    database = f"{scheme.lower()}://{rest}"
    return database, url_problem(database)


def _positive_seconds(value: float) -> bool:
    return math.isfinite(value) and value > 0


def portal_config(config: Any) -> PortalConfig:
    """``config.portal`` checked, with its defaults filled in from ``config`` (a copy:
    ``config`` stays as loaded). Every problem is raised at once
    (:class:`~auditshipd.errors.ConfigErrors` when more than one)."""
    pc = msgspec.structs.replace(getattr(config, "portal", None) or PortalConfig())
    source = getattr(config, "source", None)
    errors: list[ConfigError] = []

    def bad(key: str, msg: str) -> None:
        errors.append(ConfigError(msg, file=source, key=f"portal.{key}"))

    try:
        parse_listen(pc.listen)
    except ValueError as exc:
        bad("listen", str(exc))
    if pc.retention_days < 0:
        bad("retention_days", "must be 0 (keep forever) or a number of days")
    problem = check_organization_retention(pc.organization_retention_days)
    if problem is not None:
        slug, reason = problem
        # The slug is a config key, not a secret: naming it says which entry to fix.
        bad(f"organization_retention_days.{slug}", reason)
    for key in ("purge_interval", "stream_poll_interval", "session_ttl"):
        if not _positive_seconds(getattr(pc, key)):
            bad(key, "must be a positive (finite) number of seconds")
    try:
        DestinationPolicy.parse(pc.stream_allow_hosts)
    except ValueError as exc:
        bad("stream_allow_hosts", f"{exc}: list host names, addresses and networks (CIDR)")
    if pc.max_streams_per_organization < 0:
        bad("max_streams_per_organization", "must be 0 (no self-service streams) or more")
    if pc.stream_tests_per_minute < 1:
        bad("stream_tests_per_minute", "must be at least 1")
    if bool(pc.tls_cert) != bool(pc.tls_key):
        bad("tls_key" if pc.tls_cert else "tls_cert", "tls_cert and tls_key must be given together")
    for key in ("tls_cert", "tls_key"):
        value = getattr(pc, key)
        if value and not Path(value).is_file():
            bad(key, "file not found")
    pc.database, problem = check_database(pc.database)
    if problem is not None:
        bad("database", problem)
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    if not pc.database:
        state_dir = Path(getattr(config, "state_dir", "var/state"))
        pc.database = str(state_dir / "portal.sqlite3")
    return pc
