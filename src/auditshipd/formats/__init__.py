"""SIEM formats: what a sink ships, per sink (``format = "native" | "ocsf" | "ecs" | "cef"``).

An encoder runs after redaction and before batching: it reads the redacted event (the
line that leaves the machine), never the journal's, and returns the bytes to ship.
``native`` is no encoder at all: the redacted JSON goes out as it is. Reference:
docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..batch import Batch
from ..errors import ConfigError
from .base import Encoder
from .cef import CefEncoder
from .ecs import EcsEncoder
from .ocsf import OcsfEncoder
from .ocsf_actions import OCSF_VERSION, OcsfAction, parse_actions

__all__ = [
    "FORMATS",
    "OCSF_VERSION",
    "Encoder",
    "FormatSettings",
    "build_encoder",
    "check_sink_format",
    "encoder_for_sink",
    "format_batch",
    "parse_formats",
    "reformat",
    "sink_format",
]

#: name -> encoder class; ``native`` has none.
ENCODERS: dict[str, type[Encoder]] = {"ocsf": OcsfEncoder, "ecs": EcsEncoder, "cef": CefEncoder}
FORMATS = ("native", *ENCODERS)


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


def build_encoder(name: str, settings: FormatSettings | None = None) -> Encoder | None:
    """The encoder of format ``name`` (None for ``native``)."""
    if name == "native":
        return None
    s = settings or FormatSettings()
    cls = ENCODERS.get(name)
    if cls is None:
        raise ValueError(f"unknown format {name!r} (known: {', '.join(FORMATS)})")
    return cls(s.actions, product_name=s.product_name, vendor_name=s.vendor_name)


def encoder_for_sink(config: Any, sink_config: Any) -> Encoder | None:
    """The encoder a configured sink ships with (None: native)."""
    return build_encoder(getattr(sink_config, "format", "native"),
                         getattr(config, "formats", None))


def sink_format(context: Any) -> str:
    """The format a sink was configured with, from its ``SinkContext`` ("native" when
    the core did not say: tests, older callers)."""
    extra = getattr(context, "extra", None) or {}
    return str(extra.get("format") or "native")


def format_batch(encoder: Encoder | None, lines: Sequence[bytes]) -> Batch:
    """A batch whose ``lines`` are in the sink's format; its ``events`` stay the redacted
    events (ids, times and organizations for keys and headers, dead letters)."""
    if encoder is None:
        return Batch(lines=lines)
    return Batch(lines=encoder.encode_lines(lines), source=lines)


def reformat(encoder: Encoder | None, batch: Batch) -> Batch:
    """``batch`` (redacted events, e.g. a dead letter) in the sink's format."""
    if encoder is None:
        return batch
    return format_batch(encoder, batch.lines)


# Sinks whose bodies are JSON documents that cannot carry CEF's text lines, by option.
_JSON_ONLY_ENCODINGS = {"json"}


def check_sink_format(fmt: str, sink_type: str, options: Any) -> str | None:
    """Why ``format`` does not fit this sink (a message for the key), or None."""
    if fmt not in FORMATS:
        return f"unknown format {fmt!r} (known: {', '.join(FORMATS)})"
    if fmt != "native" and sink_type == "portal":
        return "the portal stores and shows the redacted events: its format must be \"native\""
    if fmt == "cef" and getattr(options, "encoding", None) in _JSON_ONLY_ENCODINGS:
        return ('CEF is one text line per event: set encoding = "ndjson" or "text"'
                " (a JSON array cannot hold it)")
    return None
