"""The typed tables of the configuration file, and the conversion of a table into one.

Every table is a msgspec Struct with unknown keys forbidden, so a misspelled key is an
error naming it. What a type cannot say (ranges, address syntax, files that must exist,
the redaction policy's paths and regexes) is checked by the code that owns the setting:
sink tables in :mod:`auditshipd.config.sinks`, ``[journal]`` in
:mod:`auditshipd.config.loading`, ``[portal]`` in :mod:`auditshipd.portal.config`,
``[metrics]`` in :mod:`auditshipd.service.metrics`, ``[redaction]`` in the policy
compiler (:mod:`auditshipd.redaction.policy`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import msgspec

from ..errors import ConfigError

__all__ = [
    "DEFAULT_METRICS_LISTEN",
    "ORGANIZATION_SLUG_RE",
    "SINK_COMMON_KEYS",
    "BatchConfig",
    "ConfigFile",
    "DeadLetterConfig",
    "IntegrityConfig",
    "JournalConfig",
    "MetricsConfig",
    "PortalConfig",
    "RedactionConfig",
    "RetryConfig",
    "SinkCommon",
    "StreamFile",
    "convert_table",
    "explain",
    "parse_listen",
]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class JournalConfig(_Strict):
    # The file applications (and auditshipd's own audit events) append to.
    path: str = "var/journal/audit.jsonl"
    # Globs the reader follows; the active file and its rotated segments.
    paths: list[str] = msgspec.field(default_factory=lambda: ["var/journal/audit.jsonl*"])
    state_dir: str = "var/state"
    max_line_bytes: int = 1024 * 1024
    # Polling is the fallback when inotify is unavailable; the same code path reads.
    force_polling: bool = False
    poll_interval: float = 1.0
    read_block_bytes: int = 1024 * 1024
    # Lines the shared pass hands its sinks and holds until they are committed (batches
    # being built and in flight), for all sinks together: memory against batch size.
    pass_memory_bytes: int = 32 * 1024 * 1024
    # Seconds a drained segment that left the glob (renamed away, deleted) stays open for
    # a writer that still appends through its old descriptor.
    rotate_wait: float = 5.0
    # Read glob matches that are symbolic links (to regular files). Off: a link dropped
    # into the journal directory (-> /etc/shadow) must not be shipped or quarantined.
    follow_symlinks: bool = False

    def reader_tunables(self) -> dict[str, Any]:
        """What every journal reader takes from these settings besides the globs, by
        the name of its keyword argument and attribute (a reload sets the attributes)."""
        return {"max_line_bytes": self.max_line_bytes, "poll_interval": self.poll_interval,
                "rotate_wait": self.rotate_wait, "follow_symlinks": self.follow_symlinks}


class BatchConfig(_Strict):
    max_events: int = 1000
    max_bytes: int = 4 * 1024 * 1024
    timeout: float = 0.1


class RetryConfig(_Strict):
    initial_backoff: float = 0.2
    max_backoff: float = 30.0
    # 0 means unlimited: the journal is the buffer, a dead sink falls behind and catches up.
    max_attempts: int = 0
    max_elapsed: float = 0.0
    attempt_timeout: float = 30.0


class DeadLetterConfig(_Strict):
    max_bytes: int = 1024 * 1024 * 1024


class RedactionConfig(_Strict):
    """A redaction policy table: ``[redaction]`` or a sink's ``redaction`` table.

    The keys and their value types are fixed here; a key left out is ``None`` (inherited
    from the root policy by a sink's table, from the built-in default by the root). What
    the values mean (allowlist paths, regexes, globs, the action, the hash key, "a sink
    may only be stricter") is checked by the policy compiler, which gets :meth:`table`.
    """

    allow: list[str] | None = None
    action: str | None = None
    id_key_patterns: list[str] | None = None
    id_value_patterns: list[str] | None = None
    keep_value_patterns: list[str] | None = None
    hash_key: str | None = None
    hash_key_env: str | None = None
    allow_looser: bool | None = None

    def table(self) -> dict[str, Any]:
        """The keys that were set, as the policy compiler reads them."""
        return {k: v for k in self.__struct_fields__ if (v := getattr(self, k)) is not None}

    def __repr__(self) -> str:  # never the hash key itself
        shown = {k: ("<set>" if k == "hash_key" else v) for k, v in self.table().items()}
        return f"RedactionConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


class PortalConfig(_Strict):
    """The web portal's settings (``[portal]``)."""

    enabled: bool = False
    listen: str = "127.0.0.1:8750"
    # SQLite file of the index (empty: ``<state_dir>/portal.sqlite3``), or a PostgreSQL
    # URL (``postgresql://user:pass@host:5432/db``) shared by many hosts and replicas.
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
    # Self-service streams (docs/streams.md): host names and networks (CIDR) an
    # organization's stream may send to although they are loopback, private or link-local.
    stream_allow_hosts: list[str] = msgspec.field(default_factory=list)
    max_streams_per_organization: int = 5
    # "Send test event" answers per stream and minute.
    stream_tests_per_minute: int = 5
    # Seconds between two looks of a daemon at the store's stream definitions.
    stream_poll_interval: float = 5.0
    # A file holding the key of the streams' secrets (AUDITSHIPD_SECRETS_KEY wins).
    secrets_key_file: str | None = None

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


# The metrics endpoint's default address: when it is taken (another auditshipd on the
# host), the daemon goes on without the endpoint; an address the operator chose must work.
DEFAULT_METRICS_LISTEN = "127.0.0.1:9750"


class MetricsConfig(_Strict):
    """The Prometheus and health endpoints (``[metrics]``)."""

    enabled: bool = True
    listen: str = DEFAULT_METRICS_LISTEN
    # Seconds with events pending and no progress before /readyz reports a sink stuck.
    ready_stuck_after: float = 300.0
    # Host header values answered; others get 421 (DNS rebinding). Empty: the listen
    # address and "localhost".
    allowed_hosts: list[str] = msgspec.field(default_factory=list)

    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


class IntegrityConfig(_Strict):
    """The signing key and when digests are due (``[integrity]``); turned into
    ``IntegritySettings`` by :mod:`auditshipd.integrity.settings`."""

    # A PEM file, or the PEM itself (signing_key = "${AUDITSHIPD_SIGNING_KEY}").
    signing_key: str = ""
    digest_interval: float = 300.0
    digest_events: int = 0


class SinkCommon(_Strict):
    """The keys every ``[[sinks]]`` table may have; the others are the sink type's options."""

    name: str
    type: str
    enabled: bool = True
    concurrency: int = 1
    start_at: str = "beginning"
    organizations: list[str] | None = None
    redaction: RedactionConfig | None = None
    format: str = "native"  # native | ocsf | ecs | cef (docs/formats.md)
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    dead_letter: DeadLetterConfig = msgspec.field(default_factory=DeadLetterConfig)
    # Chain and sign what this sink delivers (docs/integrity.md); needs [integrity].
    integrity: bool = False


SINK_COMMON_KEYS = frozenset(SinkCommon.__struct_fields__)


class ConfigFile(_Strict):
    """The top level of the configuration file. ``[[sinks]]`` tables stay raw here: which
    of their keys are options depends on the sink type (:mod:`auditshipd.config.sinks`)."""

    journal: JournalConfig = msgspec.field(default_factory=JournalConfig)
    plugin_dirs: list[str] = msgspec.field(default_factory=list)
    shutdown_timeout: float = 10.0
    redaction: RedactionConfig = msgspec.field(default_factory=RedactionConfig)
    portal: PortalConfig = msgspec.field(default_factory=PortalConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    # Checked and typed by the formats package (auditshipd.formats.settings: FormatSettings).
    formats: dict[str, Any] = msgspec.field(default_factory=dict)
    integrity: IntegrityConfig = msgspec.field(default_factory=IntegrityConfig)
    # Per-organization stream files (<org-slug>.toml holding [[sinks]]), e.g. written by
    # a control plane; reloaded live like the main file.
    streams_dir: str | None = None
    config_watch: bool = True
    sinks: list[dict[str, Any]] = msgspec.field(default_factory=list)


class StreamFile(_Strict):
    """An organization's stream file: ``[[sinks]]`` tables only."""

    sinks: list[dict[str, Any]] = msgspec.field(default_factory=list)


# The organization slugs: stream file names, portal retention overrides.
ORGANIZATION_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

_LISTEN_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d+)$")


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


_AT_RE = re.compile(r" - at `\$(.*)`$")
_PART_RE = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")  # "[...]" (a mapping's key) names no part


def explain(exc: msgspec.ValidationError, where: str) -> tuple[str, str, list[str | int]]:
    """What a conversion error says, the key it names (``where`` plus the path) and that
    path as parts (``["batch", "max_events"]``, list positions as ints)."""
    msg = str(exc)
    sub = ""
    m = _AT_RE.search(msg)
    if m:
        sub = m.group(1)
        msg = msg[: m.start()]
    parts: list[str | int] = [int(i) if i else k for k, i in _PART_RE.findall(sub)]
    um = re.match(r"Object contains unknown field `(.+)`", msg)
    fm = re.match(r"Object missing required field `(.+)`", msg)
    if um or fm:
        parts.append((um or fm).group(1))  # type: ignore[union-attr]
        msg = "unknown key" if um else "missing required key"
    sub = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    key = f"{where}{sub}" if where else sub.lstrip(".")
    return _humanize(msg), key, parts


def convert_table(data: dict[str, Any], typ: type, source: str, where: str) -> Any:
    """``data`` converted to ``typ`` (a Struct); a mismatch is a ConfigError naming
    ``where`` plus the key."""
    try:
        return msgspec.convert(data, typ, str_keys=True)
    except msgspec.ValidationError as exc:
        msg, key, _ = explain(exc, where)
        raise ConfigError(msg, file=source, key=key or None) from None


def _humanize(msg: str) -> str:
    m = re.match(r"Expected `(.+)`, got `(.+)`", msg)
    if m:
        return f"wrong type: expected {m.group(1)}, got {m.group(2)}"
    return msg
