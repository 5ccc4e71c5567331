"""The canonical form a digest or an export manifest is signed in.

JSON with the keys of every object sorted (by code point), no whitespace, strings
with only the escapes JSON requires (``"``, ``\\``, control characters), other
characters as UTF-8, integers in decimal, floats as Python's shortest round-trip
``repr``; NaN and infinities are refused: exactly
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.
(Events are hashed over their bytes as delivered instead: see :mod:`.chain`.)
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["RESERVED_KEY", "canonical"]

# The one key of an event the integrity layer owns.
RESERVED_KEY = "integrity"

_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical(obj: Any) -> bytes:
    """``obj`` in canonical form (UTF-8 bytes)."""
    return _dumps(obj).encode("utf-8")
