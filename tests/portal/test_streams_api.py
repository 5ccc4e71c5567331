"""/api/streams on both store backends: every operation with every credential, scope that
cannot be widened, write-only encrypted secrets, limits, test events, SSRF refusals at
save time, and the audit events of every change."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from streams_env import KEY, FakeResolver, StreamsPortal, streams_config

from auditshipd.testing import WebhookReceiver

SECRET = "hmac-secret-5b1e0c77d2a94f"
TOKEN = "bearer-token-9c2d7e1a0f53"


@pytest.fixture
async def sp(tmp_path: Path, portal_database: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StreamsPortal]:
    """A portal on an empty store of each backend, with a secrets key."""
    from auditshipd.portal import start_portal

    monkeypatch.setenv("AUDITSHIPD_SECRETS_KEY", KEY)
    config = streams_config(tmp_path, portal_database)
    server = await start_portal(config, port=0)
    try:
        yield await StreamsPortal.start(server, Path(config.journal.path))
    finally:
        await server.close()


@pytest.fixture
def rx() -> Any:
    with WebhookReceiver(bearer_token=TOKEN) as receiver:
        yield receiver


async def _call(http: aiohttp.ClientSession, method: str, url: str, *, token: str | None = None,
                body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    async with http.request(method, url, json=body, headers=h) as r:
        return r.status, await r.read()


def _http_stream(rx: Any, name: str = "siem") -> dict[str, Any]:
    return {"name": name, "type": "http",
            "options": {"url": rx.url, "bearer_token": TOKEN, "hmac_secret": SECRET}}


async def _create(sp: StreamsPortal, http: Any, rx: Any, name: str = "siem", token: str | None = None) -> str:
    status, body = await _call(http, "POST", f"{sp.url}/api/streams", token=token or sp.acme,
                               body=_http_stream(rx, name))
    assert status == 201, body
    return json.loads(body)["data"]["id"]


async def test_every_operation_with_every_credential(sp: StreamsPortal, http: Any, rx: Any) -> None:
    """The acme admin may do everything to acme's stream; the globex admin sees nothing
    of it (404, never 403: it does not exist for them); the operator sees and changes
    every stream but creates none; a viewer gets 403, no or a forged or revoked token
    401; a browser session without or with a wrong CSRF token 403."""
    sid = await _create(sp, http, rx)
    ops = [("GET", f"/api/streams/{sid}", None), ("PATCH", f"/api/streams/{sid}", {"paused": True}),
           ("PATCH", f"/api/streams/{sid}", {"paused": False}), ("POST", f"/api/streams/{sid}/test", None)]
    for method, path, body in ops:
        status, text = await _call(http, method, sp.url + path, token=sp.acme, body=body)
        assert status == 200, (method, path, text)
        status, _ = await _call(http, method, sp.url + path, token=sp.globex, body=body)
        assert status == 404, (method, path)
        status, _ = await _call(http, method, sp.url + path, token=sp.operator, body=body)
        assert status == 200, (method, path)
        status, _ = await _call(http, method, sp.url + path, token=sp.viewer, body=body)
        assert status == 403, (method, path)
        for token in (None, "asd_forged", sp.revoked):
            status, text = await _call(http, method, sp.url + path, token=token, body=body)
            assert status == 401 and b"siem" not in text, (method, path, token)
    # Listing: own streams only; the operator sees all; a viewer none.
    await _create(sp, http, rx, "globex-siem", token=sp.globex)
    for token, want in ((sp.acme, {"siem"}), (sp.globex, {"globex-siem"}),
                        (sp.operator, {"siem", "globex-siem"})):
        status, text = await _call(http, "GET", f"{sp.url}/api/streams", token=token)
        assert status == 200
        assert {r["name"] for r in json.loads(text)["data"] if r["source"] == "portal"} == want
    assert (await _call(http, "GET", f"{sp.url}/api/streams", token=sp.viewer))[0] == 403
    assert (await _call(http, "GET", f"{sp.url}/api/streams"))[0] == 401
    # Creating: a viewer may not, no or a forged or revoked token is unknown.
    for token, want in ((sp.viewer, 403), (None, 401), ("asd_forged", 401), (sp.revoked, 401)):
        status, _ = await _call(http, "POST", f"{sp.url}/api/streams", token=token,
                                body=_http_stream(rx, "other"))
        assert status == want, token
    assert [d.name for d in await sp.server.state.streams.store.list("acme")] == ["siem"]
    # The operator creates none (a stream belongs to the organization of its token).
    status, text = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.operator,
                               body=_http_stream(rx, "ops"))
    assert status == 400 and b"organization" in text
    for token, want in ((sp.viewer, 403), (None, 401), ("asd_forged", 401), (sp.globex, 404)):
        assert (await _call(http, "DELETE", f"{sp.url}/api/streams/{sid}", token=token))[0] == want
    # A browser session: the CSRF token is required for every change.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        csrf = await sp.login(browser, sp.acme)
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            status, _ = await _call(browser, "PATCH", f"{sp.url}/api/streams/{sid}",
                                    body={"paused": True}, headers=headers)
            assert status == 403
            status, _ = await _call(browser, "POST", f"{sp.url}/api/streams", body=_http_stream(rx, "x"),
                                    headers=headers)
            assert status == 403
        status, _ = await _call(browser, "GET", f"{sp.url}/api/streams/{sid}")
        assert status == 200
        status, _ = await _call(browser, "DELETE", f"{sp.url}/api/streams/{sid}",
                                headers={"X-CSRF-Token": csrf})
        assert status == 204
    assert (await _call(http, "GET", f"{sp.url}/api/streams/{sid}", token=sp.acme))[0] == 404


async def test_scope_cannot_be_widened(sp: StreamsPortal, http: Any, rx: Any) -> None:
    """An organization or organizations key, at the top or among the options, is refused;
    a stream's sink is always scoped to exactly the token's organization."""
    for body in ({**_http_stream(rx), "organizations": ["acme", "globex"]},
                 {**_http_stream(rx), "organization": "globex"},
                 {"name": "x", "type": "http", "options": {"url": rx.url, "organizations": ["globex"]}},
                 {"name": "x", "type": "http", "options": {"url": rx.url, "organizations": None}}):
        status, text = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.acme, body=body)
        assert status == 400 and b"organization" in text, body
    sid = await _create(sp, http, rx)
    status, text = await _call(http, "PATCH", f"{sp.url}/api/streams/{sid}", token=sp.acme,
                               body={"options": {"organizations": ["globex"]}})
    assert status == 400
    defs = await sp.server.state.streams.store.list()
    assert [(d.organization, d.name) for d in defs] == [("acme", "siem")]
    sc = sp.server.state.streams
    from auditshipd.portal.stream_defs import check_definition

    built = check_definition("acme", "siem", "http", {**defs[0].options, "bearer_token": TOKEN},
                             sc.sink_types())
    assert built.organizations == ["acme"] and built.name == "acme.siem"


async def test_an_id_no_stream_can_have_is_not_found(sp: StreamsPortal, http: Any, rx: Any) -> None:
    """Ids that are not of the form streams get (a NUL, which PostgreSQL text cannot
    hold, a quote, another stream's id with more) answer 404 on every store."""
    sid = await _create(sp, http, rx)
    for bad in ("ls_%00", "ls_0000000000000000%00", "x'--", sid + "0", sid.upper()):
        for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test")):
            status, _ = await _call(http, method, f"{sp.url}/api/streams/{bad}{suffix}",
                                    token=sp.acme, body={} if method == "PATCH" else None)
            assert status == 404, (method, bad)
    status, _ = await _call(http, "GET", f"{sp.url}/api/streams/{sid}", token=sp.acme)
    assert status == 200


async def test_a_test_event_the_client_refuses_to_send_is_a_failed_delivery(
        sp: StreamsPortal, http: Any, rx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client library's ValueError (a header it finds unsafe) answers the test as a
    failed delivery with its reason, not as a server error."""
    from auditshipd.sinks.http import HttpSink

    async def refuse(self: Any, batch: Any) -> None:
        raise ValueError("Forbidden control character detected in headers")

    sid = await _create(sp, http, rx)
    monkeypatch.setattr(HttpSink, "send", refuse)
    status, text = await _call(http, "POST", f"{sp.url}/api/streams/{sid}/test", token=sp.acme)
    assert status == 200
    answer = json.loads(text)["data"]
    assert answer["delivered"] is False and "control character" in answer["error"]


async def test_options_are_checked_by_the_sink_schema(sp: StreamsPortal, http: Any, rx: Any) -> None:
    """The TOML sinks' validation answers, naming the key: unknown option, wrong type,
    a value the type's checks refuse, host-local options, a missing s3 access key."""
    cases = [
        ({"name": "a", "type": "http", "options": {"url": rx.url, "colour": "red"}}, "options.colour"),
        ({"name": "a", "type": "http", "options": {"url": rx.url, "timeout": "soon"}}, "options.timeout"),
        ({"name": "a", "type": "http", "options": {"url": rx.url, "headers": {"X-A": 5}}}, "options.headers"),
        ({"name": "a", "type": "http", "options": {"url": "ftp://x"}}, "options.url"),
        ({"name": "a", "type": "http", "options": {"url": rx.url, "ca_file": "/etc/shadow"}}, "options.ca_file"),
        ({"name": "a", "type": "splunk_hec", "options": {"url": rx.url}}, "options.token"),
        ({"name": "a", "type": "s3", "options": {"bucket": "b", "profile": "ops"}}, "options.profile"),
        ({"name": "a", "type": "s3", "options": {"bucket": "b"}}, "options.access_key_id"),
        ({"name": "a", "type": "file", "options": {"path": "/tmp/x"}}, "type"),
        ({"name": "A B", "type": "http", "options": {"url": rx.url}}, "name"),
        ({"name": "a", "type": "http", "options": {"url": rx.url, "batch": {"max_events": 1}}}, "options.batch"),
    ]
    for body, param in cases:
        status, text = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.acme, body=body)
        assert status == 400, (body, text)
        assert json.loads(text).get("param") == param, (body, text)


async def test_secrets_are_write_only_and_encrypted(sp: StreamsPortal, http: Any, rx: Any,
                                                     portal_database: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Secrets never come back (API, page, audit events, logs); the store holds
    ciphertext only; replacing one works; the stream's test event authenticates with it."""
    caplog.set_level(logging.DEBUG)
    sid = await _create(sp, http, rx)
    bodies = []
    for method, path, body in (("GET", f"/api/streams/{sid}", None), ("GET", "/api/streams", None),
                               ("PATCH", f"/api/streams/{sid}", {"options": {"timeout": 5}}),
                               ("POST", f"/api/streams/{sid}/test", None)):
        status, text = await _call(http, method, sp.url + path, token=sp.acme, body=body)
        assert status == 200, text
        bodies.append(text)
    view = json.loads(bodies[0])["data"]
    assert view["secrets"] == {"bearer_token": "set", "hmac_secret": "set"}
    assert "bearer_token" not in view["options"]
    assert json.loads(bodies[3])["data"]["delivered"] is True
    async with http.get(f"{sp.url}/streams", headers=sp.auth(sp.acme)) as r:
        bodies.append(await r.read())
    async with http.get(f"{sp.url}/streams/{sid}/edit", headers=sp.auth(sp.acme)) as r:
        bodies.append(await r.read())
    bodies.append(sp.journal.read_bytes())
    bodies.append(caplog.text.encode())
    for blob in bodies:
        assert SECRET.encode() not in blob and TOKEN.encode() not in blob
    d = await sp.server.state.streams.store.get(sid)
    raw = json.dumps([d.options, d.sealed]).encode()
    assert SECRET.encode() not in raw and TOKEN.encode() not in raw and d.sealed.startswith("v1:")
    if not portal_database.startswith("postgres"):
        conn = sqlite3.connect(portal_database)
        dump = "\n".join(conn.iterdump()).encode()
        conn.close()
        assert SECRET.encode() not in dump and TOKEN.encode() not in dump
    # Replacing a secret: the receiver now refuses the stream's token (401, scrubbed).
    status, _ = await _call(http, "PATCH", f"{sp.url}/api/streams/{sid}", token=sp.acme,
                            body={"options": {"bearer_token": "replaced-token-000"}})
    assert status == 200
    status, text = await _call(http, "POST", f"{sp.url}/api/streams/{sid}/test", token=sp.acme)
    answer = json.loads(text)["data"]
    assert answer["delivered"] is False and answer["status"] == 401
    assert b"replaced-token-000" not in text
    assert "replaced-token-000" not in caplog.text


async def test_no_secrets_key_no_secret_stored(sp: StreamsPortal, http: Any, rx: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a secrets key a stream with secrets is refused with a clear 503."""
    monkeypatch.delenv("AUDITSHIPD_SECRETS_KEY")
    status, text = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.acme,
                               body=_http_stream(rx))
    assert status == 503 and b"secrets key" in text
    assert await sp.server.state.streams.store.list() == []


async def test_limits_streams_and_test_events(sp: StreamsPortal, http: Any, rx: Any) -> None:
    """At most max_streams_per_organization (3 here) per organization (409 beyond,
    other organizations unaffected); 5 test events per stream and minute, then 429 with
    Retry-After; a duplicate name is 409."""
    for i in range(3):
        await _create(sp, http, rx, f"s{i}")
    status, text = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.acme,
                               body=_http_stream(rx, "s3"))
    assert status == 409 and b"most streams" in text
    await _create(sp, http, rx, "s0", token=sp.globex)
    status, _ = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.globex,
                            body=_http_stream(rx, "s0"))
    assert status == 409
    sid = (await sp.server.state.streams.store.list("acme"))[0].id
    for _ in range(5):
        status, text = await _call(http, "POST", f"{sp.url}/api/streams/{sid}/test", token=sp.acme)
        assert status == 200, text
    async with http.post(f"{sp.url}/api/streams/{sid}/test", headers=sp.auth(sp.acme)) as r:
        assert r.status == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert len([e for e in rx.events if e["action"] == "log_stream.test_event"]) == 5


async def test_test_event_goes_to_that_stream_only(sp: StreamsPortal, http: Any) -> None:
    """The synthetic event reaches the tested stream's receiver, not another stream's;
    a failing destination's answer comes back with its status and a scrubbed error."""
    with WebhookReceiver() as one, WebhookReceiver() as two:
        ids = []
        for name, r in (("one", one), ("two", two)):
            status, body = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.acme,
                                       body={"name": name, "type": "http", "options": {"url": r.url}})
            ids.append(json.loads(body)["data"]["id"])
        status, text = await _call(http, "POST", f"{sp.url}/api/streams/{ids[0]}/test", token=sp.acme)
        answer = json.loads(text)["data"]
        assert answer["delivered"] is True and answer["status"] == 200
        assert [e["id"] for e in one.events] == [answer["event_id"]] and two.events == []
        event = one.events[0]
        assert event["action"] == "log_stream.test_event" and event["organization"] == {"slug": "acme"}
        two.set_script([], default=(503, {"Retry-After": "7"}, "down for maintenance"))
        status, text = await _call(http, "POST", f"{sp.url}/api/streams/{ids[1]}/test", token=sp.acme)
        answer = json.loads(text)["data"]
        assert answer["delivered"] is False and answer["status"] == 503
        assert "down for maintenance" in answer["error"]


async def test_blocked_destinations_are_refused_at_save(sp: StreamsPortal, http: Any) -> None:
    """Host names resolving to loopback, private, link-local, metadata, multicast,
    unspecified or IPv4-mapped addresses are refused with the reason; IP literals too;
    a public address is accepted; an allowed host (127.0.0.1) passes."""
    resolver = FakeResolver({"public.test": ["93.184.216.34"]})
    sp.server.state.streams.resolver = resolver
    blocked = {"loop.test": "127.0.0.2", "ten.test": "10.0.0.5", "oneseventwo.test": "172.16.9.9",
               "home.test": "192.168.1.1", "link.test": "169.254.10.10",
               "metadata.test": "169.254.169.254", "zero.test": "0.0.0.0", "v6loop.test": "::1",
               "ula.test": "fd12::1", "v6link.test": "fe80::1", "mapped.test": "::ffff:10.0.0.1",
               "multi.test": "239.1.1.1", "cgnat.test": "100.100.100.200"}
    resolver.answers.update({h: [a] for h, a in blocked.items()})
    resolver.answers["mixed.test"] = ["93.184.216.34", "10.0.0.1"]
    for i, host in enumerate([*blocked, "mixed.test"]):
        for kind, options in (("http", {"url": f"https://{host}/in"}),
                              ("s3", {"bucket": "b", "endpoint_url": f"https://{host}",
                                      "access_key_id": "AKIDEXAMPLE", "secret_access_key": "x" * 20}),
                              ("splunk_hec", {"url": f"https://{host}:8088", "token": "hec-" + "x" * 20}),
                              ("datadog", {"url": f"https://{host}/api/v2/logs", "api_key": "d" * 32})):
            status, text = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.acme,
                                       body={"name": f"b{i}", "type": kind, "options": options})
            assert status == 400, (host, kind, text)
            error = json.loads(text)
            assert "streams may not send there" in error["error"], error
            assert error["param"] in ("options.url", "options.endpoint_url")
    for literal in ("http://169.254.169.254/latest", "http://[::ffff:127.0.0.1]:80/", "http://10.1.1.1/"):
        status, text = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.acme,
                                   body={"name": "lit", "type": "http", "options": {"url": literal}})
        assert status == 400 and b"streams may not send there" in text, literal
    status, text = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.acme,
                               body={"name": "ok", "type": "http", "options": {"url": "https://public.test/in"}})
    assert status == 201, text
    assert await sp.server.state.streams.store.list("acme") != []


async def test_every_change_is_audited_without_secret_values(sp: StreamsPortal, http: Any, rx: Any) -> None:
    """created, updated (changed option names), paused, resumed, test_event_sent, deleted:
    each in the stream's organization, with the actor's token name."""
    sid = await _create(sp, http, rx)
    for method, path, body in (("PATCH", f"/api/streams/{sid}", {"options": {"hmac_secret": "n" * 40, "timeout": 3}}),
                               ("PATCH", f"/api/streams/{sid}", {"paused": True}),
                               ("PATCH", f"/api/streams/{sid}", {"paused": False}),
                               ("POST", f"/api/streams/{sid}/test", None),
                               ("DELETE", f"/api/streams/{sid}", None)):
        status, _ = await _call(http, method, sp.url + path, token=sp.acme if "test" not in path else sp.operator,
                                body=body)
        assert status in (200, 204)
    events = [json.loads(line) for line in sp.journal.read_text().splitlines()]
    changes = [e for e in events if e["action"].startswith("log_stream.") and e.get("organization")]
    assert [e["action"] for e in changes] == [
        "log_stream.created", "log_stream.updated", "log_stream.paused", "log_stream.resumed",
        "log_stream.test_event_sent", "log_stream.deleted"]
    assert {e["organization"]["slug"] for e in changes} == {"acme"}
    assert [e["actor"]["name"] for e in changes] == ["acme-admin"] * 4 + ["operator", "acme-admin"]
    # The organization's admin's address is in its record; the operator's only in the
    # operators' record (no organization), which names the organization.
    assert changes[0]["context"]["location"] == "127.0.0.1" and changes[4]["context"] == {}
    operators = [e for e in events if e["action"].startswith("log_stream.") and not e.get("organization")]
    assert [(e["action"], e["actor"]["name"]) for e in operators] == [("log_stream.test_event_sent", "operator")]
    assert operators[0]["context"]["location"] == "127.0.0.1"
    assert {"type": "organization", "name": "acme"} in operators[0]["targets"]
    assert operators[0]["metadata"] == changes[4]["metadata"]
    assert changes[0]["metadata"]["options"] == ["bearer_token", "hmac_secret", "url"]
    assert changes[1]["metadata"]["changed"] == ["hmac_secret", "timeout"]
    blob = sp.journal.read_bytes()
    assert SECRET.encode() not in blob and TOKEN.encode() not in blob and b"n" * 40 not in blob


async def test_openapi_describes_the_stream_operations(sp: StreamsPortal, http: Any) -> None:
    """The OpenAPI document lists every /api/streams operation."""
    async with http.get(f"{sp.url}/api/openapi.json") as r:
        doc = await r.json()
    paths = doc["paths"]
    assert set(paths["/api/streams"]) == {"get", "post"}
    assert set(paths["/api/streams/{id}"]) == {"parameters", "get", "patch", "delete"}
    assert set(paths["/api/streams/{id}/test"]) == {"post"}
    assert "429" in paths["/api/streams/{id}/test"]["post"]["responses"]


async def test_page_forms_act_with_the_session_csrf_only(sp: StreamsPortal, rx: Any) -> None:
    """The page's forms (edit, pause, resume, test, delete) need the session's CSRF token;
    with it they act and redirect; the edit form keeps a secret left empty."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        csrf = await sp.login(browser, sp.acme)
        form = {"csrf": csrf, "type": "http", "name": "siem", "url": rx.url, "bearer_token": TOKEN}
        for bad in ({**form, "csrf": "forged"}, {k: v for k, v in form.items() if k != "csrf"}):
            async with browser.post(f"{sp.url}/streams/new", data=bad, allow_redirects=False) as r:
                assert r.status == 403
        assert await sp.server.state.streams.store.list() == []
        # Refused (an internal address): the form comes back as typed, booleans still at
        # their defaults (never silently "false": tls_verify must stay on).
        async with browser.post(f"{sp.url}/streams/new", data={**form, "url": "http://10.0.0.1/", "tls_verify": "",
                                                               "gzip": "true"}) as r:
            html = await r.text()
            assert r.status == 400 and "streams may not send there" in html
        assert 'value="http://10.0.0.1/"' in html and TOKEN not in html
        tls = html[html.index('id="f-tls_verify"'):].split("</select>")[0]
        gzip_select = html[html.index('id="f-gzip"'):].split("</select>")[0]
        assert "selected" not in tls and '<option value="true" selected>' in gzip_select
        async with browser.post(f"{sp.url}/streams/new", data=form, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/streams?done=created&stream=siem"
        (d,) = await sp.server.state.streams.store.list()
        async with browser.post(f"{sp.url}/streams/{d.id}/edit", allow_redirects=False,
                                data={"csrf": csrf, "url": rx.url, "bearer_token": "", "timeout": "4"}) as r:
            assert r.status == 303
        (d,) = await sp.server.state.streams.store.list()
        assert d.options["timeout"] == 4 and d.secret_names == ["bearer_token"]
        for action, paused in (("pause", True), ("resume", False)):
            async with browser.post(f"{sp.url}/streams/{d.id}/{action}", data={"csrf": "x"},
                                    allow_redirects=False) as r:
                assert r.status == 403
            async with browser.post(f"{sp.url}/streams/{d.id}/{action}", data={"csrf": csrf},
                                    allow_redirects=False) as r:
                assert r.status == 303
            assert (await sp.server.state.streams.store.get(d.id)).paused is paused
        async with browser.post(f"{sp.url}/streams/{d.id}/test", data={"csrf": csrf}) as r:
            html = await r.text()
        assert 'data-delivered="true"' in html and TOKEN not in html
        async with browser.post(f"{sp.url}/streams/{d.id}/edit", data={"csrf": csrf, "url": "http://10.0.0.1/"}) as r:
            assert r.status == 400 and "streams may not send there" in await r.text()
        async with browser.post(f"{sp.url}/streams/{d.id}/delete", data={"csrf": csrf},
                                allow_redirects=False) as r:
            assert r.status == 303
        assert await sp.server.state.streams.store.list() == []
    assert [e["id"] for e in rx.events if e["action"] == "log_stream.test_event"]


async def test_the_edit_form_masks_url_credentials_and_keeps_them(sp: StreamsPortal, rx: Any) -> None:
    """A URL with a password and a query token: the store keeps it encrypted (masked in
    the clear); the edit page shows it masked, as the API does; the form sent back
    unchanged keeps the stored URL; a new URL replaces it, the encrypted one with it."""
    user_url = rx.url.replace("http://", "http://siemuser:Sup3rSecretPw@") + "?token=QUERYSECRET123"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        csrf = await sp.login(browser, sp.acme)
        async with browser.post(f"{sp.url}/streams/new", allow_redirects=False,
                                data={"csrf": csrf, "type": "http", "name": "siem", "url": user_url}) as r:
            assert r.status == 303, await r.text()
        (d,) = await sp.server.state.streams.store.list()
        async with browser.get(f"{sp.url}/streams/{d.id}/edit") as r:
            page = await r.text()
        assert r.status == 200 and "Sup3rSecretPw" not in page and "QUERYSECRET123" not in page
        shown = page[page.index('id="f-url"'):].split('value="', 1)[1].split('"', 1)[0]
        assert "***" in shown
        async with browser.post(f"{sp.url}/streams/{d.id}/edit", allow_redirects=False,
                                data={"csrf": csrf, "url": shown.replace("&amp;", "&"), "timeout": "4"}) as r:
            assert r.status == 303, await r.text()
        admin = sp.server.state.streams
        d = await admin.store.get(d.id)
        # at rest the URL is encrypted; in the clear only as shown
        assert d.options["url"] == shown.replace("&amp;", "&") and d.options["timeout"] == 4
        assert d.secret_names == ["url"] and admin.box().open(d.id, d.sealed) == {"url": user_url}
        async with browser.post(f"{sp.url}/streams/{d.id}/edit", allow_redirects=False,
                                data={"csrf": csrf, "url": rx.url}) as r:
            assert r.status == 303
        d = await admin.store.get(d.id)
        assert d.options["url"] == rx.url and d.secret_names == [] and d.sealed is None


async def test_name_clash_with_a_stream_file_is_shown(tmp_path: Path, portal_database: str,
                                                      monkeypatch: pytest.MonkeyPatch, http: Any) -> None:
    """A stream file of acme defines sink "siem"; acme's admin creates a stream "siem"
    in the portal: it is listed in state error, saying which name clashes."""
    from auditshipd.config import parse_config
    from auditshipd.plugins.manager import build_plugin_manager, sink_types
    from auditshipd.portal import start_portal

    monkeypatch.setenv("AUDITSHIPD_SECRETS_KEY", KEY)
    streams = tmp_path / "streams"
    streams.mkdir()
    (streams / "acme.toml").write_text(f'[[sinks]]\nname = "siem"\ntype = "file"\npath = "{tmp_path}/o.jsonl"\n')
    config = parse_config(f"""
streams_dir = "{streams}"
[journal]
path = "{tmp_path}/journal/audit.jsonl"
state_dir = "{tmp_path}/state"
[portal]
enabled = true
database = "{portal_database}"
stream_allow_hosts = ["127.0.0.1"]
""", str(tmp_path / "auditshipd.toml"), sink_types(build_plugin_manager([])))
    server = await start_portal(config, port=0)
    try:
        sp = await StreamsPortal.start(server, Path(config.journal.path))
        with WebhookReceiver() as receiver:
            await _create(sp, http, receiver)
        status, text = await _call(http, "GET", f"{sp.url}/api/streams", token=sp.acme)
        rows = {(r["source"], r["name"]): r for r in json.loads(text)["data"]}
        assert rows[("portal", "siem")]["state"] == "error"
        assert "acme.siem" in rows[("portal", "siem")]["last_error"]
        assert ("config", "acme.siem") in rows
    finally:
        await server.close()


async def test_secrets_sealed_under_another_key_can_be_entered_again(
        sp: StreamsPortal, http: Any, rx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the secrets key changed, a stream's secrets no longer decrypt: a test event
    or a partial edit says so (503); entering every secret again makes it work."""
    sid = await _create(sp, http, rx)
    monkeypatch.setenv("AUDITSHIPD_SECRETS_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    status, text = await _call(http, "PATCH", f"{sp.url}/api/streams/{sid}", token=sp.acme,
                               body={"options": {"bearer_token": TOKEN}})
    assert status == 503 and b"enter them again" in text
    status, _ = await _call(http, "POST", f"{sp.url}/api/streams/{sid}/test", token=sp.acme)
    assert status == 503
    status, text = await _call(http, "PATCH", f"{sp.url}/api/streams/{sid}", token=sp.acme,
                               body={"options": {"bearer_token": TOKEN, "hmac_secret": SECRET}})
    assert status == 200, text
    status, text = await _call(http, "POST", f"{sp.url}/api/streams/{sid}/test", token=sp.acme)
    assert status == 200 and json.loads(text)["data"]["delivered"] is True


async def test_concurrent_edits_do_not_undo_each_other(sp: StreamsPortal, http: Any, rx: Any) -> None:
    """An edit based on a read older than the last stored change is refused (409 through
    the API's error mapping) instead of silently undoing that change."""
    from dataclasses import replace

    from auditshipd.portal.stream_api import stream_error
    from auditshipd.portal.stream_store import StreamChanged

    sid = await _create(sp, http, rx)
    store = sp.server.state.streams.store
    stale = await store.get(sid)
    status, _ = await _call(http, "PATCH", f"{sp.url}/api/streams/{sid}", token=sp.acme,
                            body={"options": {"timeout": 7}})
    assert status == 200
    with pytest.raises(StreamChanged) as info:
        await store.update(replace(stale, paused=True))
    assert stream_error(info.value, "acme")[0] == 409
    fresh = await store.get(sid)
    assert fresh.options["timeout"] == 7 and not fresh.paused and fresh.version == stale.version + 1
    assert await store.update(replace(fresh, paused=True))
    assert not await store.update(replace(fresh, id="ls_missing"))


async def test_an_edit_refused_shows_the_form_as_typed(sp: StreamsPortal, rx: Any) -> None:
    """An edit the portal refuses comes back with what the admin typed (as a refused new
    stream does), the inputs the form did not send with their stored values, and no
    secret; nothing is saved."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        csrf = await sp.login(browser, sp.acme)
        async with browser.post(f"{sp.url}/streams/new", allow_redirects=False,
                                data={"csrf": csrf, "type": "http", "name": "siem", "url": rx.url,
                                      "bearer_token": TOKEN, "timeout": "4", "gzip_level": "3"}) as r:
            assert r.status == 303, await r.text()
        (d,) = await sp.server.state.streams.store.list()
        async with browser.post(f"{sp.url}/streams/{d.id}/edit",
                                data={"csrf": csrf, "url": "http://10.0.0.1/", "timeout": "9",
                                      "gzip": "true", "bearer_token": "typed-new-token"}) as r:
            html = await r.text()
            assert r.status == 400 and "streams may not send there" in html
    def shown(name: str) -> str:
        return html[html.index(f'id="f-{name}"'):].split('value="', 1)[1].split('"', 1)[0]

    assert shown("url") == "http://10.0.0.1/" and shown("timeout") == "9"
    assert shown("gzip_level") == "3"  # not sent: as stored
    gzip_select = html[html.index('id="f-gzip"'):].split("</select>")[0]
    assert '<option value="true" selected>' in gzip_select
    assert TOKEN not in html and "typed-new-token" not in html
    assert (await sp.server.state.streams.store.get(d.id)).options == d.options


async def test_a_stream_blocked_on_a_host_is_shown_blocked(sp: StreamsPortal, http: Any,
                                                           rx: Any) -> None:
    """A daemon that reports a stream ``blocked`` (its dead-letter storage is full: it
    does not advance) has it shown ``blocked``, the worst state, with that host's error;
    ``error`` stays for a stream that is retrying."""
    import time

    from auditshipd.portal.stream_store import StreamStatus

    stream_id = await _create(sp, http, rx)
    store = sp.server.state.streams.store
    full = "cannot write a dead letter: [Errno 28] No space left on device"
    now = time.time()
    await store.report("a#1", [StreamStatus(stream_id, "a#1", "error", None, "HTTP 503", None, None, now)])
    await store.report("b#2", [StreamStatus(stream_id, "b#2", "blocked", None, full, 7, 70, now)])
    await store.report("c#3", [StreamStatus(stream_id, "c#3", "active", None, None, 0, 0, now)])

    async def shown() -> tuple[dict[str, Any], str]:
        status, body = await _call(http, "GET", f"{sp.url}/api/streams", token=sp.acme)
        assert status == 200
        (row,) = [r for r in json.loads(body)["data"] if r["source"] == "portal"]
        async with http.get(f"{sp.url}/streams", headers=sp.auth(sp.acme)) as r:
            return row, await r.text()

    row, page = await shown()
    assert row["state"] == "blocked" and row["last_error"] == full
    assert 'data-state="blocked"' in page and full in page
    await store.report("b#2", [StreamStatus(stream_id, "b#2", "active", None, None, 0, 0, now)])
    row, page = await shown()
    assert row["state"] == "error" and row["last_error"] == "HTTP 503"


async def test_an_edit_keeps_the_options_sent_back_as_shown(sp: StreamsPortal, http: Any) -> None:
    """The edit form sends every input back; an option left as the form showed it keeps
    its stored value: Datadog tags stored as a list (shown "env:prod, team:sec") stay
    that list, not a string with a space the intake would keep in the second tag."""
    import re

    sp.server.state.streams.resolver = FakeResolver({"intake.test": ["93.184.216.34"]})
    tags = ["env:prod", "team:sec"]
    status, body = await _call(http, "POST", f"{sp.url}/api/streams", token=sp.acme, body={
        "name": "dd", "type": "datadog",
        "options": {"url": "https://intake.test/api/v2/logs", "api_key": "d" * 32, "ddtags": tags}})
    assert status == 201, body
    (d,) = await sp.server.state.streams.store.list()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        csrf = await sp.login(browser, sp.acme)
        async with browser.get(f"{sp.url}/streams/{d.id}/edit") as r:
            page = await r.text()
        # every text input as shown (what a browser sends back), one of them changed
        form = {name: value.replace("&amp;", "&") for name, value in
                re.findall(r'<input type="text" id="f-[^"]+" name="([^"]+)" value="([^"]*)"', page)}
        assert form["ddtags"] == "env:prod, team:sec"
        async with browser.post(f"{sp.url}/streams/{d.id}/edit", allow_redirects=False,
                                data={**form, "csrf": csrf, "service": "billing"}) as r:
            assert r.status == 303, await r.text()
    d = await sp.server.state.streams.store.get(d.id)
    assert d.options["ddtags"] == tags and d.options["service"] == "billing"
