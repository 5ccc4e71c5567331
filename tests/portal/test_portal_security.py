"""Access by role: every endpoint denies without a valid token and leaks no data, a viewer
reads events but cannot export or see streams;
CSRF on state-changing requests; injection strings are inert; pages escape HTML."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re

import pytest

EVENT_ID = "evt_0000042"
DATA_PATHS = [
    "/api/events", f"/api/events/{EVENT_ID}", "/api/export?format=csv", "/api/export?format=jsonl",
    "/api/streams", "/events", f"/events/{EVENT_ID}", "/streams",
]
EVENT_DATA = re.compile(r"evt_\d{7}|@\w+\.example|user\.login|\"action\"")
INJECTIONS = ["' OR 1=1 --", '"', "*", "NEAR(", "AND OR NOT", ")", "<script>alert(1)</script>",
              "'; DROP TABLE events; --", "alice\" OR \"1", "x' UNION SELECT body FROM events --"]


def _no_data(body: str) -> None:
    assert not EVENT_DATA.search(body), body[:300]


async def _get(http, url: str, headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None):
    async with http.get(url, headers=headers or {}, cookies=cookies, allow_redirects=False) as r:
        return r.status, await r.text(), r.headers


@pytest.mark.parametrize("path", DATA_PATHS)
async def test_denied_without_a_valid_credential(portal, http, path: str) -> None:
    """No token, a revoked token, a wrong scheme or a forged cookie: denied, no data."""
    api = path.startswith("/api/")
    cases = [
        ({}, None, 401 if api else 303),
        (portal.auth(portal.revoked), None, 401 if api else 303),
        (portal.auth("asd_" + "A" * 43), None, 401 if api else 303),
        ({"Authorization": f"Basic {portal.admin}"}, None, 401 if api else 303),
        ({}, {"asd_session": "forged-session-id"}, 401 if api else 303),
        ({}, {"asd_session": portal.admin}, 401 if api else 303),
    ]
    for headers, cookies, status in cases:
        got, body, resp_headers = await _get(http, portal.url + path, headers, cookies)
        assert got == status, (path, headers, cookies)
        _no_data(body)
        if status == 303:
            assert resp_headers["Location"] == "/login"
    # ... and an admin gets it (the start of it: an export holds all 100,000 events).
    async with http.get(portal.url + path, headers=portal.auth(portal.admin), allow_redirects=False) as r:
        got, body = r.status, (await r.content.read(64 * 1024)).decode(errors="replace")
    assert got == 200
    assert EVENT_DATA.search(body) or path.endswith("streams")


VIEWER_DENIED = {"/api/export?format=csv", "/api/export?format=jsonl", "/api/streams", "/streams"}


@pytest.mark.parametrize("path", DATA_PATHS)
async def test_viewer_reads_events_but_cannot_export_or_see_streams(portal, http, path: str) -> None:
    """A viewer token gets the event list, search and one event (API and pages); exports
    and streams answer 403 with no data."""
    status, body, _ = await _get(http, portal.url + path, portal.auth(portal.viewer))
    if path in VIEWER_DENIED:
        assert status == 403, path
        _no_data(body)
        assert "viewer" in body
    else:
        assert status == 200, path
        assert EVENT_DATA.search(body)


async def test_viewer_session_has_no_export_or_streams(portal, http) -> None:
    """A viewer logs in through the page; the list has no export links and no Streams
    link, and the streams page and the export answer 403 to the viewer's session."""
    csrf = await _login_page(http, portal.url)
    async with http.post(f"{portal.url}/login", data={"token": portal.viewer, "csrf": csrf}, allow_redirects=False) as r:
        assert r.status == 303
    status, html, _ = await _get(http, f"{portal.url}/events?q=alice")
    assert status == 200 and "evt_" in html
    assert "/api/export" not in html and 'href="/streams"' not in html
    assert (await _get(http, f"{portal.url}/streams"))[0] == 403
    assert (await _get(http, f"{portal.url}/api/export?format=csv"))[0] == 403
    status, html, _ = await _get(http, f"{portal.url}/events/{EVENT_ID}")
    assert status == 200 and EVENT_ID in html


async def _login_page(http, url: str) -> str:
    async with http.get(f"{url}/login") as r:
        html = await r.text()
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


async def test_login_requires_csrf_and_a_valid_token(portal, http) -> None:
    """Login without the CSRF token, or with a revoked or bad token creates no session."""
    for form, status in [
        ({"token": portal.admin}, 403),
        ({"token": portal.admin, "csrf": "guess"}, 403),
        ({"token": portal.viewer}, 403),
        ({"token": portal.revoked, "csrf": "fresh"}, 401),
        ({"token": "' OR 1=1 --", "csrf": "fresh"}, 401),
    ]:
        csrf = await _login_page(http, portal.url)
        if form.get("csrf") == "fresh":
            form = {**form, "csrf": csrf}
        async with http.post(f"{portal.url}/login", data=form, allow_redirects=False) as r:
            assert r.status == status, form
            assert "asd_session" not in r.cookies
    status, _, _ = await _get(http, f"{portal.url}/events")
    assert status == 303


async def test_session_works_behind_a_proxy_that_asks_for_basic_credentials(portal, http) -> None:
    """A proxy in front of the portal asking for Basic credentials passes its
    Authorization header on: the session cookie still decides (and still needs its CSRF
    token to log out); a Bearer header with a bad token is refused even with the cookie."""
    basic = {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}
    csrf = await _login_page(http, portal.url)
    async with http.post(f"{portal.url}/login", data={"token": portal.admin, "csrf": csrf},
                         headers=basic, allow_redirects=False) as r:
        assert r.status == 303
    status, html, _ = await _get(http, f"{portal.url}/events", basic)
    assert status == 200 and EVENT_ID[:4] in html
    assert (await _get(http, f"{portal.url}/api/events", basic))[0] == 200
    assert (await _get(http, f"{portal.url}/events", portal.auth("asd_" + "A" * 43)))[0] == 303
    async with http.post(f"{portal.url}/logout", data={}, headers=basic, allow_redirects=False) as r:
        assert r.status == 403
    assert (await _get(http, f"{portal.url}/events", basic))[0] == 200


async def test_session_cookie_flags_and_logout_csrf(portal, http) -> None:
    """The session cookie is HttpOnly + SameSite=Strict; logout needs the session's CSRF token;
    revoking the token ends its sessions."""
    csrf = await _login_page(http, portal.url)
    async with http.post(f"{portal.url}/login", data={"token": portal.admin, "csrf": csrf}, allow_redirects=False) as r:
        assert r.status == 303
        morsel = r.cookies["asd_session"]
        assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    status, html, _ = await _get(http, f"{portal.url}/events")
    assert status == 200 and EVENT_ID[:4] in html
    session_csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
    for data in ({}, {"csrf": csrf}, {"csrf": "x"}):
        async with http.post(f"{portal.url}/logout", data=data, allow_redirects=False) as r:
            assert r.status == 403
    assert (await _get(http, f"{portal.url}/events"))[0] == 200
    async with http.post(f"{portal.url}/logout", data={"csrf": session_csrf}, allow_redirects=False) as r:
        assert r.status == 303
    assert (await _get(http, f"{portal.url}/events"))[0] == 303
    # A new session dies with its token.
    csrf = await _login_page(http, portal.url)
    async with http.post(f"{portal.url}/login", data={"token": portal.acme, "csrf": csrf}, allow_redirects=False) as r:
        assert r.status == 303
    assert (await _get(http, f"{portal.url}/events"))[0] == 200
    await portal.server.tokens.revoke("acme-admin")
    status, body, _ = await _get(http, f"{portal.url}/events")
    assert status == 303
    _no_data(body)


async def test_security_headers(portal, http) -> None:
    """Pages and API answers carry CSP, frame denial and no-store."""
    for path, headers in [("/login", {}), ("/api/events", portal.auth(portal.admin)), ("/api/events", {})]:
        _, _, h = await _get(http, portal.url + path, headers)
        assert "default-src 'none'" in h["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert h["X-Frame-Options"] == "DENY"
        assert h["Cache-Control"] == "no-store"
        assert h["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("text", INJECTIONS)
async def test_injection_strings_in_every_api_filter(portal, http, seeded_oracle, text: str) -> None:
    """SQL / FTS5 / HTML in any filter: never a 500, never more rows than the oracle."""
    h = portal.auth(portal.admin)
    for name in ("q", "action", "actor", "target"):
        async with http.get(f"{portal.url}/api/events", params={name: text, "limit": "1000"}, headers=h) as r:
            assert r.status == 200, (name, await r.text())
            ids = [e["id"] for e in (await r.json())["data"]]
        key = {"action": "actions"}.get(name, name)
        value = (text,) if name == "action" else text
        assert ids == seeded_oracle(**{key: value})[:1000], name
        # Exports under the same filter (narrowed by a second action, which an action
        # filter takes as one more choice): exactly the oracle's events, in its order.
        params = [(name, text), ("action", "billing.updated")]
        actions = (text, "billing.updated") if name == "action" else ("billing.updated",)
        expected = seeded_oracle(**{"actions": actions, **({} if name == "action" else {key: text})})
        for fmt in ("csv", "jsonl"):
            async with http.get(f"{portal.url}/api/export", params=[*params, ("format", fmt)],
                                headers=h) as r:
                assert r.status == 200, (name, fmt, await r.text())
                body = (await r.read()).decode()
            if fmt == "csv":
                exported = [row["id"] for row in csv.DictReader(io.StringIO(body, newline=""))]
            else:
                exported = [json.loads(line)["id"] for line in body.splitlines()]
            assert exported == expected, (name, fmt)
    for name in ("since", "until", "cursor", "limit"):
        async with http.get(f"{portal.url}/api/events", params={name: text}, headers=h) as r:
            assert r.status == 400
            assert "<script>" not in r.headers["Content-Type"]
    async with http.get(f"{portal.url}/api/events/{text}", headers=h) as r:
        assert r.status in (404, 400)


@pytest.mark.parametrize("text", INJECTIONS)
async def test_pages_escape_html_and_survive_injections(portal, http, text: str) -> None:
    """Filter values are reflected escaped; event content with markup is escaped."""
    h = portal.auth(portal.admin)
    params = {"q": text, "actor": text, "target": text, "action": text, "since": text}
    async with http.get(f"{portal.url}/events", params=params, headers=h) as r:
        status, html = r.status, await r.text()
    assert status == 400  # "since" is not a time
    assert "<script>alert(1)</script>" not in html
    params.pop("since")
    async with http.get(f"{portal.url}/events", params=params, headers=h) as r:
        assert r.status == 200
        html = await r.text()
    assert "<script>alert(1)</script>" not in html
    if "<script>" in text:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_event_page_escapes_event_content(portal, http, seeded_events) -> None:
    """An event whose metadata holds markup shows it as text on the detail page."""
    event = next(e for e in seeded_events if "<script>" in e["metadata"]["note"])
    async with http.get(f"{portal.url}/events/{event['id']}", headers=portal.auth(portal.admin)) as r:
        html = await r.text()
    assert r.status == 200
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def _raw(url: str, head: bytes, body: bytes = b"") -> int:
    """The status of a request written byte for byte (what a client library would refuse
    to send: header values that are not UTF-8)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + b"\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % (f"{host}:{port}".encode(), len(body)) + body)
        await writer.drain()
        return int((await reader.readline()).split()[1])
    finally:
        writer.close()


async def test_csrf_tokens_and_forms_that_are_not_utf8_are_refused(portal, http) -> None:
    """A CSRF token (cookie, header or form field) holding bytes that are not UTF-8, or a
    form that cannot be read (not UTF-8, multipart without its boundary or cut short, an
    unknown charset), is a failed check or a bad request, never a 500."""
    form = b"Content-Type: application/x-www-form-urlencoded"
    assert await _raw(portal.url, b"POST /login HTTP/1.1\r\nCookie: asd_login_csrf=\xff\xfe\r\n"
                      + form, b"csrf=abc&token=x") == 403
    csrf = await _login_page(http, portal.url)
    async with http.post(f"{portal.url}/login", data={"token": portal.acme, "csrf": csrf},
                         allow_redirects=False) as r:
        assert r.status == 303
    session = next(c.value for c in http.cookie_jar if c.key == "asd_session")
    cookie = b"Cookie: asd_session=" + session.encode()
    assert await _raw(portal.url, b"POST /api/streams HTTP/1.1\r\nX-CSRF-Token: \xff\r\n" + cookie
                      + b"\r\nContent-Type: application/json", b"{}") == 403
    bad_forms = [(form, b"csrf=\xff"), (b"Content-Type: multipart/form-data", b"csrf=x"),
                 (b"Content-Type: multipart/form-data; boundary=b", b"--b\r\nContent-Disposition:"
                  b' form-data; name="csrf"\r\n\r\nx'),
                 (b"Content-Type: application/x-www-form-urlencoded; charset=bogus", b"csrf=x")]
    for path in (b"/login", b"/logout", b"/streams/new"):
        for content_type, body in bad_forms:
            head = b"POST %s HTTP/1.1\r\n%s\r\n%s" % (path, cookie, content_type)
            assert await _raw(portal.url, head, body) == 400, (path, content_type, body)
    assert (await _get(http, f"{portal.url}/events"))[0] == 200  # still logged in
