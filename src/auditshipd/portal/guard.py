"""What every portal handler shares: the app's state and the admin-only gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web

from .access import AccessRecorder
from .auth import Session, authenticate
from .auth_store import AuthStore
from .config import PortalConfig
from .roles import Permission, allowed
from .store import EventStore
from .tokens import Principal

__all__ = ["STATE", "PortalState", "json_error", "require"]


@dataclass
class PortalState:
    config: Any  # auditshipd.config.Config
    portal: PortalConfig
    store: EventStore
    tokens: AuthStore  # tokens and browser sessions, in the store
    recorder: AccessRecorder
    templates: jinja2.Environment
    streams: Any = None  # StreamAdmin: the self-service streams (stream_admin.py)


STATE: web.AppKey[PortalState] = web.AppKey("portal_state", PortalState)


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def require(
    request: web.Request, permission: Permission, *, api: bool
) -> tuple[Principal, Session | None]:
    """The principal of the request if its role grants ``permission``, else raise: 401
    (API) / redirect to the login page (pages) when unauthenticated, 403 when the role
    does not allow it. No data in either body."""
    state = request.app[STATE]
    principal, session = await authenticate(request, state.tokens)
    if principal is None:
        if api:
            raise web.HTTPUnauthorized(
                text='{"error": "authentication required"}',
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="auditshipd"'},
            )
        raise web.HTTPSeeOther("/login")
    if not allowed(principal, permission):
        if api:
            raise web.HTTPForbidden(
                text=f'{{"error": "the {principal.role} role may not do this"}}',
                content_type="application/json",
            )
        raise web.HTTPForbidden(text=f"The {principal.role} role may not open this page.")
    return principal, session

