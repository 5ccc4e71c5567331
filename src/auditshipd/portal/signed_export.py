"""What an export is made of, so that its signed manifest can be made again anywhere.

An export is a pure function of its format, its filters, the caller's organization scope
and ``as_of``: the events that occurred before ``as_of`` (and before ``until``, when
given), newest first, encoded as CSV or JSON Lines. ``/api/export`` fixes ``as_of`` at
request time (or takes the one given) and names it in ``X-Export-As-Of`` and in its
``Link`` to the manifest; ``/api/export.manifest`` with the same parameters reads the same
events again, hashes the bytes while encoding them and signs the result with the
``[integrity]`` key. No replica keeps state about an export: any one can sign it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode

from .export import csv_header, csv_rows, jsonl_rows
from .filters import BadParameter, parse_filters
from .query import EventFilter, format_time, parse_time
from .store import EventStore
from .tokens import Principal

__all__ = [
    "EXPORT_CHUNK",
    "ExportRequest",
    "export_bytes",
    "first_chunk",
    "export_request",
    "manifest_query",
    "signing_key",
]

EXPORT_CHUNK = 1000
FORMATS = ("csv", "jsonl")
_SHARED_PARAMS = ("q", "actor", "target", "since", "until", "organization", "include_access")


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    fmt: str
    filters: EventFilter  # ``until`` already bounded by ``as_of``
    as_of: _dt.datetime | None  # None: not bounded (no signing key, no as_of asked)
    asked: EventFilter  # the filters as given, for the manifest and the access record
    made_at: _dt.datetime

    @property
    def stamp(self) -> str:
        when = self.as_of or self.made_at
        return when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond:06d}Z"

    def filename(self) -> str:
        return f"audit-log-{self.stamp}.{self.fmt}"

    def manifest_filters(self) -> dict[str, Any]:
        """What the manifest records as asked: the filters, the organization, ``as_of``."""
        out = self.asked.as_metadata()
        out["organization"] = self.filters.organization
        out["as_of"] = format_time(self.as_of) if self.as_of else None
        return out

    def since_until(self) -> tuple[str | None, str | None]:
        since = format_time(self.filters.since) if self.filters.since else None
        until = format_time(self.filters.until) if self.filters.until else None
        return since, until


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def export_request(query: Any, principal: Principal, *, as_of_default: str,
                   now: _dt.datetime | None = None) -> ExportRequest:
    """The export a query string asks for; BadParameter for a bad parameter,
    OtherOrganization when ``organization`` is not the token's own. Without ``as_of``:
    ``as_of_default`` says ``"now"`` (the time of the request), ``"none"`` (no bound, as
    exports are without a signing key) or ``"required"`` (a BadParameter)."""
    fmt = query.get("format", "jsonl")
    if fmt not in FORMATS:
        raise BadParameter("format", "must be csv or jsonl")
    asked = parse_filters(query, principal.scope)
    current = now or _now()
    raw = query.get("as_of", "").strip()
    as_of: _dt.datetime | None = None
    if raw:
        try:
            as_of = parse_time(raw)
        except ValueError:
            raise BadParameter("as_of", "expected an RFC 3339 time such as 2026-01-31T12:00:00Z") from None
        if as_of > current:
            raise BadParameter("as_of", "must not be in the future: events may still arrive")
    elif as_of_default == "required":
        raise BadParameter("as_of", "required: the as_of of the export (its X-Export-As-Of)")
    elif as_of_default == "now":
        as_of = current
    if as_of is None:
        return ExportRequest(fmt, asked, None, asked, current)
    until = min(asked.until, as_of) if asked.until else as_of
    return ExportRequest(fmt, dataclasses.replace(asked, until=until), as_of, asked, current)


def manifest_query(req: ExportRequest, query: Any) -> str:
    """The query string of the manifest of the export ``req`` read from ``query``."""
    assert req.as_of is not None
    pairs = [(k, query.get(k)) for k in _SHARED_PARAMS if query.get(k)]
    pairs += [("action", a) for a in query.getall("action", []) if a]
    return urlencode([*pairs, ("format", req.fmt), ("as_of", format_time(req.as_of))])


async def export_bytes(
    first: list[Mapping[str, Any]] | None,
    rest: AsyncIterator[list[dict[str, Any]]],
    fmt: str,
) -> AsyncIterator[tuple[bytes, int]]:
    """The export's bytes in pieces, each with the number of rows it holds."""
    encode = csv_rows if fmt == "csv" else jsonl_rows
    if fmt == "csv":
        yield csv_header(), 0
    if first is None:
        return
    yield encode(first), len(first)
    async for events in rest:
        yield encode(events), len(events)


async def first_chunk(
    store: EventStore, filters: EventFilter
) -> tuple[list[dict[str, Any]] | None, AsyncIterator[list[dict[str, Any]]]]:
    """The first chunk read before any response starts (a store's refusal is a 400)."""
    chunks = store.iter_export(filters, EXPORT_CHUNK)
    return await anext(chunks, None), chunks


def signing_key(config: Any) -> Any:
    """The ``[integrity]`` signing key, or None when none is configured."""
    settings = getattr(config, "integrity", None)
    return getattr(settings, "key", None)
