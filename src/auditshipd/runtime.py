"""Loading a config together with the plugins it names (two passes: the config says
which plugin directories to load, the plugins say which sink types exist)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

from .config import Config, default_config_text, load_config, parse_config
from .errors import ConfigError
from .plugins import build_plugin_manager, sink_types
from .sinks.base import SinkType

__all__ = ["build_redactors", "load_runtime"]


def load_runtime(path: str | Path | None) -> tuple[Config, pluggy.PluginManager, dict[str, SinkType]]:
    """Validate the whole config (sink-specific keys included) and return it with the
    plugin manager and sink types. Raises ConfigError naming file and key."""
    first = load_config(path)
    pm = build_plugin_manager(first.plugin_dirs)
    types = sink_types(pm)
    if path is None:
        config = parse_config(default_config_text(), first.source, types)
    else:
        config = load_config(path, types)
    build_redactors(config)  # a bad policy is a config error too
    _validate_servers(config)
    return config, pm, types


def _validate_servers(config: Config) -> None:
    """[portal] and [metrics] are checked with the rest, so that check-config and a
    reload reject them up front instead of failing half-way through."""
    from .metrics import metrics_config
    from .portal.config import portal_config

    metrics_config(config)
    portal_config(config)


def build_redactors(config: Config) -> dict[str, Any]:
    """One redactor per sink: the root policy, or the sink's (stricter) override."""
    try:
        from .redact import compile_policy
    except ImportError:  # redaction not built yet in this checkout
        return {s.name: None for s in config.sinks}
    root = compile_policy(config.redaction or None, source=config.source)
    out: dict[str, Any] = {}
    for i, s in enumerate(config.sinks):
        if s.redaction:
            try:
                out[s.name] = compile_policy(s.redaction, source=config.source, base=root)
            except ConfigError as exc:
                key = f"sinks[{i}] ({s.name}).{exc.key}" if exc.key else f"sinks[{i}]"
                raise ConfigError(exc.reason, file=config.source, key=key) from None
        else:
            out[s.name] = root
    return out
