"""What makes a decoded line a shippable event, and redacting a list of lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import DropEvent

__all__ = ["TOO_DEEP", "check_event", "redact_each"]


_REQUIRED = ("id", "action", "occurred_at")
# The DropEvent reason of an event whose free-form data msgspec could decode but the
# redaction's walk cannot go through (lists nested hundreds deep): never RecursionError.
TOO_DEEP = "nested too deeply to redact"


def redact_each(
    redact_line: Callable[[bytes], bytes], lines: list[bytes]
) -> tuple[list[bytes], list[tuple[int, str]]]:
    """``redact_line`` over a batch: (outputs in order, [(index, reason)] of the bad lines,
    reasons reading ``invalid JSON: ...`` or the DropEvent reason)."""
    good: list[bytes] = []
    bad: list[tuple[int, str]] = []
    append = good.append
    for i, line in enumerate(lines):
        try:
            append(redact_line(line))
        except msgspec.DecodeError as exc:
            bad.append((i, f"invalid JSON: {exc}"))
        except DropEvent as exc:
            bad.append((i, exc.reason))
    return good, bad


def check_event(obj: Any) -> str | None:
    """The quarantine reason for a decoded line that is not a shippable event, else None."""
    if type(obj) is not dict:
        return f"not a JSON object (a JSON {type(obj).__name__})"
    for key in _REQUIRED:
        value = obj.get(key)
        if type(value) is not str or not value:
            return f"schema: {key!r} is missing or not a non-empty string"
    return None


def check_utf8(line: bytes) -> None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None
