"""Which encoder a sink ships with, and batches in a sink's format."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..delivery.batch import Batch
from .base import Encoder
from .cef_fast import FastCefEncoder
from .ecs_fast import FastEcsEncoder
from .ocsf_fast import FastOcsfEncoder
from .settings import FORMATS, FormatSettings

__all__ = ["ENCODERS", "build_encoder", "encoder_for_sink", "format_batch", "reformat"]

#: name -> encoder class; ``native`` has none. The fast encoders write from a typed view
#: of the redacted line; their bases (ocsf.py, ecs.py, cef.py) are the reference they
#: fall back on and are tested against byte for byte.
ENCODERS: dict[str, type[Encoder]] = {"ocsf": FastOcsfEncoder, "ecs": FastEcsEncoder,
                                      "cef": FastCefEncoder}


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
