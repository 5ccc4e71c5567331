"""The JSON API: ``/api/events``, ``/api/events/{id}``, ``/api/export``, ``/api/streams``."""

from __future__ import annotations

import datetime as _dt

from aiohttp import web

from .export import csv_header, csv_rows, jsonl_rows
from .filters import BadParameter, parse_filters, parse_limit
from .guard import STATE, json_error, require
from .openapi import openapi_document
from .paging import match_total
from .streams import stream_states

__all__ = ["routes"]

routes = web.RouteTableDef()
EXPORT_CHUNK = 1000


@routes.get("/api/events")
async def list_events(request: web.Request) -> web.StreamResponse:
    principal, _ = require(request, "read_events", api=True)
    state = request.app[STATE]
    try:
        filters = parse_filters(request.query, principal.scope)
        limit = parse_limit(request.query)
        page = await state.store.query(filters, request.query.get("cursor") or None, limit)
        total = await match_total(state.store, filters)
    except BadParameter as exc:
        return json_error(400, exc.message, param=exc.param)
    except ValueError as exc:
        return json_error(400, str(exc), param="cursor")
    await state.recorder.viewed(
        request, principal, {"view": "search", "filters": filters.as_metadata(), "results": len(page.events)}
    )
    return web.json_response(
        {"data": page.events, "next_cursor": page.next_cursor, "total": total.as_json()}
    )


@routes.get("/api/events/{event_id}")
async def get_event(request: web.Request) -> web.StreamResponse:
    principal, _ = require(request, "read_events", api=True)
    state = request.app[STATE]
    event_id = request.match_info["event_id"]
    event = await state.store.get(event_id, organization=principal.scope)
    await state.recorder.viewed(request, principal, {"view": "event", "event": event_id, "found": event is not None})
    if event is None:
        return json_error(404, "no such event")
    return web.json_response({"data": event})


@routes.get("/api/export")
async def export_events(request: web.Request) -> web.StreamResponse:
    principal, _ = require(request, "export", api=True)
    state = request.app[STATE]
    fmt = request.query.get("format", "jsonl")
    if fmt not in ("csv", "jsonl"):
        return json_error(400, "format must be csv or jsonl", param="format")
    try:
        filters = parse_filters(request.query, principal.scope)
    except BadParameter as exc:
        return json_error(400, exc.message, param=exc.param)
    # The first chunk is read before the response starts: whatever the store refuses in
    # these filters is a 400 here, not a stream cut off after its 200 header.
    chunks = state.store.iter_export(filters, EXPORT_CHUNK)
    try:
        first = await anext(chunks, None)
    except ValueError as exc:
        return json_error(400, str(exc))
    await state.recorder.exported(request, principal, {"format": fmt, "filters": filters.as_metadata()})
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="audit-log-{stamp}.{fmt}"',
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    encode = csv_rows if fmt == "csv" else jsonl_rows
    if fmt == "csv":
        await response.write(csv_header())
    if first is not None:
        await response.write(encode(first))
        async for events in chunks:
            await response.write(encode(events))
    await response.write_eof()
    return response


@routes.get("/api/streams")
async def list_streams(request: web.Request) -> web.StreamResponse:
    principal, _ = require(request, "streams", api=True)
    state = request.app[STATE]
    return web.json_response({"data": await stream_states(state.config, principal.scope)})


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())
