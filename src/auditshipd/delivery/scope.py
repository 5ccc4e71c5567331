"""Which journal lines are in a sink's scope: its organizations and its ``start_at`` time.

One tiny typed decode of a raw line (``organization`` and ``occurred_at`` only, never the
whole event), shared by the shared pass (once per line, whatever the number of sinks) and
by a sink reading on its own (:class:`~auditshipd.delivery.lines.LineProcessor`). The
filter is the core's, never the sink's: a line outside a sink's scope never reaches it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import msgspec

from ..timestamps import parse_time

try:  # the C scanner of the redaction extension (absent in a build without a compiler)
    from ..redaction import _redact_c as _c
except ImportError:  # pragma: no cover - exercised by the no-compiler build test
    _c = None

__all__ = ["BLANK", "BOM", "NOT_AN_OBJECT", "SinkScope", "chunk_scopes", "line_scope", "unpadded"]

# Around a line, what a crashed or padding writer leaves: a line that is an object once
# these are stripped is shipped as that object (by :mod:`~auditshipd.delivery.lines`), so
# its scope is read the same way.
BLANK = b" \t\r\x00"
# A UTF-8 byte order mark: some writers (.NET's Encoding.UTF8, PowerShell) start each file
# with one, before its first line.
BOM = b"\xef\xbb\xbf"


def unpadded(line: bytes) -> bytes:
    """``line`` without the :data:`BLANK` bytes around it and a :data:`BOM` before it."""
    stripped = line.strip(BLANK)
    if stripped.startswith(BOM):
        stripped = stripped[len(BOM):].lstrip(BLANK)
    return stripped

# msgspec raises UnicodeDecodeError for invalid UTF-8 inside a string and RecursionError
# for absurd nesting: both mean "not valid JSON", never a crashed consumer.
_UNDECODABLE = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                RecursionError)


class _Scope(msgspec.Struct):
    organization: Any = None
    occurred_at: Any = None


_decode_scope = msgspec.json.Decoder(_Scope).decode


class _NotAnObject:
    """The scope of a line that is not a JSON object: in every sink's scope, so that
    each sink quarantines it with the reason its own decode gives."""

    __slots__ = ()


NOT_AN_OBJECT: Any = _NotAnObject()


def line_scope(line: bytes) -> tuple[Any, Any]:
    """(organization slug or None, raw ``occurred_at``) of a raw line; (NOT_AN_OBJECT,
    None) when the line is not a JSON object."""
    try:
        scope = _decode_scope(line)
    except _UNDECODABLE:
        stripped = unpadded(line)
        if stripped == line or not stripped:
            return NOT_AN_OBJECT, None
        try:
            scope = _decode_scope(stripped)
        except _UNDECODABLE:
            return NOT_AN_OBJECT, None
    org = scope.organization
    slug = org.get("slug") if isinstance(org, dict) else None
    # Organizations are named by strings: any other slug is in no organization's scope.
    return (slug if isinstance(slug, str) else None), scope.occurred_at


def chunk_scopes(raw: list[bytes], want_times: bool) -> tuple[dict[Any, list[int]], list[Any] | None]:
    """The lines of a chunk by scope: ``{slug: [line numbers, ascending]}`` (None: no
    organization; NOT_AN_OBJECT: not a JSON object), and with ``want_times`` each line's
    raw ``occurred_at``. The C scanner answers for the lines it can read with certainty
    (no escapes in the fields, valid JSON); :func:`line_scope` for the others, so both
    always agree (a property test checks)."""
    if _c is None or os.environ.get("AUDITSHIPD_REDACT_C", "1") == "0":
        pairs = [line_scope(line) for line in raw]
        return _group([p[0] for p in pairs]), [p[1] for p in pairs] if want_times else None
    slugs, times, unsure = _c.scope_lines(raw, want_times)
    for i in unsure:
        slugs[i], t = line_scope(raw[i])
        if times is not None:
            times[i] = t
    return _c.group_lines(slugs), times


def _group(keys: list[Any]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


class SinkScope:
    """A sink's ``organizations`` (None: all) and ``start_at`` time (None: any)."""

    __slots__ = ("organizations", "since")

    def __init__(self, organizations: Iterable[str] | None = None, since: float | None = None):
        self.organizations = frozenset(organizations) if organizations else None
        self.since = since

    @property
    def everything(self) -> bool:
        return self.organizations is None and self.since is None

    def admits(self, slug: Any, occurred_at: Any) -> bool:
        """Whether a line of organization ``slug`` that occurred at ``occurred_at`` is in
        scope (a line that is not an object always is: it gets quarantined)."""
        if slug is NOT_AN_OBJECT:
            return True
        if self.organizations is not None and slug not in self.organizations:
            return False
        return self.on_time(occurred_at)

    def on_time(self, occurred_at: Any) -> bool:
        if self.since is None:
            return True
        t = parse_time(occurred_at)
        return t is None or t >= self.since

    def admits_line(self, line: bytes) -> bool:
        return self.admits(*line_scope(line))
