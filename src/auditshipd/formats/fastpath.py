"""The fast encoders' hot loop: each redacted line through the typed view, the
reference encoder (decoded dict) for any line the view cannot answer for exactly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

__all__ = ["FastLines"]

_decode = msgspec.json.Decoder().decode


class FastLines:
    """Mixin over a reference encoder: ``encode_line`` / ``encode_lines`` take the fast
    path (``_fast(line) -> bytes | None``); ``encode(dict)`` stays the reference, which
    the differential tests hold the fast path to."""

    _fast: Callable[[bytes], bytes | None]
    encode: Callable[[dict[str, Any]], bytes]

    def encode_line(self, line: bytes) -> bytes:
        try:
            out = self._fast(line)
        except msgspec.DecodeError:  # a type the view does not take: the reference answers
            out = None
        return out if out is not None else self.encode(_decode(line))

    def encode_lines(self, lines: Sequence[bytes]) -> list[bytes]:
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
