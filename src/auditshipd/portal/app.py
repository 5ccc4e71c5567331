"""The aiohttp application: routes, templates, static files and security headers."""

from __future__ import annotations

from pathlib import Path

import jinja2
from aiohttp import web

from ..hostcheck import allowed_hosts_middleware, default_allowed_hosts
from . import api, pages, stream_api, stream_pages
from .display import exact_text, time_html
from .guard import STATE, PortalState
from .outage import StoreOutage

__all__ = ["build_app", "template_environment"]

STATIC_DIR = Path(__file__).with_name("static")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("auditshipd.portal", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["event_url"] = pages.event_url
    env.filters["when"] = time_html
    env.filters["exact_time"] = exact_text
    return env


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    if request.secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "public, max-age=3600")
    else:
        headers["Cache-Control"] = "no-store"


def build_app(state: PortalState, listen_host: str | None = None) -> web.Application:
    """The portal app; ``listen_host`` (default ``portal.listen``'s) is where it listens,
    which the Host check allows when ``portal.allowed_hosts`` is empty."""
    host = listen_host or state.portal.host
    allowed = state.portal.allowed_hosts or default_allowed_hosts(host)
    app = web.Application(
        client_max_size=64 * 1024,
        middlewares=[allowed_hosts_middleware(allowed, host), StoreOutage().middleware],
    )
    app[STATE] = state
    app.add_routes(api.routes)
    app.add_routes(stream_api.routes)
    app.add_routes(stream_pages.routes)
    app.add_routes(pages.routes)
    app.router.add_static("/static/", STATIC_DIR, name="static")
    app.on_response_prepare.append(_security_headers)
    return app

