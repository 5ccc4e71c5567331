"""Loading a config together with the plugins it names (two passes: the config says
which plugin directories to load, the plugins say which sink types exist)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from ..config import Config, RedactionConfig, default_config_text, load_config, parse_config
from ..errors import ConfigError
from ..plugin import SinkType
from ..plugins.manager import build_plugin_manager, sink_types

if TYPE_CHECKING:
    from ..redaction.redactor import Redactor

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
    from ..portal.config import portal_config
    from .metrics import metrics_config

    metrics_config(config)
    portal_config(config)


def build_redactors(config: Config) -> dict[str, Redactor]:
    """One redactor per sink: the root policy, or the sink's (stricter) override.

    Fails closed: if redaction cannot be imported or a policy cannot be compiled, this
    raises ConfigError and no sink is started (or, on a reload, the running config with
    its redactors stays). An event never leaves unredacted.
    """
    try:
        from ..redaction.redactor import compile_policy
    except Exception as exc:
        raise ConfigError(
            f"redaction is unavailable ({type(exc).__name__}: {exc}); events are never"
            " shipped unredacted, so no sink can start: reinstall auditshipd",
            file=config.source, key="redaction",
        ) from exc
    root = _compile(compile_policy, config, config.redaction, None, "redaction")
    out: dict[str, Redactor] = {}
    for i, s in enumerate(config.sinks):
        if s.redaction is not None:
            out[s.name] = _compile(compile_policy, config, s.redaction, root,
                                   f"sinks[{i}] ({s.name})")
        else:
            out[s.name] = root
    return out


def _compile(compile_policy: Any, config: Config, raw: RedactionConfig | None,
             base: Redactor | None, where: str) -> Redactor:
    try:
        redactor = compile_policy(raw, source=config.source, base=base)
    except ConfigError as exc:
        if base is None:
            raise
        key = f"{where}.{exc.key}" if exc.key else where
        raise ConfigError(exc.reason, file=config.source, key=key) from None
    except Exception as exc:  # a bug or a broken install: still never ship unredacted
        raise ConfigError(f"the redaction policy could not be compiled: "
                          f"{type(exc).__name__}: {exc}", file=config.source,
                          key=where if base is not None else "redaction") from exc
    if redactor is None:
        raise ConfigError("the redaction policy compiled to nothing", file=config.source,
                          key=where)
    return redactor
