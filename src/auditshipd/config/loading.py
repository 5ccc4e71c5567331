"""The configuration file -> :class:`Config`: read, expand ``${ENV}``, convert the typed
tables, check them, build the sinks, add the stream files' sinks.

Errors are :class:`~auditshipd.errors.ConfigError` naming the file and the key
(``sinks[1].batch.max_events``) and saying what is wrong. Values are never echoed in
messages, so a mistyped secret does not end up in a log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..formats.settings import FormatSettings, parse_formats
from ..plugin import SinkType
from .env import load_document
from .sinks import SinkConfig, sink_config
from .streams import load_stream_files
from .tables import (
    ConfigFile,
    IntegrityConfig,
    JournalConfig,
    MetricsConfig,
    PortalConfig,
    RedactionConfig,
    convert_table,
)

__all__ = ["Config", "default_config_text", "load_config", "parse_config"]

DEFAULT_CONFIG_NAME = "<embedded default>"


@dataclass
class Config:
    source: str
    journal: JournalConfig
    plugin_dirs: list[str]
    shutdown_timeout: float
    redaction: RedactionConfig
    portal: PortalConfig
    metrics: MetricsConfig
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
    data = load_document(text, source)
    root: ConfigFile = convert_table(data, ConfigFile, source, "")
    _check_journal(root.journal, source)
    sinks: list[SinkConfig] = []
    seen: set[str] = set()
    for i, table in enumerate(root.sinks):
        sc = sink_config(table, i, source, sink_types)
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
    if root.integrity != IntegrityConfig() or any(sc.integrity for sc in sinks):
        from ..integrity.settings import integrity_settings

        config.integrity = integrity_settings(
            root.integrity, source, next((sc.name for sc in sinks if sc.integrity), None))
    for sc in sinks:
        sc.source = source
    if root.streams_dir and sink_types is not None:
        streamed, errors = load_stream_files(root.streams_dir, source, seen, sink_types,
                                             integrity=config.integrity is not None)
        config.sinks.extend(streamed)
        config.stream_errors.update(errors)
    return config


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
