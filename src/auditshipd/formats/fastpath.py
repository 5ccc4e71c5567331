"""The fast encoders' hot loop: each redacted line through the C extension
(``_formats_c``, when built), else through the typed view; the reference encoder
(decoded dict) for any line neither can answer for exactly.

Three tiers write the same bytes: C (one pass over the line's bytes, the plans built
here in Python from the action table), the typed view (``*_fast.py``: what an install
without a C compiler runs, and what C hands a line back to), the reference
(``ocsf.py``, ``ecs.py``, ``cef.py``: the specification the tests compare with).
``AUDITSHIPD_FORMATS_C=0`` switches the C tier off at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from .event import ip_or_none

__all__ = ["FastLines", "formats_c"]

_decode = msgspec.json.Decoder().decode

try:
    from . import _formats_c as _built_c
except ImportError:  # built without a C compiler: the typed view answers
    _built_c = None


def formats_c() -> Any:
    """The C extension, or None (not built, or ``AUDITSHIPD_FORMATS_C=0``)."""
    if os.environ.get("AUDITSHIPD_FORMATS_C", "1") == "0":
        return None
    return _built_c


class FastLines:
    """Mixin over a reference encoder: ``encode_line`` / ``encode_lines`` take the fast
    path (``_fast(line) -> bytes | None``); ``encode(dict)`` stays the reference, which
    the differential tests hold the fast path to."""

    _fast: Callable[[bytes], bytes | None]
    encode: Callable[[dict[str, Any]], bytes]
    plans: Any  # PlanCache of the format; the C tier reads ``plans.map``
    #: the C tier's number for the format (``_formats_c.OCSF``, ``ECS``, ``CEF``)
    c_format = -1
    #: OCSF's ``service`` and app ``actor`` pieces (b"" for the other formats)
    c_service = b""
    c_app_actor = b""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._c = formats_c()

    def encode_line(self, line: bytes) -> bytes:
        try:
            out = self._fast(line)
        except msgspec.DecodeError:  # a type the view does not take: the reference answers
            out = None
        return out if out is not None else self.encode(_decode(line))

    def encode_lines(self, lines: Sequence[bytes]) -> list[bytes]:
        c = self._c
        if c is not None:
            return c.encode_lines(self.c_format, lines, self.plans.map, self.plans.get,
                                  ip_or_none, self.encode_line, self.c_service,
                                  self.c_app_actor)
        fast, encode = self._fast, self.encode
        out: list[bytes] = []
        append = out.append
        for line in lines:
            try:
                b = fast(line)
            except msgspec.DecodeError:
                b = None
            append(b if b is not None else encode(_decode(line)))
        return out
