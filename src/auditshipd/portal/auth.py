"""Who is asking: bearer tokens, browser sessions and CSRF tokens.

A browser exchanges a token for an opaque random session id in an HttpOnly,
SameSite=Strict cookie, Secure when served over TLS. Sessions live in the portal's
store (:mod:`auditshipd.portal.auth_store`), so any replica serves them; every request
reads the session and re-checks that its token is still active, so revoking a token ends
its sessions on every replica at their next request.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from multidict import MultiDictProxy

from .auth_store import AuthStore, Session, new_csrf_token
from .tokens import Principal

__all__ = ["Session", "authenticate", "csrf_matches", "login_csrf_cookie", "new_csrf_token",
           "read_form"]

SESSION_COOKIE = "asd_session"
LOGIN_CSRF_COOKIE = "asd_login_csrf"


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Whether ``given`` is the CSRF token ``expected`` (in constant time). Either may
    come from a request as bytes that are not UTF-8 (a cookie, a header): those are
    compared as the bytes they were, so they match nothing we issued."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "surrogateescape"),
                               given.encode("utf-8", "surrogateescape"))


async def read_form(request: web.Request) -> MultiDictProxy[str | web.FileField]:
    """The posted form; 400 for a body that is not a form aiohttp can read (text that is
    not UTF-8, multipart without its boundary or cut short, an unknown charset), which no
    browser sends."""
    try:
        return await request.post()
    except (ValueError, LookupError):  # UnicodeDecodeError is a ValueError
        raise web.HTTPBadRequest(text="The form cannot be read: send it as a browser does.") from None


async def authenticate(
    request: web.Request, tokens: AuthStore
) -> tuple[Principal | None, Session | None]:
    """The principal behind a request (bearer token first, else the session cookie).
    An ``Authorization`` header of another scheme is not the portal's (a proxy in front
    asking for Basic credentials passes them on): the session cookie decides."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return await tokens.authenticate(value.strip()), None
    found = await tokens.session(request.cookies.get(cookie_name(request)))
    if found is None:
        return None, None
    return found


def cookie_name(request: web.Request) -> str:
    # __Host- cookies must be Secure, so the prefix is only used over TLS.
    return f"__Host-{SESSION_COOKIE}" if request.secure else SESSION_COOKIE


def login_csrf_cookie(request: web.Request) -> str:
    """The login form's CSRF cookie, ``__Host-`` over TLS like the session's: a browser
    takes that name from this host only, so a sibling host of the same site cannot plant
    a value of its choosing and post the form with it (logging the browser in to the
    sibling's token)."""
    return f"__Host-{LOGIN_CSRF_COOKIE}" if request.secure else LOGIN_CSRF_COOKIE
