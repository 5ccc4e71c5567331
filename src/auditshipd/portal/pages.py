"""Server-rendered pages: login, logout, event list, event detail. The Streams page
lives in :mod:`auditshipd.portal.stream_pages`."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from .auth import cookie_name, csrf_matches, login_csrf_cookie, new_csrf_token, read_form
from .display import summarize
from .event_rows import ACCESS_ACTIONS
from .filters import TRUE_VALUES, BadParameter, parse_filters
from .guard import STATE, require
from .hints import emit_command, from_this_host, token_command
from .paging import match_total, page_links, valid_trail
from .query import EventFilter, format_time
from .roles import allowed
from .signed_export import signing_key
from .store import EventStore
from .tokens import Principal

__all__ = ["routes"]

routes = web.RouteTableDef()
PAGE_SIZE = 50
FILTER_PARAMS = ("q", "actor", "target", "since", "until", "organization")


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    env = request.app[STATE].templates
    html = env.get_template(template).render(request_path=request.path, **context)
    return web.Response(text=html, status=status, content_type="text/html")


def _cookie_flags(request: web.Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "Strict", "secure": request.secure, "path": "/"}


def _deletion_flags(request: web.Request) -> dict[str, Any]:
    """A cookie's deletion carries the attributes it was set with: a browser ignores a
    ``__Host-`` cookie (the session's name over TLS) that comes without ``Secure``."""
    flags = _cookie_flags(request)
    return {k: flags[k] for k in ("path", "secure", "httponly", "samesite")}


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/events")


@routes.get("/login")
async def login_form(request: web.Request, *, error: str = "", status: int = 200) -> web.StreamResponse:
    csrf = new_csrf_token()
    local = from_this_host(request)
    hint = token_command(request.app[STATE].config, local=local)
    response = render(request, "login.html", status=status, csrf=csrf, error=error, principal=None,
                      token_hint=hint, token_hint_local=local)
    response.set_cookie(login_csrf_cookie(request), csrf, max_age=3600, **_cookie_flags(request))
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    form = await read_form(request)
    if not csrf_matches(request.cookies.get(login_csrf_cookie(request)), str(form.get("csrf", ""))):
        return await login_form(request, error="Your login form expired. Please try again.", status=403)
    principal = await state.tokens.authenticate(str(form.get("token", "")).strip())
    if principal is None:
        return await login_form(request, error="Unknown or revoked token.", status=401)
    if not allowed(principal, "read_events"):
        return await login_form(request, error=f"The {principal.role} role may not open the portal.", status=403)
    session_id, _ = await state.tokens.create_session(principal.token_id, state.portal.session_ttl)
    response = web.HTTPSeeOther("/events")
    response.set_cookie(cookie_name(request), session_id, max_age=int(state.portal.session_ttl),
                        **_cookie_flags(request))
    response.del_cookie(login_csrf_cookie(request), **_deletion_flags(request))
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    _, session = await require(request, "read_events", api=False)
    form = await read_form(request)
    if session is None or not csrf_matches(session.csrf, str(form.get("csrf", ""))):
        raise web.HTTPForbidden(text="CSRF check failed.")
    await state.tokens.delete_session(request.cookies.get(cookie_name(request)))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(cookie_name(request), **_deletion_flags(request))
    raise response


def _query_string(pairs: list[tuple[str, str]], **extra: str) -> str:
    return urlencode([*pairs, *extra.items()])


def _export_links(pairs: list[tuple[str, str]], signed: bool) -> dict[str, str]:
    """The export links; when exports are signed, fixed to now (``as_of``) so an export
    and its manifest agree."""
    fixed = {"as_of": format_time(_dt.datetime.now(_dt.timezone.utc))} if signed else {}
    links = {}
    for fmt in ("csv", "jsonl"):
        query = _query_string(pairs, format=fmt, **fixed)
        links[f"export_{fmt}"] = "/api/export?" + query
        links[f"manifest_{fmt}"] = "/api/export.manifest?" + query if signed else ""
    return links


def _base_context(principal: Principal, session: Any) -> dict[str, Any]:
    return {
        "principal": principal, "csrf": session.csrf if session else "",
        "can_export": allowed(principal, "export"), "can_streams": allowed(principal, "streams"),
    }


def _input_time(filters: EventFilter, name: str, raw: str) -> str:
    """The value for a ``datetime-local`` input (UTC, no offset): it shows nothing for
    ``...Z`` or an offset, which the API and shared links may carry."""
    when = getattr(filters, name)
    if when is None:
        return raw
    # the input takes milliseconds at most: a finer bound is rounded outwards (earlier for
    # ``since``, later for ``until``), so submitting the form again never drops an event
    millis, rest = divmod(when.microsecond, 1000)
    if rest and name == "until":
        when += _dt.timedelta(microseconds=1000 - rest)
        millis = when.microsecond // 1000
    shown = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{shown}.{millis:03d}" if millis else shown


@routes.get("/events")
async def events_page(request: web.Request) -> web.StreamResponse:
    principal, session = await require(request, "read_events", api=False)
    state = request.app[STATE]
    store: EventStore = state.store
    form = {name: request.query.get(name, "") for name in FILTER_PARAMS}
    selected = [a for a in request.query.getall("action", []) if a]
    pairs = [(k, v) for k, v in form.items() if v] + [("action", a) for a in selected]
    include_access = request.query.get("include_access", "").strip().lower() in TRUE_VALUES
    if include_access:
        pairs.append(("include_access", "true"))
    actions = await store.actions(principal.scope)
    context = _base_context(principal, session) | {
        "form": form, "selected": selected, "actions": actions,
        "events": [], "links": None, "total": None, "error": "",
        "filtered": bool(pairs),
        # What the portal records about itself: a first run that has only these has no events yet.
        # Only an operator is shown how to emit one: an organization's admin runs no host.
        "first_run": principal.scope is None and not (set(actions) - ACCESS_ACTIONS),
        "include_access": include_access,
        "emit_hint": emit_command(state.config),
        **_export_links(pairs, signing_key(state.config) is not None),
    }
    cursor = request.query.get("cursor") or None
    try:
        filters = parse_filters(request.query, principal.scope)
        page = await store.query(filters, cursor, PAGE_SIZE)
        total = await match_total(store, filters)
    except BadParameter as exc:
        context["error"] = f"{exc.param}: {exc.message}"
        return render(request, "events.html", status=400, **context)
    except ValueError:
        context["error"] = "This page link is no longer valid."
        return render(request, "events.html", status=400, **context)
    form["since"] = _input_time(filters, "since", form["since"])
    form["until"] = _input_time(filters, "until", form["until"])
    await state.recorder.viewed(
        request, principal,
        {"view": "search", "filters": filters.as_metadata(), "results": len(page.events)}, session,
        page.events,
    )
    context["events"] = [summarize(e) for e in page.events]
    context["total"] = total
    trail = valid_trail(store, request.query.getall("prev", [])) if cursor else []
    context["links"] = page_links("/events", pairs, cursor, trail, page.next_cursor)
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
    principal, session = await require(request, "read_events", api=False)
    state = request.app[STATE]
    event_id = request.match_info.get("event_id") or request.query.get("id", "")
    event = await state.store.get(event_id, organization=principal.scope)
    await state.recorder.viewed(
        request, principal, {"view": "event", "event": event_id, "found": event is not None}, session,
        [event] if event is not None else [],
    )
    context = _base_context(principal, session)
    if event is None:
        return render(request, "not_found.html", status=404, **context, event_id=event_id)
    return render(
        request, "event.html", **context, event=summarize(event),
        event_json=json.dumps(event, indent=2, ensure_ascii=False, sort_keys=False),
        back_url=request.headers.get("Referer", "") if _same_origin_events(request) else "/events",
    )


def _same_origin_events(request: web.Request) -> bool:
    referer = request.headers.get("Referer", "")
    return referer.startswith(f"{request.scheme}://{request.host}/events")
