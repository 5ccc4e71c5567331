"""Server-rendered pages: login, logout, event list, event detail, streams."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from .auth import LOGIN_CSRF_COOKIE, cookie_name, csrf_matches, new_csrf_token
from .filters import BadParameter, parse_filters
from .guard import STATE, require_admin
from .query import EventFilter
from .store import EventStore
from .streams import stream_states
from .tokens import Principal

__all__ = ["routes"]

routes = web.RouteTableDef()
PAGE_SIZE = 50
FILTER_PARAMS = ("q", "actor", "target", "since", "until")


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    env = request.app[STATE].templates
    html = env.get_template(template).render(request_path=request.path, **context)
    return web.Response(text=html, status=status, content_type="text/html")


def _cookie_flags(request: web.Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "Strict", "secure": request.secure, "path": "/"}


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/events")


@routes.get("/login")
async def login_form(request: web.Request, *, error: str = "", status: int = 200) -> web.StreamResponse:
    csrf = new_csrf_token()
    response = render(request, "login.html", status=status, csrf=csrf, error=error, principal=None)
    response.set_cookie(LOGIN_CSRF_COOKIE, csrf, max_age=3600, **_cookie_flags(request))
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    form = await request.post()
    if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), str(form.get("csrf", ""))):
        return await login_form(request, error="Your login form expired. Please try again.", status=403)
    principal = state.tokens.authenticate(str(form.get("token", "")).strip())
    if principal is None:
        return await login_form(request, error="Unknown or revoked token.", status=401)
    if not principal.is_admin:
        return await login_form(request, error="Only admin tokens may open the audit log portal.", status=403)
    session_id, _ = state.sessions.create(principal.token_id)
    response = web.HTTPSeeOther("/events")
    response.set_cookie(cookie_name(request), session_id, max_age=int(state.portal.session_ttl),
                        **_cookie_flags(request))
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/")
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    _, session = require_admin(request, api=False)
    form = await request.post()
    if session is None or not csrf_matches(session.csrf, str(form.get("csrf", ""))):
        raise web.HTTPForbidden(text="CSRF check failed.")
    state.sessions.delete(request.cookies.get(cookie_name(request)))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(cookie_name(request), path="/")
    raise response


def _summary(event: dict[str, Any]) -> dict[str, Any]:
    def who(party: Any) -> str:
        if not isinstance(party, dict):
            return ""
        return str(party.get("email") or party.get("name") or party.get("type") or "")

    targets = event.get("targets") if isinstance(event.get("targets"), list) else []
    org = event.get("organization") if isinstance(event.get("organization"), dict) else {}
    context = event.get("context") if isinstance(event.get("context"), dict) else {}
    return {
        "id": str(event.get("id", "")),
        "occurred_at": str(event.get("occurred_at", "")),
        "action": str(event.get("action", "")),
        "actor": who(event.get("actor")),
        "targets": ", ".join(filter(None, (who(t) for t in targets))),
        "organization": str(org.get("slug") or ""),
        "location": str(context.get("location") or ""),
    }


def _query_string(pairs: list[tuple[str, str]], **extra: str) -> str:
    return urlencode([*pairs, *extra.items()])


def _base_context(principal: Principal, session: Any) -> dict[str, Any]:
    return {"principal": principal, "csrf": session.csrf if session else ""}


@routes.get("/events")
async def events_page(request: web.Request) -> web.StreamResponse:
    principal, session = require_admin(request, api=False)
    state = request.app[STATE]
    store: EventStore = state.store
    form = {name: request.query.get(name, "") for name in FILTER_PARAMS}
    selected = [a for a in request.query.getall("action", []) if a]
    pairs = [(k, v) for k, v in form.items() if v] + [("action", a) for a in selected]
    context = _base_context(principal, session) | {
        "form": form, "selected": selected, "actions": await store.actions(principal.scope),
        "events": [], "next_url": None, "first_url": None, "error": "",
        "export_csv": "/api/export?" + _query_string(pairs, format="csv"),
        "export_jsonl": "/api/export?" + _query_string(pairs, format="jsonl"),
    }
    cursor = request.query.get("cursor") or None
    try:
        filters = parse_filters(request.query, principal.scope)
        page = await store.query(filters, cursor, PAGE_SIZE)
    except BadParameter as exc:
        context["error"] = f"{exc.param}: {exc.message}"
        return render(request, "events.html", status=400, **context)
    except ValueError:
        context["error"] = "This page link is no longer valid."
        return render(request, "events.html", status=400, **context)
    await state.recorder.viewed(
        request, principal, {"view": "search", "filters": filters.as_metadata(), "results": len(page.events)}
    )
    context["events"] = [_summary(e) for e in page.events]
    if page.next_cursor:
        context["next_url"] = "/events?" + _query_string(pairs, cursor=page.next_cursor)
    if cursor:
        context["first_url"] = "/events?" + _query_string(pairs)
    return render(request, "events.html", **context)


def event_url(event_id: Any) -> str:
    """The link to an event's page. The id is one path segment (``/`` encoded too); an id
    that is all dots would be a ``.``/``..`` segment browsers resolve away even when
    percent-encoded, so it goes in the query string instead."""
    text = str(event_id)
    if text.strip(".") == "":
        return "/event?" + urlencode({"id": text})
    return "/events/" + quote(text, safe="")


@routes.get("/event")
@routes.get("/events/{event_id}")
async def event_page(request: web.Request) -> web.StreamResponse:
    principal, session = require_admin(request, api=False)
    state = request.app[STATE]
    event_id = request.match_info.get("event_id") or request.query.get("id", "")
    event = await state.store.get(event_id, organization=principal.scope)
    await state.recorder.viewed(request, principal, {"view": "event", "event": event_id, "found": event is not None})
    context = _base_context(principal, session)
    if event is None:
        return render(request, "not_found.html", status=404, **context, event_id=event_id)
    return render(
        request, "event.html", **context, event=_summary(event),
        event_json=json.dumps(event, indent=2, ensure_ascii=False, sort_keys=False),
        back_url=request.headers.get("Referer", "") if _same_origin_events(request) else "/events",
    )


def _same_origin_events(request: web.Request) -> bool:
    referer = request.headers.get("Referer", "")
    return referer.startswith(f"{request.scheme}://{request.host}/events")


@routes.get("/streams")
async def streams_page(request: web.Request) -> web.StreamResponse:
    principal, session = require_admin(request, api=False)
    state = request.app[STATE]
    streams = await stream_states(state.config, principal.scope)
    indexed = await state.store.count(EventFilter(organization=principal.scope))
    return render(request, "streams.html", **_base_context(principal, session), streams=streams, indexed=indexed)
