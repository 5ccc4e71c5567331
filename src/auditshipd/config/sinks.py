"""One ``[[sinks]]`` table -> :class:`SinkConfig`: the common keys typed and checked,
the rest converted to the sink type's options (unknown keys are errors for every type)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ..errors import ConfigError
from ..formats.settings import check_sink_format
from ..plugin import SinkType
from ..scrub import scrub_secrets, sink_secrets
from ..timestamps import parse_rfc3339
from .collect import convert_all, did_you_mean, known_keys, non_finite, raise_all
from .env import is_placeholder
from .options import unknown_keys
from .tables import (
    SINK_COMMON_KEYS,
    BatchConfig,
    DeadLetterConfig,
    RedactionConfig,
    RetryConfig,
    SinkCommon,
)

__all__ = ["SinkConfig", "sink_config"]


@dataclass
class SinkConfig:
    name: str
    type: str
    options: Any
    enabled: bool
    concurrency: int
    start_at: str
    organizations: list[str] | None
    redaction: RedactionConfig | None
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
    # Self-service streams: the netguard.DestinationPolicy their connections are held to
    # (None: the operator's own sinks, which may connect anywhere).
    destinations: Any = field(repr=False, default=None)


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def sink_config(
    table: dict[str, Any], index: int, source: str, sink_types: dict[str, SinkType] | None
) -> SinkConfig:
    """The sink at ``sinks[index]`` of ``source``. With ``sink_types``, the type must be
    known and its options are converted and validated; without, they stay a dict.

    Raises every problem found (:class:`~auditshipd.errors.ConfigErrors` when more than
    one): first all key and type errors; only a sink without any gets its values checked.
    """
    where = f"sinks[{index}]"
    if not isinstance(table, dict):
        raise ConfigError("must be a table ([[sinks]])", file=source, key=where)
    name = table.get("name")
    if isinstance(name, str) and _NAME_RE.match(name):
        where = f"sinks[{index}] ({name})"
    errors: list[ConfigError] = []
    common = {k: v for k, v in table.items() if k in SINK_COMMON_KEYS}
    specific = {k: v for k, v in table.items() if k not in SINK_COMMON_KEYS}
    for required in ("name", "type"):
        if required not in common:
            errors.append(ConfigError("missing required key", file=source, key=f"{where}.{required}"))
    st = None
    if sink_types is not None and isinstance(table.get("type"), str):
        st = sink_types.get(table["type"])
        if st is None:
            known = ", ".join(sorted(sink_types)) or "none"
            errors.append(ConfigError(
                f"unknown sink type {table['type']!r}{did_you_mean(table['type'], sink_types)}"
                f" (known: {known})", file=source, key=f"{where}.type"))
    option_keys = known_keys(st.options, []) if st is not None else []
    c: SinkCommon | None = None
    if st is not None and st.batch_defaults and isinstance(common.get("batch", {}), dict):
        common["batch"] = {**st.batch_defaults, **common.get("batch", {})}
    if st is not None and st.concurrency is not None:
        common.setdefault("concurrency", st.concurrency)
    if not errors:
        c = convert_all(common, SinkCommon, source, where, errors, option_keys)
    options: Any = specific
    if st is not None:
        # Checked here, not left to the plugin's Struct flags: a typo is an error
        # for every sink type, built-in or drop-in.
        unknown = unknown_keys(specific, st.options)
        for path, known in unknown:
            if "." not in path and "[" not in path:
                known = [*known, *SINK_COMMON_KEYS]
            last = path.rsplit(".", 1)[-1]
            errors.append(ConfigError(f"unknown key{did_you_mean(last, known)}", file=source,
                                      key=f"{where}.{path}"))
        if not unknown:
            options = convert_all(specific, st.options, source, where, errors)
    if errors or c is None:
        raise_all(errors, None, source)
    assert c is not None
    _check_values(c, st, options, source, where)
    return SinkConfig(
        name=c.name, type=c.type, options=options, enabled=c.enabled, concurrency=c.concurrency,
        start_at=c.start_at, organizations=c.organizations, redaction=c.redaction, batch=c.batch,
        retry=c.retry, dead_letter=c.dead_letter, raw=table, sink_type=st, format=c.format,
        integrity=c.integrity,
    )


def _check_values(c: SinkCommon, st: SinkType | None, options: Any, source: str,
                  where: str) -> None:
    """The checks a type cannot express, all of them; raises what they found."""
    errors: list[ConfigError] = []
    if not _NAME_RE.match(c.name):
        errors.append(ConfigError(
            "sink name must be 1-64 characters of letters, digits, '_', '-', '.'",
            file=source, key=f"{where}.name"))
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
            errors.append(ConfigError("value out of range", file=source, key=f"{where}.{key}"))
    errors += non_finite(c, source, where) + non_finite(options, source, where)
    if c.start_at not in ("beginning", "end") and not _RFC3339_RE.match(c.start_at):
        errors.append(ConfigError("must be \"beginning\", \"end\" or an RFC 3339 time",
                                  file=source, key=f"{where}.start_at"))
    elif c.start_at not in ("beginning", "end") and parse_rfc3339(c.start_at) is None:
        # The shape is right but there is no such instant (February 30, hour 25, a year
        # outside 0001-9999 in UTC): the sink would otherwise start at the beginning.
        errors.append(ConfigError(
            "no such date or time (an RFC 3339 time with a real day, hour 00-23, minute and"
            " second 00-59)", file=source, key=f"{where}.start_at"))
    if c.organizations is not None and not c.organizations:
        errors.append(ConfigError(
            "an empty list would match no organization: remove the key for every"
            " organization", file=source, key=f"{where}.organizations"))
    if st is not None and st.validate is not None:
        try:
            st.validate(options)
        except ConfigError as exc:
            key = f"{where}.{exc.key}" if exc.key else where
            if not _about_a_placeholder(options, exc.key):
                errors.append(ConfigError(exc.reason, file=source, key=key))
        except Exception as exc:  # noqa: BLE001 - a validator's own failure is this sink's error
            # (urlsplit's ValueError on "mqtt://[fd00::1:1883", a plugin's bug): reported
            # with the rest, never a traceback, never the value itself.
            errors.append(ConfigError(
                f"the {c.type} sink's settings could not be checked: {type(exc).__name__}:"
                f" {scrub_secrets(str(exc), sink_secrets(SimpleNamespace(options=options, sink_type=st)))}", file=source, key=where))
    problem = check_sink_format(c.format, c.type, options)
    if problem is None and c.integrity and c.format == "cef":  # sealing adds a JSON member
        problem = "CEF lines are text, not JSON objects: integrity = true needs native, ocsf or ecs"
    if problem is not None:
        errors.append(ConfigError(problem, file=source, key=f"{where}.format"))
    raise_all(errors, None, source)


def _about_a_placeholder(options: Any, key: str | None) -> bool:
    """The option a sink's check refused stands for an unset variable
    (``check-config --no-env``, ``url = "${SIEM_URL}"``): its shape cannot be checked."""
    name = re.split(r"[.\[]", key or "", maxsplit=1)[0]
    value = getattr(options, name, None) if name else None
    return isinstance(value, str) and is_placeholder(value)
