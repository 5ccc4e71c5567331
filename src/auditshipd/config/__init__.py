"""Configuration: loading, ${ENV} references, the typed tables, stream files.

One TOML file (or the embedded default), validated in full: errors are
:class:`~auditshipd.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

from .loading import (
    BatchConfig,
    Config,
    DeadLetterConfig,
    JournalConfig,
    RetryConfig,
    SinkConfig,
    default_config_text,
    load_config,
    parse_config,
)

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
