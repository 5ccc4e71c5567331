"""The portal's pages over TLS and as an organization sees them: the ``__Host-`` session
cookie is set and deleted with ``Secure`` (a browser ignores a deletion without it), an
organization's admin is never shown the operator's first-run command, and sub-second
time bounds survive the form being submitted again."""

from __future__ import annotations

import html
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from portal_env import make_config
from tests.servers.mosquitto import make_test_pki

from auditshipd.portal.server import start_portal
from auditshipd.portal.store_sqlite import SQLiteEventStore

EVENTS = [
    {"id": f"ev-{i}", "action": "user.login", "occurred_at": f"2026-01-01T10:00:00.{i}00Z",
     "actor": {"type": "user", "email": f"u{i}@globex.example"}, "organization": {"slug": "globex"}}
    for i in range(1, 4)
]


async def _portal(tmp_path: Path, extra: str = "") -> Any:
    database = tmp_path / "portal.sqlite3"
    store = SQLiteEventStore(database)
    await store.open()
    await store.insert_events(EVENTS)
    await store.close()
    return await start_portal(make_config(tmp_path, database, extra), port=0)


@pytest.fixture
async def tls_portal(tmp_path: Path) -> AsyncIterator[tuple[Any, ssl.SSLContext]]:
    ca, cert, key = make_test_pki(tmp_path / "pki")
    server = await _portal(tmp_path, f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    try:
        yield server, ssl.create_default_context(cafile=str(ca))
    finally:
        await server.close()


async def _log_in(http: aiohttp.ClientSession, url: str, token: str) -> aiohttp.ClientResponse:
    async with http.get(f"{url}/login") as r:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)
    async with http.post(f"{url}/login", data={"csrf": csrf, "token": token},
                         allow_redirects=False) as r:
        assert r.status == 303
        return r


def _set_cookies(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.getall("Set-Cookie", [])}


async def test_over_tls_the_session_cookie_is_set_and_deleted_secure(tls_portal) -> None:
    server, context = tls_portal
    url = server.url.replace("127.0.0.1", "localhost")
    token = await server.tokens.create("root-admin", "admin")
    jar = aiohttp.CookieJar()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), cookie_jar=jar) as http:
        login = await _log_in(http, url, token)
        cookies = _set_cookies(login)
        assert "Secure" in cookies["__Host-asd_session"]
        assert "Secure" in cookies["__Host-asd_login_csrf"]  # its deletion, like its setting
        async with http.get(f"{url}/events") as r:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)
        async with http.post(f"{url}/logout", data={"csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 303
            deletion = _set_cookies(r)["__Host-asd_session"]
        assert "Max-Age=0" in deletion and "Secure" in deletion and "Path=/" in deletion
    assert "__Host-asd_session" not in {c.key for c in jar}


async def test_over_tls_the_login_form_takes_only_its_host_only_cookie(tls_portal) -> None:
    """Over TLS the login form's CSRF cookie is ``__Host-`` prefixed, which a browser never
    takes from another host: a sibling host of the same site (``evil.example.com`` next
    to ``audit.example.com``) that sets a plain ``asd_login_csrf`` cookie for the whole
    domain and posts the login form with that value and its own token is refused, so it
    cannot log the browser in to its token's session."""
    server, context = tls_portal
    url = server.url.replace("127.0.0.1", "localhost")
    token = await server.tokens.create("attacker", "admin", "acme")
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(f"{url}/login") as r:
            set_cookie = _set_cookies(r)["__Host-asd_login_csrf"]
        assert "Secure" in set_cookie and "Path=/" in set_cookie and "Domain" not in set_cookie
        tossed = {"Cookie": "asd_login_csrf=chosen-by-a-sibling"}
        async with http.post(f"{url}/login", data={"csrf": "chosen-by-a-sibling", "token": token},
                             headers=tossed, allow_redirects=False) as r:
            assert r.status == 403
            assert "__Host-asd_session" not in _set_cookies(r)


async def test_first_run_command_is_for_operators_only(tmp_path: Path) -> None:
    """The store holds only globex's events: acme's admin sees an empty list, not the
    operator's command to emit a first event on the host."""
    server = await _portal(tmp_path)
    try:
        acme = await server.tokens.create("acme-admin", "admin", "acme")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await _log_in(http, server.url, acme)
            async with http.get(f"{server.url}/events") as r:
                page = await r.text()
        assert r.status == 200
        assert "auditshipd emit" not in page and str(tmp_path) not in page
    finally:
        await server.close()


async def test_sub_second_bounds_survive_the_form(tmp_path: Path) -> None:
    """A link's since/until with a fraction is shown back with it: submitting the form as
    shown finds the same events; an operator's page has an organization field."""
    server = await _portal(tmp_path)
    try:
        admin = await server.tokens.create("root-admin", "admin")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await _log_in(http, server.url, admin)
            link = {"since": "2026-01-01T10:00:00.15Z", "until": "2026-01-01T10:00:00.3005Z"}
            async with http.get(f"{server.url}/events", params=link) as r:
                page = html.unescape(await r.text())
            shown = {name: re.search(rf'name="{name}" value="([^"]*)"', page).group(1)
                     for name in ("since", "until")}
            assert shown == {"since": "2026-01-01T10:00:00.150", "until": "2026-01-01T10:00:00.301"}
            assert 'name="organization"' in page
            async with http.get(f"{server.url}/events", params=shown) as r:
                again = await r.text()
        found = sorted(set(re.findall(r"ev-\d", page)))
        assert found == ["ev-2", "ev-3"] and sorted(set(re.findall(r"ev-\d", again))) == found
    finally:
        await server.close()
