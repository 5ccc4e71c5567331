"""Names built from an event's fields: ``audit/{organization.slug}/{action}``.

One parser and renderer for the sinks that route by a template (MQTT topics, NATS subjects).
Each sink says which characters a value may not carry (level separators, wildcards), so an
event's value can never add routing levels or act as a wildcard. And :func:`id_text`, an
event id as a message header or property can carry it, distinct ids kept distinct.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

__all__ = ["FieldTemplate", "id_text"]


def id_text(value: str, fits: Callable[[str], bool]) -> str:
    """``value`` (an event id) for a header or property that cannot hold every string:
    itself when ``fits(value)`` and it does not start with ``%``, else ``%`` and its
    percent-encoded UTF-8. Distinct ids stay distinct, which receivers that drop
    duplicates by this value (JetStream's Nats-Msg-Id) rely on."""
    if value and fits(value) and not value.startswith("%"):
        return value
    return "%" + quote(value, safe="-_.~:@", errors="surrogatepass")


class FieldTemplate:
    """A template of literals and ``{dotted.field}`` placeholders rendered against an event.

    A missing, empty or non-scalar value renders as ``unknown``; characters of the class's
    ``unsafe`` translation table inside a value become ``_``.
    """

    __slots__ = ("template", "_parts")
    unsafe: dict[int, str] = {}

    def __init__(self, template: str):
        self.template = template
        self._parts: list[tuple[str, tuple[str, ...] | None]] = []
        for literal, field, spec, conv in string.Formatter().parse(template):
            if literal:
                self._parts.append((literal, None))
            if field is not None:
                if not field or spec or conv or any(not p for p in field.split(".")):
                    raise ValueError(f"bad placeholder {{{field}}}: use a dotted field path")
                self._parts.append(("", tuple(field.split("."))))

    def __call__(self, event: dict[str, Any]) -> str:
        return "".join(
            literal if path is None else self._value(event, path)
            for literal, path in self._parts
        )

    def _value(self, event: dict[str, Any], path: tuple[str, ...]) -> str:
        value: Any = event
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            text = str(value)
        else:
            text = ""
        return text.translate(self.unsafe) or "unknown"
