"""Headless Chromium: an organization's admin connects a SIEM from the Streams page of a
running daemon's portal, sends a test event, then watches its organization's events flow."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect
from tests.conftest import Workspace

from auditshipd.journal.writer import AuditJournal
from auditshipd.testing import WebhookReceiver, free_port, wait_for

CHROMIUM = os.environ.get("AUDITSHIPD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
RX_TOKEN = "rx-bearer-browser-4e7d1a"

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _write(journal: Path, org: str, n: int) -> list[str]:
    j = AuditJournal(journal)
    ids = [f"{org}-{i:03d}" for i in range(n)]
    for eid in ids:
        assert j.record("user.login", id=eid, actor={"type": "user", "email": f"{eid}@{org}.example"},
                        organization={"slug": org})
    j.close()
    return ids


async def _wait(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(wait_for, cond, timeout)


async def test_org_admin_connects_a_siem_from_the_streams_page(tmp_path: Path) -> None:
    """Create an http stream through the form (the receiver on 127.0.0.1, allowed by
    stream_allow_hosts), send a test event and see it delivered, then see acme's new
    events arrive at the receiver (no globex event) and the stream turn active with a
    last sync. The token appears on no page; screenshots are saved."""
    ws = Workspace(tmp_path)
    port = free_port()
    ws.write_config("""
        [[sinks]]
        name = "index"
        type = "portal"
        [sinks.batch]
        timeout = 0.1
        """, extra=f"""
        [portal]
        enabled = true
        listen = "127.0.0.1:{port}"
        stream_allow_hosts = ["127.0.0.1"]
        stream_poll_interval = 0.3
        """)
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "token", "create", "-c", str(ws.config),
                          "--name", "acme-admin", "--role", "admin", "--organization", "acme"],
                         capture_output=True, text=True, check=True)
    token = re.search(r"asd_[A-Za-z0-9_-]+", out.stdout + out.stderr).group(0)  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    with WebhookReceiver(bearer_token=RX_TOKEN) as rx, \
            ws.daemon(env={"AUDITSHIPD_SECRETS_KEY": KEY}) as daemon:
        daemon.wait_started()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = await (await browser.new_context(viewport={"width": 1440, "height": 900})).new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                await page.goto(f"{base}/login")
                await page.fill("#token", token)
                await page.click("button[type=submit]")
                await expect(page).to_have_url(f"{base}/events")
                await page.click("nav >> text=Streams")
                await expect(page).to_have_url(f"{base}/streams")
                await page.click("a.btn[href='/streams/new?type=http']")
                await page.fill("#f-name", "siem")
                await page.fill("#f-url", rx.url)
                await page.fill("#f-bearer_token", RX_TOKEN)
                await page.fill("#f-encoding", "ndjson")
                await page.click("text=Create stream")
                await expect(page.locator(".notice")).to_have_text("Stream siem created.")
                row = page.locator("tr[data-stream=siem]")
                await expect(row).to_be_visible()
                await expect(row).to_contain_text("bearer_token set")

                await row.locator("button[name=send-test]").click()
                answer = page.locator("#test-answer")
                await expect(answer).to_have_attribute("data-delivered", "true")
                await expect(answer).to_contain_text("Delivered (HTTP 200)")
                tested = [e for e in rx.events if e["action"] == "log_stream.test_event"]
                assert len(tested) == 1 and tested[0]["organization"] == {"slug": "acme"}
                await page.screenshot(path=str(tmp_path / "streams-test-event.png"))

                await _wait(lambda: b"acme.siem" in daemon.log())
                acme = _write(ws.journal, "acme", 20)
                globex = _write(ws.journal, "globex", 20)
                await _wait(lambda: set(acme) <= set(rx.ids()))
                for _ in range(100):
                    await page.goto(f"{base}/streams")
                    row = page.locator("tr[data-stream=siem]")
                    if (await row.get_attribute("data-state") == "active"
                            and "never" not in await row.locator("td.synced").inner_text()):
                        break
                    await page.wait_for_timeout(300)
                await expect(row).to_have_attribute("data-state", "active")
                await page.screenshot(path=str(tmp_path / "streams-active.png"), full_page=True)
                html = await page.content()
                await page.goto(f"{base}/streams/{await row.get_attribute('data-stream-id')}/edit")
                html += await page.content()
                assert RX_TOKEN not in html
                assert errors == []
            finally:
                await browser.close()
        got = rx.ids()
        assert set(acme) <= set(got) and not set(globex) & set(got)
        assert {e["organization"]["slug"] for e in rx.events} == {"acme"}
        assert rx.rejected_auth == 0
