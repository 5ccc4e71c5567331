"""RFC 3339 times as they appear in events and state files."""

from __future__ import annotations

import datetime as _dt
from typing import Any

__all__ = ["parse_time"]


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch for an RFC 3339 string (``Z`` or an offset), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
