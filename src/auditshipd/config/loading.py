"""The configuration file -> :class:`Config`: read, expand ``${ENV}``, convert the typed
tables, check them, build the sinks, add the stream files' sinks.

Errors are :class:`~auditshipd.errors.ConfigError` naming the file and the key
(``sinks[1].batch.max_events``) and saying what is wrong. Values are never echoed in
messages, so a mistyped secret does not end up in a log.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..formats.settings import FormatSettings, parse_formats
from ..plugin import SinkType
from .collect import convert_all, non_finite, raise_all
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
)

__all__ = ["Config", "collect_config", "config_text", "default_config_text", "load_config",
           "parse_config", "read_config_text"]

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


def read_config_text(path: str | Path | None) -> tuple[str, str]:
    """The text of ``path`` (the embedded default when ``None``) and the name errors use."""
    if path is None:
        return default_config_text(), DEFAULT_CONFIG_NAME
    p = Path(path)
    try:
        return p.read_text("utf-8"), str(p)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(p)) from None


def config_text(source: str) -> str | None:
    """The text of the config a :class:`Config` was read from (its ``source``), for the
    lines of errors found later (an address taken); None when it cannot be read."""
    try:
        return read_config_text(None if source == DEFAULT_CONFIG_NAME else source)[0]
    except ConfigError:
        return None


def load_config(path: str | Path | None, sink_types: dict[str, SinkType] | None = None) -> Config:
    """Read ``path`` (or the embedded default when ``None``) and validate it."""
    text, source = read_config_text(path)
    return parse_config(text, source, sink_types)


def parse_config(
    text: str, source: str = "<string>", sink_types: dict[str, SinkType] | None = None
) -> Config:
    """Parse TOML text. With ``sink_types``, type-specific sink keys are validated too.
    Every problem found is raised (:class:`~auditshipd.errors.ConfigErrors` for more
    than one), with the line of its key where the text shows it."""
    errors: list[ConfigError] = []
    config = collect_config(text, source, sink_types, errors)
    raise_all(errors, text, source)
    return config


def collect_config(text: str, source: str, sink_types: dict[str, SinkType] | None,
                   errors: list[ConfigError]) -> Config:
    """The config of ``text`` as far as it is valid, every problem appended to
    ``errors``: a table with an error keeps its defaults, a sink with one is left out.
    A TOML syntax error is raised (nothing after it can be read)."""
    try:
        data = load_document(text, source, errors)
    except ConfigError as exc:
        raise_all([exc], text, source)
        raise
    root: ConfigFile = convert_all(data, ConfigFile, source, "", errors) or ConfigFile()
    journal_table = data.get("journal")
    if isinstance(journal_table, dict) and "path" in journal_table and "paths" not in journal_table:
        # The file and its rotated segments (path.20261125T101010.000000Z...), not the
        # default path's glob: a config naming only its journal reads that journal.
        root.journal.paths = [root.journal.path + "*"]
    for k in root.__struct_fields__:
        if k != "sinks":  # a sink's are checked with it, named by its name
            errors += non_finite(getattr(root, k), source, k)
    errors.extend(_check_journal(root.journal, source))
    if root.shutdown_timeout < 0:
        errors.append(ConfigError("must be zero or more (seconds)", file=source,
                                  key="shutdown_timeout"))
    sinks: list[SinkConfig] = []
    seen: set[str] = set()
    for i, table in enumerate(root.sinks):
        try:
            sc = sink_config(table, i, source, sink_types)
        except ConfigError as exc:
            errors.extend(getattr(exc, "errors", [exc]))
            continue
        if sc.name in seen:
            errors.append(ConfigError(f"duplicate sink name {sc.name!r}", file=source,
                                      key=f"sinks[{i}] ({sc.name}).name"))
            continue
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
    )
    try:
        config.formats = parse_formats(root.formats, source)
    except ConfigError as exc:
        errors.append(exc)
    if root.integrity != IntegrityConfig() or any(sc.integrity for sc in sinks):
        from ..integrity.settings import integrity_settings

        try:
            config.integrity = integrity_settings(
                root.integrity, source, next((sc.name for sc in sinks if sc.integrity), None))
        except ConfigError as exc:
            errors.append(exc)
    for sc in sinks:
        sc.source = source
    if root.streams_dir and sink_types is not None:
        try:
            streamed, stream_errors = load_stream_files(
                root.streams_dir, source, seen, sink_types,
                integrity=config.integrity is not None)
        except ConfigError as exc:
            errors.append(exc)
        else:
            config.sinks.extend(streamed)
            config.stream_errors.update(stream_errors)
    return config


def _check_journal(j: JournalConfig, source: str) -> list[ConfigError]:
    unread = bool(j.paths) and not any(
        fnmatch.fnmatchcase(os.path.normpath(j.path), os.path.normpath(glob)) for glob in j.paths)
    return [ConfigError(problem, file=source, key=f"journal.{key}") for key, problem, bad in (
        ("paths", "at least one journal path (glob) is required", not j.paths),
        ("paths", f"no glob matches journal.path ({j.path}): the events appended there would"
                  " never be read; add it (with its rotated segments: path + \"*\")", unread),
        ("path", f"{j.path} is a directory: name the journal file (for example"
                 f" {os.path.join(j.path, 'audit.jsonl')})", os.path.isdir(j.path)),
        ("state_dir", f"{j.state_dir} exists and is not a directory",
         os.path.exists(j.state_dir) and not os.path.isdir(j.state_dir)),
        ("max_line_bytes", "must be at least 64", j.max_line_bytes < 64),
        ("poll_interval", "must be positive", j.poll_interval <= 0),
        ("read_block_bytes", "must be at least 4096", j.read_block_bytes < 4096),
        ("pass_memory_bytes", "must be at least 1048576 (1 MiB)", j.pass_memory_bytes < 1 << 20),
        ("rotate_wait", "must be zero or more (seconds)", j.rotate_wait < 0),
    ) if bad]
