"""The Streams page: every stream's delivery state, and for an organization's admin its
self-service streams with forms to create, edit, pause, resume, delete and test them.

Plain HTML forms (no script needed), each carrying the session's CSRF token; the work is
:class:`~auditshipd.portal.stream_admin.StreamAdmin`'s, the same as the API's.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from . import paging
from .auth import csrf_matches, read_form
from .guard import STATE, require
from .pages import _base_context, render
from .paging import match_total
from .query import EventFilter
from .stream_admin import NotFound, RateLimited, TestAnswer
from .stream_api import HANDLED_ERRORS, stream_error
from .stream_defs import STREAM_TYPES, StreamChange, StreamDefinition, shown_option
from .stream_forms import form_fields, options_from_form
from .streams import self_service_rows, stream_states
from .tokens import Principal

__all__ = ["routes"]

routes = web.RouteTableDef()


async def _form(request: web.Request) -> tuple[Principal, Any]:
    """The principal of a form post that changes a stream, its CSRF token checked."""
    principal, session = await require(request, "streams", api=False)
    form = await read_form(request)
    if session is None or not csrf_matches(session.csrf, str(form.get("csrf", ""))):
        raise web.HTTPForbidden(text="CSRF check failed: reload the page and try again.")
    return principal, form


async def _streams_page(request: web.Request, *, status: int = 200, notice: str = "",
                        error: str = "", test: TestAnswer | None = None,
                        tested: str = "") -> web.Response:
    principal, session = await require(request, "streams", api=False)
    state = request.app[STATE]
    files = await stream_states(state.config, principal.scope)
    own = await self_service_rows(state.streams, principal.scope, state.config, time.time())
    # counted up to the search's cap: an exact count of a big store is a scan per view
    indexed = await match_total(state.store, EventFilter(organization=principal.scope),
                                paging.TOTAL_CAP)
    return render(request, "streams.html", status=status, **_base_context(principal, session),
                  streams=files, own=own, indexed=indexed, types=STREAM_TYPES,
                  can_create=principal.scope is not None, notice=notice, error=error,
                  test=test, tested=tested,
                  limit=state.streams.portal.max_streams_per_organization)


@routes.get("/streams")
async def streams_page(request: web.Request) -> web.StreamResponse:
    done = request.query.get("done", "")
    name = request.query.get("stream", "")
    notice = f"Stream {name} {done}." if done in ("created", "saved", "paused", "resumed",
                                                  "deleted") and name else ""
    return await _streams_page(request, notice=notice)


def _redirect(done: str, name: str) -> web.HTTPSeeOther:
    from urllib.parse import urlencode

    return web.HTTPSeeOther("/streams?" + urlencode({"done": done, "stream": name}))


async def _form_page(request: web.Request, kind: str, d: StreamDefinition | None, *,
                     status: int = 200, error: str = "", param: str | None = None,
                     values: dict[str, Any] | None = None, name: str = "") -> web.Response:
    principal, session = await require(request, "streams", api=False)
    admin = request.app[STATE].streams
    st = admin.sink_types()[kind]
    fields = form_fields(st, values if values is not None else (d.options if d else {}),
                         d.secret_names if d else (), stored=values is None)
    return render(request, "stream_form.html", status=status,
                  **_base_context(principal, session), stream=d, kind=kind, fields=fields,
                  error=error, param=param or "", name=name or (d.name if d else ""))


@routes.get("/streams/new")
async def new_stream_form(request: web.Request) -> web.StreamResponse:
    await require(request, "streams", api=False)
    kind = request.query.get("type", "")
    if kind not in STREAM_TYPES:
        return await _streams_page(request, status=400, error="Choose a stream type.")
    return await _form_page(request, kind, None)


@routes.post("/streams/new")
async def create_stream(request: web.Request) -> web.StreamResponse:
    principal, form = await _form(request)
    admin = request.app[STATE].streams
    kind = str(form.get("type", ""))
    name = str(form.get("name", "")).strip()
    if kind not in STREAM_TYPES:
        return await _streams_page(request, status=400, error="Choose a stream type.")
    try:
        options = options_from_form(admin.sink_types()[kind], form, editing=False)
        await admin.create(request, principal, StreamChange(name=name, type=kind, options=options))
    except HANDLED_ERRORS as exc:
        status, message, param = stream_error(exc, principal.scope)
        values = {k: v for k, v in form.items() if k not in ("csrf", "name", "type")}
        return await _form_page(request, kind, None, status=status, error=message, param=param,
                                values=values, name=name)
    raise _redirect("created", name)


async def _find(request: web.Request, principal: Principal) -> StreamDefinition:
    try:
        return await request.app[STATE].streams.find(principal, request.match_info["id"])
    except NotFound:
        raise web.HTTPNotFound(text="No such stream.") from None


@routes.get("/streams/{id}/edit")
async def edit_stream_form(request: web.Request) -> web.StreamResponse:
    principal, _ = await require(request, "streams", api=False)
    d = await _find(request, principal)
    return await _form_page(request, d.type, d)


@routes.post("/streams/{id}/edit")
async def edit_stream(request: web.Request) -> web.StreamResponse:
    principal, form = await _form(request)
    admin = request.app[STATE].streams
    d = await _find(request, principal)
    try:
        options = options_from_form(admin.sink_types()[d.type], form, editing=True,
                                    stored=d.options)
        await admin.update(request, principal, d.id, StreamChange(options=options))
    except HANDLED_ERRORS as exc:
        status, message, param = stream_error(exc, principal.scope)
        # shown again as typed; an input the form did not send keeps its stored value
        stored = {k: shown_option(v) for k, v in d.options.items()}
        typed = {k: v for k, v in form.items() if k not in ("csrf", "name", "type")}
        return await _form_page(request, d.type, d, status=status, error=message, param=param,
                                values=stored | typed)
    raise _redirect("saved", d.name)


@routes.post("/streams/{id}/{action:pause|resume|delete}")
async def stream_action(request: web.Request) -> web.StreamResponse:
    principal, _form_data = await _form(request)
    admin = request.app[STATE].streams
    d = await _find(request, principal)
    action = request.match_info["action"]
    try:
        if action == "delete":
            await admin.delete(request, principal, d.id)
        else:
            await admin.set_paused(request, principal, d.id, action == "pause")
    except HANDLED_ERRORS as exc:
        return await _streams_page(request, status=stream_error(exc, principal.scope)[0],
                                   error=stream_error(exc, principal.scope)[1])
    raise _redirect({"pause": "paused", "resume": "resumed", "delete": "deleted"}[action], d.name)


@routes.post("/streams/{id}/test")
async def test_stream(request: web.Request) -> web.StreamResponse:
    principal, _form_data = await _form(request)
    d = await _find(request, principal)
    try:
        answer = await request.app[STATE].streams.send_test(request, principal, d.id)
    except RateLimited as exc:
        seconds = max(1, int(exc.retry_after + 0.999))
        response = await _streams_page(
            request, status=429, error=f"Too many test events for {d.name}: try again in"
                                       f" {seconds}s.")
        response.headers["Retry-After"] = str(seconds)
        return response
    except HANDLED_ERRORS as exc:
        status, message, _ = stream_error(exc, principal.scope)
        return await _streams_page(request, status=status, error=message)
    return await _streams_page(request, test=answer, tested=d.name)
