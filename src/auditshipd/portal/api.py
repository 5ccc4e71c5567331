"""The JSON API: ``/api/events``, ``/api/events/{id}``, ``/api/export``, ``/api/export.manifest``
(``/api/streams`` is :mod:`auditshipd.portal.stream_api`'s)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..integrity.manifest import ManifestBuilder
from .access import shown_organizations
from .filters import BadParameter, OtherOrganization, parse_filters, parse_limit
from .guard import STATE, json_error, require
from .openapi import openapi_document
from .paging import match_total
from .query import format_time
from .signed_export import (
    export_bytes,
    export_request,
    first_chunk,
    manifest_query,
    signing_key,
)

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/api/events")
async def list_events(request: web.Request) -> web.StreamResponse:
    principal, session = await require(request, "read_events", api=True)
    state = request.app[STATE]
    try:
        filters = parse_filters(request.query, principal.scope)
        limit = parse_limit(request.query)
        page = await state.store.query(filters, request.query.get("cursor") or None, limit)
        total = await match_total(state.store, filters)
    except OtherOrganization as exc:
        return json_error(403, exc.message, param=exc.param)
    except BadParameter as exc:
        return json_error(400, exc.message, param=exc.param)
    except ValueError as exc:
        return json_error(400, str(exc), param="cursor")
    await state.recorder.viewed(
        request, principal,
        {"view": "search", "filters": filters.as_metadata(), "results": len(page.events)}, session,
        page.events,
    )
    return web.json_response(
        {"data": page.events, "next_cursor": page.next_cursor, "total": total.as_json()}
    )


@routes.get("/api/events/{event_id}")
async def get_event(request: web.Request) -> web.StreamResponse:
    principal, session = await require(request, "read_events", api=True)
    state = request.app[STATE]
    event_id = request.match_info["event_id"]
    event = await state.store.get(event_id, organization=principal.scope)
    await state.recorder.viewed(
        request, principal, {"view": "event", "event": event_id, "found": event is not None}, session,
        [event] if event is not None else [],
    )
    if event is None:
        return json_error(404, "no such event")
    return web.json_response({"data": event})


@routes.get("/api/export")
async def export_events(request: web.Request) -> web.StreamResponse:
    principal, _ = await require(request, "export", api=True)
    state = request.app[STATE]
    key = signing_key(state.config)
    started = await _start_export(request, principal, "none" if key is None else "now")
    if isinstance(started, web.Response):
        return started
    req, first, rest = started
    record = {"format": req.fmt, "filters": req.asked.as_metadata()}
    if req.as_of is not None:
        record["as_of"] = format_time(req.as_of)
    await state.recorder.exported(request, principal, record)
    headers = {
        "Content-Type": "text/csv; charset=utf-8" if req.fmt == "csv" else "application/x-ndjson",
        "Content-Disposition": f'attachment; filename="{req.filename()}"',
    }
    if req.as_of is not None:
        headers["X-Export-As-Of"] = format_time(req.as_of)
    if key is not None:
        headers["Link"] = f'</api/export.manifest?{manifest_query(req, request.query)}>; rel="describedby"'
    else:
        headers["X-Export-Manifest"] = "unavailable"
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    shown, rest = _tally(principal, req, first, rest)
    try:
        await response.prepare(request)
        async for data, _rows in export_bytes(first, rest, req.fmt):
            await response.write(data)
        await response.write_eof()
    finally:  # what was read, even when the client went away
        await asyncio.shield(state.recorder.exported_from(request, principal, record, shown))
    return response


@routes.get("/api/export.manifest")
async def export_manifest(request: web.Request) -> web.StreamResponse:
    principal, _ = await require(request, "export", api=True)
    state = request.app[STATE]
    key = signing_key(state.config)
    if key is None:
        return json_error(501, "export manifests are unavailable: the portal has no [integrity]"
                               " signing_key")
    started = await _start_export(request, principal, "required")
    if isinstance(started, web.Response):
        return started
    req, first, rest = started
    since, until = req.since_until()
    builder = ManifestBuilder(req.fmt, req.manifest_filters(), since, until)
    shown, rest = _tally(principal, req, first, rest)
    async for data, rows in export_bytes(first, rest, req.fmt):
        builder.update(data, rows)
    manifest = builder.sign(key)
    record = {"format": req.fmt, "filters": req.asked.as_metadata(), "manifest": True,
              "rows": manifest["rows"]}
    if req.as_of is not None:
        record["as_of"] = format_time(req.as_of)
    await state.recorder.exported(request, principal, record)
    await state.recorder.exported_from(request, principal, record, shown)
    return web.json_response(manifest, headers={
        "Content-Disposition": f'attachment; filename="{req.filename()}.manifest.json"'})


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())


def _tally(principal: Any, req: Any, first: list[dict[str, Any]] | None,
           rest: AsyncIterator[list[dict[str, Any]]],
           ) -> tuple[collections.Counter[str], AsyncIterator[list[dict[str, Any]]]]:
    """For an operator's export: the count of its events by organization, which fills
    as ``rest`` (returned wrapped) goes by. Anyone else's export is of their own
    organization and recorded there: nothing is counted, ``rest`` is returned as it is."""
    if principal.scope is not None:
        return collections.Counter(), rest
    shown = shown_organizations(first or (), req.filters.organization)
    return shown, _counted(rest, shown)


async def _counted(chunks: AsyncIterator[list[dict[str, Any]]],
                   shown: collections.Counter[str]) -> AsyncIterator[list[dict[str, Any]]]:
    """``chunks`` as they are, counting their events by organization into ``shown``."""
    async for events in chunks:
        shown.update(shown_organizations(events))
        yield events


async def _start_export(request: web.Request, principal: Any, as_of_default: str) -> Any:
    """The export's request and its first chunk, or the JSON error to answer with. The
    first chunk is read before any response starts: whatever the store refuses in these
    filters is a 400 here, not a stream cut off after its 200 header."""
    try:
        req = export_request(request.query, principal, as_of_default=as_of_default)
        first, rest = await first_chunk(request.app[STATE].store, req.filters)
    except OtherOrganization as exc:
        return json_error(403, exc.message, param=exc.param)
    except BadParameter as exc:
        return json_error(400, exc.message, param=exc.param)
    except ValueError as exc:
        return json_error(400, str(exc))
    return req, first, rest
