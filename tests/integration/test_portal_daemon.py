"""The portal served by `auditshipd run` (and `auditshipd portal` alone), fed by the
built-in portal sink from the journal, end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from auditshipd import AuditJournal
from auditshipd.journal.cursor import CursorStore
from auditshipd.testing import free_port, wait_for

pytestmark = pytest.mark.integration


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def make_token(ws, role="admin", org="*") -> str:
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "token", "create", "-c",
                          str(ws.config), "--name", f"{role}-{org.replace('*', 'all')}", "--role", role,
                          "--organization", org], capture_output=True, text=True, check=True)
    return re.search(r"asd_[A-Za-z0-9_-]+", out.stdout + out.stderr).group(0)


def test_run_serves_the_portal_with_redacted_events(ws, portal_database):
    """Events written to the journal show up in the portal API, redacted; access is audited
    (on each backend: on PostgreSQL this is also a fleet's portal replica that ships its
    own access records)."""
    port = free_port()
    ws.write_config(f"""
[portal]
enabled = true
listen = "127.0.0.1:{port}"
database = "{portal_database}"

[[sinks]]
name = "portal"
type = "portal"
[sinks.batch]
timeout = 0.05
""")
    admin, viewer = make_token(ws), make_token(ws, role="viewer")
    j = AuditJournal(ws.journal)
    ids = []
    for i in range(50):
        eid = f"p{i:03d}"
        j.record("user.role_changed", id=eid, organization={"slug": "acme", "id": "org_01HSECRETORG00000000000000"},
                 actor={"type": "user", "email": "admin@acme.test", "id": "user_01HSECRETUSER000000000000"},
                 targets=[{"type": "user", "email": f"u{i}@acme.test"}], metadata={"role": "admin"})
        ids.append(eid)
    j.close()
    base = f"http://127.0.0.1:{port}"
    with ws.daemon() as d:
        d.wait_started()

        def listed():
            status, body = get(f"{base}/api/events?limit=200&action=user.role_changed", admin)
            return status == 200 and len(json.loads(body)["data"]) == 50 and body

        body = wait_for(listed, 30, message="events in the portal")
        assert sorted(e["id"] for e in json.loads(body)["data"]) == ids
        assert b"SECRETORG" not in body and b"SECRETUSER" not in body
        status, one = get(f"{base}/api/events/p007", admin)
        assert status == 200 and json.loads(one)["data"]["targets"][0]["email"] == "u7@acme.test"
        status, csv = get(f"{base}/api/export?format=csv&actor=admin@acme.test", admin)
        assert status == 200 and csv.count(b"\n") >= 51
        # no token: denied, no data; a viewer reads events but may not export
        status, denied = get(f"{base}/api/events", None)
        assert status == 401 and b"p007" not in denied
        status, read = get(f"{base}/api/events?action=user.role_changed", viewer)
        assert status == 200 and b"p007" in read
        status, denied = get(f"{base}/api/export?format=csv", viewer)
        assert status == 403 and b"p007" not in denied
        # the portal's own access events went through the journal into the portal
        wait_for(lambda: b"audit_log.exported" in get(
            f"{base}/api/events?action=audit_log.exported", admin)[1], 30, message="audited")
        assert d.terminate() == 0
    actions = [json.loads(x)["action"] for x in ws.journal.read_text().splitlines()]
    assert "audit_log.viewed" in actions and "audit_log.exported" in actions


def test_portal_command_alone_serves_the_index(ws):
    """`auditshipd portal` serves the existing index without running the shipper."""
    port = free_port()
    ws.write_config("""
[[sinks]]
name = "portal"
type = "portal"
[sinks.batch]
timeout = 0.05
""")
    AuditJournal(ws.journal).record("user.invited", id="solo1",
                                    actor={"type": "user", "email": "a@acme.test"})
    with ws.daemon() as d:  # fill the index once
        d.wait_started()
        wait_for(lambda: CursorStore(ws.state).load("portal").acked_events == 1, 30,
                 message="indexed")
        assert d.terminate() == 0
    admin = make_token(ws)
    proc = subprocess.Popen([sys.executable, "-m", "auditshipd.cli", "portal", "-c", str(ws.config),
                             "--listen", f"127.0.0.1:{port}"], cwd=ws.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status, body = wait_for(lambda: (r := get(f"http://127.0.0.1:{port}/api/events", admin))[0]
                                == 200 and r, 30, message="portal alone")
        assert [e["id"] for e in json.loads(body)["data"]] == ["solo1"]
    finally:
        proc.terminate()
        proc.wait(10)
