"""Load, interpolate and validate the TOML configuration.

Errors are :class:`~auditshipd.errors.ConfigError` naming the file and the key
(``sinks[1].batch.max_events``) and saying what is wrong. Values are never echoed in
messages, so a mistyped secret does not end up in a log.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from ..errors import ConfigError
from ..formats.settings import FormatSettings, check_sink_format, parse_formats
from ..plugin import SinkType
from .options import first_unknown_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "BatchConfig",
    "Config",
    "DeadLetterConfig",
    "JournalConfig",
    "RetryConfig",
    "SinkConfig",
    "default_config_text",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_NAME = "<embedded default>"


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
    # Seconds a drained segment that left the glob (renamed away, deleted) stays open for
    # a writer that still appends through its old descriptor.
    rotate_wait: float = 5.0
    # Read glob matches that are symbolic links (to regular files). Off: a link dropped
    # into the journal directory (-> /etc/shadow) must not be shipped or quarantined.
    follow_symlinks: bool = False


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


class _SinkCommon(_Strict):
    name: str
    type: str
    enabled: bool = True
    concurrency: int = 1
    start_at: str = "beginning"
    organizations: list[str] | None = None
    redaction: dict[str, Any] | None = None
    format: str = "native"  # native | ocsf | ecs | cef (docs/formats.md)
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    dead_letter: DeadLetterConfig = msgspec.field(default_factory=DeadLetterConfig)
    # Chain and sign what this sink delivers (docs/integrity.md); needs [integrity].
    integrity: bool = False


_COMMON_KEYS = frozenset(_SinkCommon.__struct_fields__)


class _Root(_Strict):
    journal: JournalConfig = msgspec.field(default_factory=JournalConfig)
    plugin_dirs: list[str] = msgspec.field(default_factory=list)
    shutdown_timeout: float = 10.0
    redaction: dict[str, Any] = msgspec.field(default_factory=dict)
    portal: dict[str, Any] = msgspec.field(default_factory=dict)
    metrics: dict[str, Any] = msgspec.field(default_factory=dict)
    formats: dict[str, Any] = msgspec.field(default_factory=dict)
    integrity: dict[str, Any] = msgspec.field(default_factory=dict)
    # Per-organization stream files (<org-slug>.toml holding [[sinks]]), e.g. written by
    # a control plane; reloaded live like the main file.
    streams_dir: str | None = None
    config_watch: bool = True
    sinks: list[dict[str, Any]] = msgspec.field(default_factory=list)


class _StreamFile(_Strict):
    sinks: list[dict[str, Any]] = msgspec.field(default_factory=list)


@dataclass
class SinkConfig:
    name: str
    type: str
    options: Any
    enabled: bool
    concurrency: int
    start_at: str
    organizations: list[str] | None
    redaction: dict[str, Any] | None
    batch: BatchConfig
    retry: RetryConfig
    dead_letter: DeadLetterConfig
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    sink_type: SinkType | None = field(repr=False, default=None)
    # The organization whose stream file defined this sink (None: the main config).
    stream_org: str | None = None
    source: str = ""
    format: str = "native"
    integrity: bool = False


@dataclass
class Config:
    source: str
    journal: JournalConfig
    plugin_dirs: list[str]
    shutdown_timeout: float
    redaction: dict[str, Any]
    portal: dict[str, Any]
    metrics: dict[str, Any]
    sinks: list[SinkConfig]
    streams_dir: str | None = None
    config_watch: bool = True
    # Stream files that failed to load, by organization: that organization keeps the
    # sinks it had (an invalid file affects only its own organization).
    stream_errors: dict[str, ConfigError] = field(default_factory=dict)
    formats: FormatSettings = field(default_factory=FormatSettings)
    # The [integrity] signing key and digest policy (integrity.settings), when configured.
    integrity: Any = None

    @property
    def state_dir(self) -> Path:
        return Path(self.journal.state_dir)

    def sink(self, name: str) -> SinkConfig:
        for s in self.sinks:
            if s.name == name:
                return s
        raise KeyError(name)


def default_config_text() -> str:
    return resources.files("auditshipd").joinpath("default.toml").read_text("utf-8")


def load_config(path: str | Path | None, sink_types: dict[str, SinkType] | None = None) -> Config:
    """Read ``path`` (or the embedded default when ``None``) and validate it."""
    if path is None:
        return parse_config(default_config_text(), DEFAULT_CONFIG_NAME, sink_types)
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(p)) from None
    return parse_config(text, str(p), sink_types)


def parse_config(
    text: str, source: str = "<string>", sink_types: dict[str, SinkType] | None = None
) -> Config:
    """Parse TOML text. With ``sink_types``, type-specific sink keys are validated too."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=source) from None
    data = _interpolate(data, source, "")
    root = convert_table(data, _Root, source, "")
    _check_journal(root.journal, source)
    sinks: list[SinkConfig] = []
    seen: set[str] = set()
    for i, table in enumerate(root.sinks):
        sc = _sink_config(table, i, source, sink_types)
        if sc.name in seen:
            raise ConfigError(f"duplicate sink name {sc.name!r}", file=source, key=f"sinks[{i}].name")
        seen.add(sc.name)
        sinks.append(sc)
    config = Config(
        source=source,
        journal=root.journal,
        plugin_dirs=root.plugin_dirs,
        shutdown_timeout=root.shutdown_timeout,
        redaction=root.redaction,
        portal=root.portal,
        metrics=root.metrics,
        sinks=sinks,
        streams_dir=root.streams_dir,
        config_watch=root.config_watch,
        formats=parse_formats(root.formats, source),
    )
    if root.integrity or any(sc.integrity for sc in sinks):
        from ..integrity.settings import integrity_settings

        config.integrity = integrity_settings(
            root.integrity, source, next((sc.name for sc in sinks if sc.integrity), None))
    for sc in sinks:
        sc.source = source
    if root.streams_dir and sink_types is not None:
        _load_stream_files(config, sink_types)
    return config


_ORG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _load_stream_files(config: Config, sink_types: dict[str, SinkType]) -> None:
    """Add the sinks of every ``<org>.toml`` in ``streams_dir``, scoped to that org."""
    d = Path(config.streams_dir or "")
    if not d.is_dir():
        raise ConfigError("directory does not exist", file=config.source, key="streams_dir")
    names = {s.name for s in config.sinks}
    for path in sorted(d.glob("*.toml")):
        org = path.stem
        try:
            sinks = parse_stream_file(path, org, sink_types)
            for sc in sinks:
                if sc.name in names:
                    raise ConfigError(f"duplicate sink name {sc.name!r}", file=str(path),
                                      key="sinks.name")
                if sc.integrity and config.integrity is None:
                    raise ConfigError(f"integrity = true needs [integrity] signing_key in"
                                      f" {config.source}", file=str(path), key="sinks.integrity")
        except ConfigError as exc:
            config.stream_errors[org] = exc
            continue
        names.update(sc.name for sc in sinks)
        config.sinks.extend(sinks)


def parse_stream_file(path: Path, org: str, sink_types: dict[str, SinkType]) -> list[SinkConfig]:
    """The sinks of one organization's stream file. Their scope is that organization,
    always: a file cannot widen it. Sink names become ``<org>.<name>``."""
    source = str(path)
    if not _ORG_RE.match(org):
        raise ConfigError("file name must be <organization-slug>.toml (lowercase letters,"
                          " digits, '-', '_')", file=source)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=source) from None
    data = _interpolate(data, source, "")
    stream = convert_table(data, _StreamFile, source, "")
    out = []
    for i, table in enumerate(stream.sinks):
        scope = table.get("organizations") if isinstance(table, dict) else None
        if scope is not None and scope != [org]:
            raise ConfigError(f"a stream file can only scope its own organization [{org!r}]",
                              file=source, key=f"sinks[{i}].organizations")
        if isinstance(table, dict):
            table = {**table, "organizations": [org]}
            if isinstance(table.get("name"), str):
                table["name"] = f"{org}.{table['name']}"
        sc = _sink_config(table, i, source, sink_types)
        sc.stream_org = org
        sc.source = source
        out.append(sc)
    return out


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _sink_config(
    table: dict[str, Any], index: int, source: str, sink_types: dict[str, SinkType] | None
) -> SinkConfig:
    where = f"sinks[{index}]"
    if not isinstance(table, dict):
        raise ConfigError("must be a table ([[sinks]])", file=source, key=where)
    common = {k: v for k, v in table.items() if k in _COMMON_KEYS}
    specific = {k: v for k, v in table.items() if k not in _COMMON_KEYS}
    for required in ("name", "type"):
        if required not in common:
            raise ConfigError("missing required key", file=source, key=f"{where}.{required}")
    c = convert_table(common, _SinkCommon, source, where)
    if not _NAME_RE.match(c.name):
        raise ConfigError(
            "sink name must be 1-64 characters of letters, digits, '_', '-', '.'",
            file=source, key=f"{where}.name",
        )
    where = f"sinks[{index}] ({c.name})"
    for key, ok in (
        ("concurrency", c.concurrency >= 1),
        ("batch.max_events", c.batch.max_events >= 1),
        ("batch.max_bytes", c.batch.max_bytes >= 1),
        ("batch.timeout", c.batch.timeout >= 0),
        ("retry.initial_backoff", c.retry.initial_backoff > 0),
        ("retry.max_backoff", c.retry.max_backoff >= c.retry.initial_backoff),
        ("retry.max_attempts", c.retry.max_attempts >= 0),
        ("retry.max_elapsed", c.retry.max_elapsed >= 0),
        ("retry.attempt_timeout", c.retry.attempt_timeout > 0),
        ("dead_letter.max_bytes", c.dead_letter.max_bytes >= 1),
    ):
        if not ok:
            raise ConfigError("value out of range", file=source, key=f"{where}.{key}")
    if c.start_at not in ("beginning", "end") and not _RFC3339_RE.match(c.start_at):
        raise ConfigError(
            "must be \"beginning\", \"end\" or an RFC 3339 time", file=source, key=f"{where}.start_at"
        )
    options: Any = specific
    st = None
    if sink_types is not None:
        st = sink_types.get(c.type)
        if st is None:
            known = ", ".join(sorted(sink_types)) or "none"
            raise ConfigError(
                f"unknown sink type {c.type!r} (known: {known})", file=source, key=f"{where}.type"
            )
        # Checked here, not left to the plugin's Struct flags: a typo is an error
        # for every sink type, built-in or drop-in.
        unknown = first_unknown_key(specific, st.options)
        if unknown:
            raise ConfigError("unknown key", file=source, key=f"{where}.{unknown}")
        options = convert_table(specific, st.options, source, where)
        if st.validate is not None:
            try:
                st.validate(options)
            except ConfigError as exc:
                key = f"{where}.{exc.key}" if exc.key else where
                raise ConfigError(exc.reason, file=source, key=key) from None
    problem = check_sink_format(c.format, c.type, options)
    if problem is None and c.integrity and c.format == "cef":  # sealing adds a JSON member
        problem = "CEF lines are text, not JSON objects: integrity = true needs native, ocsf or ecs"
    if problem is not None:
        raise ConfigError(problem, file=source, key=f"{where}.format")
    return SinkConfig(
        name=c.name, type=c.type, options=options, enabled=c.enabled, concurrency=c.concurrency,
        start_at=c.start_at, organizations=c.organizations, redaction=c.redaction, batch=c.batch,
        retry=c.retry, dead_letter=c.dead_letter, raw=table, sink_type=st, format=c.format,
        integrity=c.integrity,
    )


def _check_journal(j: JournalConfig, source: str) -> None:
    if not j.paths:
        raise ConfigError("at least one journal path (glob) is required", file=source, key="journal.paths")
    if j.max_line_bytes < 64:
        raise ConfigError("must be at least 64", file=source, key="journal.max_line_bytes")
    if j.poll_interval <= 0:
        raise ConfigError("must be positive", file=source, key="journal.poll_interval")
    if j.read_block_bytes < 4096:
        raise ConfigError("must be at least 4096", file=source, key="journal.read_block_bytes")
    if j.rotate_wait < 0:
        raise ConfigError("must be zero or more (seconds)", file=source, key="journal.rotate_wait")


_AT_RE = re.compile(r" - at `\$(.*)`$")


def convert_table(data: dict[str, Any], typ: type, source: str, where: str) -> Any:
    """``data`` converted to ``typ`` (a Struct); a mismatch is a ConfigError naming
    ``where`` plus the key."""
    try:
        return msgspec.convert(data, typ, str_keys=True)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        sub = ""
        m = _AT_RE.search(msg)
        if m:
            sub = m.group(1).lstrip(".")
            msg = msg[: m.start()]
        um = re.match(r"Object contains unknown field `(.+)`", msg)
        if um:
            sub = f"{sub}.{um.group(1)}" if sub else um.group(1)
            msg = "unknown key"
        fm = re.match(r"Object missing required field `(.+)`", msg)
        if fm:
            sub = f"{sub}.{fm.group(1)}" if sub else fm.group(1)
            msg = "missing required key"
        key = ".".join(p for p in (where, sub) if p).replace(".[", "[")
        raise ConfigError(_humanize(msg), file=source, key=key or None) from None


def _humanize(msg: str) -> str:
    m = re.match(r"Expected `(.+)`, got `(.+)`", msg)
    if m:
        return f"wrong type: expected {m.group(1)}, got {m.group(2)}"
    return msg


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, source: str, key: str) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; ``$${`` escapes."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                f"environment variable {name} is not set", file=source, key=key or None
            )

        parts = value.split("$${")
        return "${".join(_ENV_RE.sub(sub, p) for p in parts)
    if isinstance(value, dict):
        return {
            k: _interpolate(v, source, f"{key}.{k}" if key else k) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    return value
