"""``/api/streams``: list, create, edit, pause/resume, delete self-service streams and send
them a test event. Same authentication as the rest of the API (a bearer token, or a
browser session whose CSRF token comes in ``X-CSRF-Token`` for every change); the work is
:class:`~auditshipd.portal.stream_admin.StreamAdmin`'s, shared with the page."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..netguard import BlockedDestination
from .auth import csrf_matches
from .guard import STATE, json_error, require
from .stream_admin import NotFound, RateLimited
from .stream_defs import StreamRequestError, parse_change, public_view
from .stream_secrets import SecretsKeyError, SecretsKeyMissing
from .stream_store import StreamChanged, StreamLimitReached, StreamNameTaken
from .streams import self_service_rows, stream_states
from .tokens import Principal

__all__ = ["HANDLED_ERRORS", "routes", "stream_error"]

routes = web.RouteTableDef()


async def _changer(request: web.Request) -> Principal:
    """The principal of a request that changes a stream: an admin, and a browser
    session must send its CSRF token (a bearer token is no ambient credential)."""
    principal, session = await require(request, "streams", api=True)
    if session is not None and not csrf_matches(session.csrf, request.headers.get("X-CSRF-Token")):
        raise web.HTTPForbidden(text='{"error": "CSRF check failed: send X-CSRF-Token"}',
                                content_type="application/json")
    return principal


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "the body must be JSON"}',
                                 content_type="application/json") from None


def stream_error(exc: Exception, organization: str | None) -> tuple[int, str, str | None]:
    """(status, message, param) of a stream operation's failure."""
    if isinstance(exc, StreamRequestError):
        return 400, exc.message, exc.param
    if isinstance(exc, BlockedDestination):
        return 400, str(exc), "options.url"
    if isinstance(exc, NotFound):
        return 404, "no such stream", None
    if isinstance(exc, StreamNameTaken):
        return 409, f"a stream named {exc} exists already", "name"
    if isinstance(exc, StreamChanged):
        return 409, "the stream was changed meanwhile: read it again and retry", None
    if isinstance(exc, StreamLimitReached):
        return 409, f"organization {organization} has the most streams allowed", None
    if isinstance(exc, SecretsKeyMissing):
        return 503, "stream secrets cannot be stored: the portal has no secrets key", None
    if isinstance(exc, SecretsKeyError):
        return 503, str(exc), None
    raise exc


HANDLED_ERRORS = (StreamRequestError, BlockedDestination, NotFound, StreamNameTaken,
                  StreamChanged, StreamLimitReached, SecretsKeyError)


def _failed(exc: Exception, principal: Principal) -> web.Response:
    status, message, param = stream_error(exc, principal.scope)
    return json_error(status, message, **({"param": param} if param else {}))


@routes.get("/api/streams")
async def list_streams(request: web.Request) -> web.StreamResponse:
    principal, _ = await require(request, "streams", api=True)
    state = request.app[STATE]
    files = await stream_states(state.config, principal.scope)
    for row in files:
        row["source"] = "config"
    portal = await self_service_rows(state.streams, principal.scope, state.config, time.time())
    return web.json_response({"data": portal + files})


@routes.post("/api/streams")
async def create_stream(request: web.Request) -> web.StreamResponse:
    principal = await _changer(request)
    admin = request.app[STATE].streams
    try:
        d = await admin.create(request, principal, parse_change(await _body(request), creating=True))
    except HANDLED_ERRORS as exc:
        return _failed(exc, principal)
    return web.json_response({"data": public_view(d)}, status=201)


@routes.get("/api/streams/{id}")
async def get_stream(request: web.Request) -> web.StreamResponse:
    principal, _ = await require(request, "streams", api=True)
    try:
        d = await request.app[STATE].streams.find(principal, request.match_info["id"])
    except NotFound as exc:
        return _failed(exc, principal)
    return web.json_response({"data": public_view(d)})


@routes.patch("/api/streams/{id}")
async def edit_stream(request: web.Request) -> web.StreamResponse:
    principal = await _changer(request)
    admin = request.app[STATE].streams
    try:
        change = parse_change(await _body(request), creating=False)
        d = await admin.update(request, principal, request.match_info["id"], change)
    except HANDLED_ERRORS as exc:
        return _failed(exc, principal)
    return web.json_response({"data": public_view(d)})


@routes.delete("/api/streams/{id}")
async def delete_stream(request: web.Request) -> web.StreamResponse:
    principal = await _changer(request)
    try:
        await request.app[STATE].streams.delete(request, principal, request.match_info["id"])
    except HANDLED_ERRORS as exc:
        return _failed(exc, principal)
    return web.Response(status=204)


@routes.post("/api/streams/{id}/test")
async def test_stream(request: web.Request) -> web.StreamResponse:
    principal = await _changer(request)
    try:
        answer = await request.app[STATE].streams.send_test(request, principal,
                                                            request.match_info["id"])
    except RateLimited as exc:
        seconds = max(1, int(exc.retry_after + 0.999))
        return web.json_response({"error": "too many test events for this stream; try again"
                                           f" in {seconds}s"}, status=429,
                                 headers={"Retry-After": str(seconds)})
    except HANDLED_ERRORS as exc:
        return _failed(exc, principal)
    return web.json_response({"data": answer.as_json()})
