"""The configuration side of the formats: the ``[formats]`` table and whether a sink's
``format`` key fits its type. Imported by the config loader, so it imports no encoder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .ocsf_actions import OcsfAction, parse_actions

__all__ = ["FORMATS", "FormatSettings", "check_sink_format", "parse_formats"]

#: Every value of a sink's ``format`` key; ``native`` has no encoder.
FORMATS = ("native", "ocsf", "ecs", "cef")


@dataclass(frozen=True)
class FormatSettings:
    """The ``[formats]`` table: the operator's OCSF action rows and product names."""

    actions: dict[str, OcsfAction] = field(default_factory=dict)
    product_name: str = "auditshipd"
    vendor_name: str = "auditshipd"


def parse_formats(table: Any, source: str = "<string>") -> FormatSettings:
    """Validate ``[formats]`` (only ``[formats.ocsf]`` has keys today)."""
    if not table:
        return FormatSettings()
    if not isinstance(table, dict):
        raise ConfigError("must be a table", file=source, key="formats")
    for k in table:
        if k != "ocsf":
            raise ConfigError("unknown key (known: ocsf)", file=source, key=f"formats.{k}")
    ocsf = table.get("ocsf") or {}
    if not isinstance(ocsf, dict):
        raise ConfigError("must be a table", file=source, key="formats.ocsf")
    kw: dict[str, Any] = {}
    for k, v in ocsf.items():
        if k == "actions":
            kw["actions"] = parse_actions(v, source=source, key="formats.ocsf.actions")
        elif k in ("product_name", "vendor_name"):
            if not isinstance(v, str) or not v:
                raise ConfigError("must be a non-empty string", file=source,
                                  key=f"formats.ocsf.{k}")
            kw[k] = v
        else:
            raise ConfigError("unknown key (known: actions, product_name, vendor_name)",
                              file=source, key=f"formats.ocsf.{k}")
    return FormatSettings(**kw)


# Sinks whose bodies are JSON documents that cannot carry CEF's text lines, by option.
_JSON_ONLY_ENCODINGS = {"json"}


def check_sink_format(fmt: str, sink_type: str, options: Any) -> str | None:
    """Why ``format`` does not fit this sink (a message for the key), or None."""
    if fmt not in FORMATS:
        return f"unknown format {fmt!r} (known: {', '.join(FORMATS)})"
    if fmt != "native" and sink_type == "portal":
        return "the portal stores and shows the redacted events: its format must be \"native\""
    if fmt != "native" and sink_type == "otlp":
        return ("the otlp sink sends each redacted event as an OpenTelemetry LogRecord:"
                " its format must be \"native\"")
    if fmt == "cef" and getattr(options, "encoding", None) in _JSON_ONLY_ENCODINGS:
        return ('CEF is one text line per event: set encoding = "ndjson" or "text"'
                " (a JSON array cannot hold it)")
    return None
