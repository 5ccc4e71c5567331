"""Configuration: the file -> :class:`Config` path (:mod:`.loading`), ``${ENV}``
references (:mod:`.env`), the typed tables (:mod:`.tables`), sink tables (:mod:`.sinks`),
stream files (:mod:`.streams`), plugin options' unknown keys (:mod:`.options`), every
error of a file in one pass (:mod:`.collect`).

One TOML file (or the embedded default), validated in full: errors are
:class:`~auditshipd.errors.ConfigError` naming the file, the line and the key
(:class:`~auditshipd.errors.ConfigErrors` when there are several).
"""

from __future__ import annotations

from .loading import Config, default_config_text, load_config, parse_config
from .sinks import SinkConfig
from .tables import (
    BatchConfig,
    DeadLetterConfig,
    IntegrityConfig,
    JournalConfig,
    MetricsConfig,
    PortalConfig,
    RedactionConfig,
    RetryConfig,
)

__all__ = [
    "BatchConfig",
    "Config",
    "DeadLetterConfig",
    "IntegrityConfig",
    "JournalConfig",
    "MetricsConfig",
    "PortalConfig",
    "RedactionConfig",
    "RetryConfig",
    "SinkConfig",
    "default_config_text",
    "load_config",
    "parse_config",
]
