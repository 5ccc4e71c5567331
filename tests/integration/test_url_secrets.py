"""A sink URL's user, password, query values and path token never leave the process: not in errors,
dead letters, status files, logs, `dlq list`, /api/streams or /streams, even when the
receiver echoes the URL it was called with."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from auditshipd.testing import free_port, wait_for, write_events

pytestmark = pytest.mark.integration

CODE, USER, PASSWORD = "SECRETCODE123", "alice-ops", "PW-secret-99"
PATH_TOKEN = "ZaVnC4dhaV3kN9xQ2pLw"  # an HTTP source's token, in the URL's path
SECRETS = (CODE, USER, PASSWORD, PATH_TOKEN)


def _get(url: str, token: str) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _token(ws) -> str:
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "token", "create", "-c",
                          str(ws.config), "--name", "ops", "--role", "admin",
                          "--organization", "*"], capture_output=True, text=True, check=True)
    return re.search(r"asd_[A-Za-z0-9_-]+", out.stdout + out.stderr).group(0)


def test_url_secrets_echoed_by_a_receiver_are_scrubbed_everywhere(ws, receiver):
    """A receiver answers 400 echoing its URL (?code=..., user:password@, a token in the
    path) and the code alone: the dead letter, status file, log, dlq list and the portal show none of it."""
    port = free_port()
    url = (receiver.url.replace("http://", f"http://{USER}:{PASSWORD}@")
           + f"/{PATH_TOKEN}?code={CODE}&t=7")
    echo = json.dumps({"error": "unknown subscription", "code": CODE,
                       "request": f"POST /ingest/{PATH_TOKEN}?code={CODE}&t=7", "url": url})
    receiver.set_script([(400, {}, echo)])
    ws.write_config(f"""
[portal]
enabled = true
listen = "127.0.0.1:{port}"

[[sinks]]
name = "hook"
type = "http"
url = "{url}"
[sinks.batch]
timeout = 0.05
""")
    token = _token(ws)
    write_events(ws.journal, "ev", 3)
    dead = ws.state / "deadletter" / "hook.jsonl"
    status = ws.state / "status" / "hook.json"
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: dead.exists() and dead.read_text().strip(), 30, message="a dead letter")
        wait_for(lambda: status.exists() and "unknown subscription" in status.read_text(), 30,
                 message="the error in the status file")
        base = f"http://127.0.0.1:{port}"
        code, api = _get(f"{base}/api/streams", token)
        assert code == 200 and "unknown subscription" in api, api
        code, page = _get(f"{base}/streams", token)
        assert code == 200 and "hook" in page, page
        assert d.terminate() == 0
    dlq = subprocess.run([sys.executable, "-m", "auditshipd.cli", "dlq", "list", "-c",
                          str(ws.config)], capture_output=True, text=True, timeout=60)
    assert dlq.returncode == 0 and "unknown subscription" in dlq.stdout, dlq.stdout + dlq.stderr
    shown = {"dead letter": dead.read_text(), "status file": status.read_text(),
             "log": d.log().decode(errors="replace"), "dlq list": dlq.stdout + dlq.stderr,
             "/api/streams": api, "/streams": page}
    assert "unknown subscription" in shown["dead letter"]
    for where, text in shown.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked into the {where}"
    assert "?code=***" in shown["dead letter"]
