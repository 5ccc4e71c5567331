"""Pages and endpoints under the credentials that must not open them, on both store
backends: an organization's token or session sees only its organization on the event list
and the event pages; the stream pages refuse every change (and the edit form) to no
credential, a viewer, a revoked token's session, another organization's admin and a forged
or garbled session cookie, leaving the stream as it was; export manifests and
``/api/streams`` refuse revoked and forged credentials."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from streams_env import KEY, StreamsPortal, streams_config

from auditshipd.integrity.keys import generate_key
from auditshipd.testing import WebhookReceiver

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
ACTION_RE = re.compile(r'name="action" value="([^"]+)"')
ROW_RE = re.compile(r'class="event-row" data-href="/events/([^"]+)"')


def _event(event_id: str, org: str | None, action: str, actor: str, target: str, note: str,
           location: str, minute: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": event_id, "action": action, "version": 1,
        "occurred_at": f"2026-04-0{1 + minute % 5}T09:{minute:02d}:00.000Z",
        "actor": {"type": "user", "email": actor},
        "targets": [{"type": "project", "name": target}],
        "context": {"location": location},
        "metadata": {"note": note},
    }
    if org is not None:
        event["organization"] = {"slug": org}
    return event


A_EVENTS = [
    _event(f"evt_a_{i:02d}", "acme", action, f"alice{i}@acme.example", f"Ledger {i}",
           f"acme-note-{i}", f"198.51.100.{i}", i)
    for i, action in enumerate(["invoice.approved", "user.login", "invoice.approved", "user.login"])
]
B_EVENTS = [
    _event(f"evt_b_{i:02d}", "globex", action, f"cfo{i}@globex-board.example", f"Project Hydra {i}",
           f"hydra-term-sheet-{4410 + i}", f"203.0.113.{70 + i}", 10 + i)
    for i, action in enumerate(["merger.approved", "user.login", "merger.approved", "board.convened"])
]
# Events of no organization: an organization's credential does not see them either.
N_EVENTS = [_event("evt_n_00", None, "system.rotated", "root@ops-internal.example", "Vault",
                   "vault-rotation-991", "192.0.2.9", 20)]
A_ACTIONS = {e["action"] for e in A_EVENTS}
A_IDS = [e["id"] for e in A_EVENTS]


def _foreign_values() -> list[str]:
    """What a page shown to acme must never contain: the other events' ids and values."""
    values = ["globex", "merger.approved", "board.convened", "system.rotated"]
    for e in B_EVENTS + N_EVENTS:
        values += [e["id"], e["actor"]["email"], e["targets"][0]["name"], e["metadata"]["note"],
                   e["context"]["location"]]
    return values


FOREIGN = _foreign_values()


def _foreign_in(body: str) -> list[str]:
    return [v for v in FOREIGN if v in body]


@pytest.fixture
async def env(tmp_path: Path, portal_database: str,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StreamsPortal]:
    """A portal on a store of each backend holding acme's, globex's and unscoped events,
    with a secrets key, an export signing key, and tokens of every kind."""
    from auditshipd.portal import start_portal
    from auditshipd.portal.backend import event_store

    monkeypatch.setenv("AUDITSHIPD_SECRETS_KEY", KEY)
    store = event_store(portal_database)
    await store.open()
    try:
        await store.insert_events(A_EVENTS + B_EVENTS + N_EVENTS)
    finally:
        await store.close()
    generate_key(tmp_path / "signing")
    config = streams_config(tmp_path, portal_database,
                            f'\n[integrity]\nsigning_key = "{tmp_path / "signing"}"\n')
    server = await start_portal(config, port=0)
    try:
        yield await StreamsPortal.start(server, Path(config.journal.path))
    finally:
        await server.close()


@pytest.fixture
def rx() -> Any:
    with WebhookReceiver() as receiver:
        yield receiver


def _browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _login(env: StreamsPortal, browser: aiohttp.ClientSession, token: str) -> str:
    """Log ``browser`` in with ``token`` (any role); the session's CSRF token."""
    async with browser.get(f"{env.url}/login") as r:
        csrf = CSRF_RE.search(await r.text()).group(1)
    async with browser.post(f"{env.url}/login", data={"token": token, "csrf": csrf},
                            allow_redirects=False) as r:
        assert r.status == 303, await r.text()
    async with browser.get(f"{env.url}/events") as r:
        assert r.status == 200
        return CSRF_RE.search(await r.text()).group(1)


def _session_cookie(env: StreamsPortal, browser: aiohttp.ClientSession) -> str:
    return browser.cookie_jar.filter_cookies(yarl.URL(env.url))["asd_session"].value


async def _get(client: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str, Any]:
    async with client.get(url, allow_redirects=False, **kw) as r:
        return r.status, await r.text(), r.headers


# -- event pages under an organization's credential ------------------------------------


@contextlib.asynccontextmanager
async def _acme_clients(env: StreamsPortal) -> AsyncIterator[list[tuple[str, aiohttp.ClientSession, dict[str, str]]]]:
    """acme's admin as a bearer token and as a browser session: (label, client, headers)."""
    async with _browser() as plain, _browser() as browser:
        await _login(env, browser, env.acme)
        yield [("token", plain, env.auth(env.acme)), ("session", browser, {})]


async def test_event_list_shows_only_the_organizations_events_and_actions(env: StreamsPortal) -> None:
    """/events to acme's token and session: exactly acme's events, an action filter list of
    acme's actions only, nothing of globex's or unscoped events; a search for globex's
    values or action finds nothing."""
    async with _acme_clients(env) as clients:
        for label, client, headers in clients:
            status, html, _ = await _get(client, f"{env.url}/events", headers=headers)
            assert status == 200, label
            assert sorted(ROW_RE.findall(html)) == A_IDS, label
            assert set(ACTION_RE.findall(html)) == A_ACTIONS, label
            assert _foreign_in(html) == [], label
            for e in A_EVENTS:
                assert e["metadata"]["note"] in html or e["actor"]["email"] in html, label
            for params in ({"q": "hydra"}, {"q": "cfo0@globex-board.example"},
                           {"action": "merger.approved"}, {"actor": "root@ops-internal.example"},
                           {"q": "vault"}):
                status, html, _ = await _get(client, f"{env.url}/events", headers=headers, params=params)
                assert status == 200, (label, params)
                assert ROW_RE.findall(html) == [] and 'class="empty-row"' in html, (label, params)
                assert not [e["id"] for e in B_EVENTS + N_EVENTS if e["id"] in html], (label, params)
                assert set(ACTION_RE.findall(html)) == A_ACTIONS, (label, params)


async def test_event_pages_of_other_events_are_not_found(env: StreamsPortal) -> None:
    """/events/{id} and /event?id= to acme's token and session: acme's event 200 with its
    content; globex's or an unscoped event 404 with a page identical to that of an id
    that exists nowhere (the requested id echoed once, nothing of the event)."""
    async with _acme_clients(env) as clients:
        for label, client, headers in clients:
            for url in (f"{env.url}/events/{{}}", f"{env.url}/event?id={{}}"):
                own = A_EVENTS[1]
                status, html, _ = await _get(client, url.format(own["id"]), headers=headers)
                assert status == 200, (label, url)
                assert own["id"] in html and own["metadata"]["note"] in html, (label, url)
                assert own["targets"][0]["name"] in html and _foreign_in(html) == [], (label, url)
                status, missing, _ = await _get(client, url.format("evt_x_99"), headers=headers)
                assert status == 404, (label, url)
                for other in B_EVENTS + N_EVENTS:
                    status, html, _ = await _get(client, url.format(other["id"]), headers=headers)
                    assert status == 404, (label, url, other["id"])
                    # The id asked for is echoed in the "no such event" sentence, only there.
                    assert html.count(other["id"]) == 1, (label, url)
                    assert f"<code>{other['id']}</code>" in html, (label, url)
                    assert html.replace(other["id"], "ID") == missing.replace("evt_x_99", "ID"), (label, url)
                    assert _foreign_in(html.replace(other["id"], "ID")) == [], (label, url)


# -- stream pages under credentials that may not change the stream ---------------------


async def _create(env: StreamsPortal, client: aiohttp.ClientSession, rx: Any, name: str,
                  paused: bool = False) -> str:
    async with client.post(f"{env.url}/api/streams", headers=env.auth(env.acme),
                           json={"name": name, "type": "http", "options": {"url": rx.url}}) as r:
        assert r.status == 201, await r.text()
        sid = (await r.json())["data"]["id"]
    if paused:
        async with client.patch(f"{env.url}/api/streams/{sid}", headers=env.auth(env.acme),
                                json={"paused": True}) as r:
            assert r.status == 200
    return sid


async def _snapshot(env: StreamsPortal) -> dict[str, Any]:
    return {d.id: d for d in await env.server.state.streams.store.list()}


def _stream_changes(env: StreamsPortal) -> list[str]:
    if not env.journal.exists():
        return []
    return [e["action"] for e in map(json.loads, env.journal.read_text().splitlines())
            if e["action"].startswith("log_stream.")]


def _stream_requests(running: str, held: str, rx: Any) -> list[tuple[str, str, dict[str, str] | None]]:
    """Every stream page request: (method, path, form without csrf)."""
    return [
        ("GET", f"/streams/{running}/edit", None),
        ("GET", f"/streams/{held}/edit", None),
        ("POST", f"/streams/{running}/edit", {"url": rx.url, "timeout": "9"}),
        ("POST", f"/streams/{running}/pause", {}),
        ("POST", f"/streams/{held}/resume", {}),
        ("POST", f"/streams/{running}/test", {}),
        ("POST", f"/streams/{running}/delete", {}),
        ("POST", f"/streams/{held}/delete", {}),
    ]


async def test_stream_pages_refuse_every_other_credential(env: StreamsPortal, rx: Any) -> None:
    """Edit form and edit, pause, resume, test, delete of acme's streams: no credential or
    a forged, garbled or revoked token's session cookie go to the login page, a viewer's
    session is 403, globex's admin session 404 (the stream does not exist for them); each
    with the best CSRF token that credential could hold. Nothing in the body names the
    streams, the streams are unchanged, no change is recorded and no test event sent; then
    acme's admin session does each of them."""
    async with contextlib.AsyncExitStack() as stack:
        plain = await stack.enter_async_context(_browser())
        running = await _create(env, plain, rx, "siem-running")
        held = await _create(env, plain, rx, "siem-held", paused=True)
        before, changes = await _snapshot(env), _stream_changes(env)
        assert before[held].paused and not before[running].paused

        acme = await stack.enter_async_context(_browser())
        acme_csrf = await _login(env, acme, env.acme)
        acme_cookie = _session_cookie(env, acme)
        viewer = await stack.enter_async_context(_browser())
        viewer_csrf = await _login(env, viewer, env.viewer)
        globex = await stack.enter_async_context(_browser())
        globex_csrf = await _login(env, globex, env.globex)
        leaving = await stack.enter_async_context(_browser())
        leaving_token = await env.server.tokens.create("acme-leaving", "admin", "acme")
        leaving_csrf = await _login(env, leaving, leaving_token)
        status, _, _ = await _get(leaving, f"{env.url}/streams/{running}/edit")
        assert status == 200  # before the revocation, this session could edit
        assert await env.server.tokens.revoke("acme-leaving")
        garbled = acme_cookie[:-1] + ("A" if acme_cookie[-1] != "A" else "B")

        login = (303, "/login")
        cases: list[tuple[str, aiohttp.ClientSession, dict[str, str] | None, str, tuple[int, str | None]]] = [
            ("no credential", plain, None, acme_csrf, login),
            ("viewer session", viewer, None, viewer_csrf, (403, None)),
            ("revoked token's session", leaving, None, leaving_csrf, login),
            ("globex admin session", globex, None, globex_csrf, (404, None)),
            ("forged session cookie", plain, {"asd_session": "forged-session-id"}, acme_csrf, login),
            ("garbled session cookie", plain, {"asd_session": garbled}, acme_csrf, login),
            ("oversized session cookie", plain, {"asd_session": acme_cookie * 6}, acme_csrf, login),
            ("token as session cookie", plain, {"asd_session": env.acme}, acme_csrf, login),
        ]
        for label, client, cookies, csrf, (want, location) in cases:
            for method, path, form in _stream_requests(running, held, rx):
                data = None if form is None else {**form, "csrf": csrf}
                async with client.request(method, env.url + path, data=data, cookies=cookies,
                                          allow_redirects=False) as r:
                    body = await r.text()
                    assert r.status == want, (label, method, path, body[:200])
                    assert r.headers.get("Location") == location, (label, method, path)
                assert "siem-running" not in body and "siem-held" not in body, (label, path)
                assert rx.url not in body, (label, path)
            assert await _snapshot(env) == before, label
            assert _stream_changes(env) == changes, label
            assert rx.events == [], label

        # The same requests with acme's admin session act.
        for method, path, form in _stream_requests(running, held, rx):
            data = None if form is None else {**form, "csrf": acme_csrf}
            async with acme.request(method, env.url + path, data=data, allow_redirects=False) as r:
                body = await r.text()
                assert r.status == (200 if method == "GET" or path.endswith("/test") else 303), (path, body[:200])
            if path.endswith("/test"):
                assert 'data-delivered="true"' in body
        assert await _snapshot(env) == {}
        assert _stream_changes(env)[len(changes):] == [
            "log_stream.updated", "log_stream.paused", "log_stream.resumed",
            "log_stream.test_event_sent", "log_stream.deleted", "log_stream.deleted"]
        assert [e["action"] for e in rx.events] == ["log_stream.test_event"]


# -- export manifests and /api/streams under revoked and forged credentials ------------


FORGED_COOKIES = ["forged-session-id", "A" * 43, "x" * 400, "' OR 1=1 --"]


async def test_export_manifest_refuses_revoked_and_forged_credentials(env: StreamsPortal) -> None:
    """/api/export.manifest: a revoked token, a token revoked after a manifest was signed
    for it, its revoked session and forged session cookies are 401 with no data; the
    operator's token and acme's session get the signed manifest."""
    url = f"{env.url}/api/export.manifest"
    as_of = (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    params = {"format": "jsonl", "as_of": as_of}
    async with _browser() as plain, _browser() as browser, _browser() as live:
        status, text, _ = await _get(plain, url, params=params, headers=env.auth(env.operator))
        assert status == 200 and json.loads(text)["rows"] == len(A_EVENTS + B_EVENTS + N_EVENTS)
        await _login(env, live, env.operator)  # a live session the forged cookies must not reach
        exporter = await env.server.tokens.create("acme-exporter", "admin", "acme")
        status, text, _ = await _get(plain, url, params=params, headers=env.auth(exporter))
        assert status == 200 and json.loads(text)["rows"] == len(A_EVENTS)
        await _login(env, browser, exporter)
        status, text, _ = await _get(browser, url, params=params)
        assert status == 200 and json.loads(text)["rows"] == len(A_EVENTS)
        assert await env.server.tokens.revoke("acme-exporter")

        refused: list[tuple[aiohttp.ClientSession, dict[str, str], dict[str, str] | None]] = [
            (plain, env.auth(env.revoked), None),
            (plain, env.auth(exporter), None),
            (browser, {}, None),
            *[(plain, {}, {"asd_session": value}) for value in FORGED_COOKIES],
        ]
        for client, headers, cookies in refused:
            for fmt in ("jsonl", "csv"):
                status, text, resp_headers = await _get(client, url, params={**params, "format": fmt},
                                                        headers=headers, cookies=cookies)
                assert status == 401, (headers, cookies, text)
                assert resp_headers["WWW-Authenticate"].startswith("Bearer")
                assert "evt_" not in text and "rows" not in text and "signature" not in text
        status, text, _ = await _get(live, url, params=params)
        assert status == 200 and json.loads(text)["rows"] == len(A_EVENTS + B_EVENTS + N_EVENTS)


async def test_streams_api_refuses_forged_session_cookies(env: StreamsPortal, rx: Any) -> None:
    """Every /api/streams operation with a forged or garbled session cookie, or the
    cookie of a session whose token was revoked, is 401 naming no stream (even with a real
    session's CSRF token); the streams are unchanged; acme's session reads them."""
    async with _browser() as plain, _browser() as acme, _browser() as leaving:
        sid = await _create(env, plain, rx, "siem-api")
        csrf = await _login(env, acme, env.acme)
        cookie = _session_cookie(env, acme)
        token = await env.server.tokens.create("acme-leaving", "admin", "acme")
        await _login(env, leaving, token)
        revoked_cookie = _session_cookie(env, leaving)
        assert await env.server.tokens.revoke("acme-leaving")
        before, changes = await _snapshot(env), _stream_changes(env)
        ops: list[tuple[str, str, Any]] = [
            ("GET", "/api/streams", None), ("GET", f"/api/streams/{sid}", None),
            ("POST", "/api/streams", {"name": "other", "type": "http", "options": {"url": rx.url}}),
            ("PATCH", f"/api/streams/{sid}", {"paused": True}),
            ("PATCH", f"/api/streams/{sid}", {"options": {"timeout": 9}}),
            ("POST", f"/api/streams/{sid}/test", None), ("DELETE", f"/api/streams/{sid}", None),
        ]
        cookies = [*FORGED_COOKIES, cookie[:-1] + ("A" if cookie[-1] != "A" else "B"), env.acme,
                   revoked_cookie]
        for value in cookies:
            for method, path, body in ops:
                async with plain.request(method, env.url + path, json=body, cookies={"asd_session": value},
                                         headers={"X-CSRF-Token": csrf}) as r:
                    text = await r.text()
                    assert r.status == 401, (value, method, path, text)
                    assert "siem-api" not in text and sid not in text, (value, method, path)
        assert await _snapshot(env) == before
        assert _stream_changes(env) == changes and rx.events == []
        async with acme.get(f"{env.url}/api/streams/{sid}") as r:
            assert r.status == 200 and (await r.json())["data"]["name"] == "siem-api"
