"""Signed portal exports: an export and its manifest (signed again from the same filters
and ``as_of``) pass ``auditshipd verify``; an edit fails; organization scope and the viewer
role hold for manifests; without a signing key exports work and manifests are unavailable."""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from portal_env import make_config

from auditshipd.integrity.keys import generate_key
from auditshipd.portal.store_sqlite import SQLiteEventStore

AUDITSHIPD = str(Path(sys.executable).parent / "auditshipd")
LINK_RE = re.compile(r"^<(/api/export\.manifest\?[^>]+)>; rel=\"describedby\"$")


def _events() -> list[dict[str, Any]]:
    out = []
    for i in range(30):
        event: dict[str, Any] = {
            "id": f"evt_{i:03d}", "action": "user.login" if i % 2 else "role.granted",
            "occurred_at": f"2026-03-{1 + i % 28:02d}T10:{i:02d}:00.000Z",
            "actor": {"type": "user", "email": f"u{i % 3}@example.com", "name": "=cmd|x"},
            "metadata": {"note": f"ünïcode, \"quoted\"\nline {i}"},
        }
        if i % 3:
            event["organization"] = {"slug": "acme" if i % 3 == 1 else "globex"}
        out.append(event)
    return out


class Env:
    def __init__(self, server: Any, tmp: Path) -> None:
        self.server, self.url, self.tmp = server, server.url, tmp

    @classmethod
    async def start(cls, server: Any, tmp: Path) -> Env:
        """The env with an admin, an organization admin and a viewer token (in the store)."""
        env = cls(server, tmp)
        env.admin = await server.tokens.create("root-admin", "admin")
        env.acme = await server.tokens.create("acme-admin", "admin", "acme")
        env.viewer = await server.tokens.create("viewer", "viewer")
        return env

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


async def _start(tmp_path: Path, signed: bool) -> Any:
    from auditshipd.portal import start_portal

    database = tmp_path / "portal.sqlite3"
    store = SQLiteEventStore(database)
    await store.open()
    await store.insert_events(_events())
    await store.close()
    extra = ""
    if signed:
        generate_key(tmp_path / "k")
        extra = f'\n[integrity]\nsigning_key = "{tmp_path / "k"}"\n'
    return await start_portal(make_config(tmp_path, database, extra), port=0)


@pytest.fixture
async def signed(tmp_path: Path) -> AsyncIterator[Env]:
    server = await _start(tmp_path, signed=True)
    try:
        yield await Env.start(server, tmp_path)
    finally:
        await server.close()


def verify(tmp: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUDITSHIPD, "verify", "--public-key", str(tmp / "k.pub"), str(path)],
                          capture_output=True, text=True, timeout=60)


async def _download(env: Env, http: Any, token: str, params: list[tuple[str, str]]
                    ) -> tuple[Path, dict[str, Any]]:
    """The export and its manifest (fetched by the export's Link), saved side by side."""
    async with http.get(f"{env.url}/api/export", params=params, headers=env.auth(token)) as r:
        assert r.status == 200, await r.text()
        body = await r.read()
        name = re.search(r'filename="([^"]+)"', r.headers["Content-Disposition"])[1]
        link = LINK_RE.match(r.headers["Link"])
        assert link and "as_of=" in link[1], r.headers["Link"]
        assert r.headers["X-Export-As-Of"] in html.unescape(link[1]).replace("%3A", ":")
    # An event that arrives between the export and its manifest changes nothing: the
    # manifest reads the export as of the export's time.
    await env.server.store.insert_events([{
        "id": "evt_late", "action": "user.login", "occurred_at":
        _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "organization": {"slug": "acme"}}])
    async with http.get(env.url + link[1], headers=env.auth(token)) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Disposition"] == f'attachment; filename="{name}.manifest.json"'
        manifest_bytes = await r.read()
        manifest = await r.json()
    path = env.tmp / name
    path.write_bytes(body)
    (env.tmp / (name + ".manifest.json")).write_bytes(manifest_bytes)
    return path, manifest


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_export_and_its_manifest_verify_and_one_changed_byte_fails(signed, http, fmt):
    params = [("format", fmt), ("action", "user.login"), ("since", "2026-03-02T00:00:00Z")]
    path, manifest = await _download(signed, http, signed.acme, params)
    body = path.read_bytes()
    expected = sum(1 for e in _events() if e["action"] == "user.login"
                   and (e.get("organization") or {}).get("slug") == "acme"
                   and e["occurred_at"] >= "2026-03-02")
    assert expected > 3 and manifest["rows"] == expected and manifest["bytes"] == len(body)
    assert manifest["format"] == fmt and manifest["since"] == "2026-03-02T00:00:00.000000Z"
    assert manifest["filters"]["organization"] == "acme"
    assert manifest["filters"]["action"] == ["user.login"]
    assert manifest["until"] == manifest["filters"]["as_of"]
    assert b"evt_late" not in body
    journal = (signed.tmp / "journal" / "audit.jsonl").read_text().splitlines()
    export, manifest_record = [r["metadata"] for r in map(json.loads, journal)
                               if r["action"] == "audit_log.exported"][-2:]
    assert export["as_of"] == manifest_record["as_of"] == manifest["filters"]["as_of"]
    assert manifest_record["manifest"] and manifest_record["rows"] == expected

    ok = verify(signed.tmp, path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{expected} rows" in ok.stdout

    data = bytearray(body)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    bad = verify(signed.tmp, path)
    assert bad.returncode == 1
    assert f"{path}: modified" in bad.stdout and "SHA-256 differs" in bad.stdout


async def test_a_manifest_for_another_organization_is_refused(signed, http):
    as_of = "2026-06-01T00:00:00Z"
    for endpoint in ("/api/export.manifest", "/api/export"):
        async with http.get(f"{signed.url}{endpoint}", headers=signed.auth(signed.acme),
                            params={"format": "jsonl", "organization": "globex",
                                    "as_of": as_of}) as r:
            assert r.status == 403, endpoint
            assert (await r.json())["param"] == "organization"
            assert b"evt_" not in await r.read()
    # An organization-wide token may ask for one organization; its own scope is allowed.
    async with http.get(f"{signed.url}/api/export.manifest", headers=signed.auth(signed.admin),
                        params={"organization": "globex", "as_of": as_of}) as r:
        assert r.status == 200
        globex = await r.json()
    async with http.get(f"{signed.url}/api/export.manifest", headers=signed.auth(signed.acme),
                        params={"organization": "acme", "as_of": as_of}) as r:
        assert r.status == 200
        acme = await r.json()
    assert globex["filters"]["organization"] == "globex"
    assert acme["filters"]["organization"] == "acme"
    assert globex["sha256"] != acme["sha256"]


async def test_viewer_tokens_cannot_export_or_get_manifests(signed, http):
    for endpoint in ("/api/export", "/api/export.manifest"):
        async with http.get(f"{signed.url}{endpoint}", headers=signed.auth(signed.viewer),
                            params={"as_of": "2026-06-01T00:00:00Z"}) as r:
            assert r.status == 403, endpoint
            assert b"evt_" not in await r.read()
        async with http.get(f"{signed.url}{endpoint}") as r:
            assert r.status == 401


async def test_manifest_parameters_are_checked(signed, http):
    future = (_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(hours=1)).isoformat()
    cases = [({}, "as_of"), ({"as_of": future}, "as_of"), ({"as_of": "yesterday"}, "as_of"),
             ({"as_of": "2026-01-01T00:00:00Z", "format": "xml"}, "format")]
    for params, param in cases:
        async with http.get(f"{signed.url}/api/export.manifest", params=params,
                            headers=signed.auth(signed.admin)) as r:
            assert r.status == 400, params
            assert (await r.json())["param"] == param
    async with http.get(f"{signed.url}/api/export", params={"as_of": future},
                        headers=signed.auth(signed.admin)) as r:
        assert r.status == 400


async def test_page_export_links_carry_as_of_and_their_manifests(signed, http):
    async with http.get(f"{signed.url}/events", params={"action": "user.login"},
                        headers=signed.auth(signed.admin)) as r:
        page = html.unescape(await r.text())
    links = dict(re.findall(r'id="((?:export|manifest)-(?:csv|jsonl))" href="([^"]+)"', page))
    assert set(links) == {"export-csv", "export-jsonl", "manifest-csv", "manifest-jsonl"}
    for fmt in ("csv", "jsonl"):
        export, manifest = links[f"export-{fmt}"], links[f"manifest-{fmt}"]
        assert "as_of=" in export and export.split("?")[1] == manifest.split("?")[1]
        assert manifest.startswith("/api/export.manifest?")


async def test_without_a_signing_key_exports_work_and_manifests_are_unavailable(tmp_path, http):
    server = await _start(tmp_path, signed=False)
    try:
        env = await Env.start(server, tmp_path)
        async with http.get(f"{env.url}/api/export", headers=env.auth(env.admin)) as r:
            assert r.status == 200 and b"evt_" in await r.read()
            assert r.headers["X-Export-Manifest"] == "unavailable" and "Link" not in r.headers
            assert "X-Export-As-Of" not in r.headers  # not bounded: exports as before
        async with http.get(f"{env.url}/api/export.manifest", headers=env.auth(env.admin),
                            params={"as_of": "2026-06-01T00:00:00Z"}) as r:
            assert r.status == 501 and "unavailable" in (await r.json())["error"]
        async with http.get(f"{env.url}/events", headers=env.auth(env.admin)) as r:
            page = await r.text()
        assert 'id="export-csv"' in page and 'id="manifest-csv"' not in page
        assert "as_of" not in page
    finally:
        await server.close()


async def test_openapi_documents_the_manifest(signed, http):
    async with http.get(f"{signed.url}/api/openapi.json") as r:
        doc = await r.json()
    manifest = doc["paths"]["/api/export.manifest"]["get"]
    assert {p["name"] for p in manifest["parameters"]} >= {"as_of", "format", "organization"}
    assert "501" in manifest["responses"]
    assert "ExportManifest" in doc["components"]["schemas"]
    assert "X-Export-As-Of" in doc["paths"]["/api/export"]["get"]["responses"]["200"]["headers"]
