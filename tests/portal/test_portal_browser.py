"""Headless Chromium (Debian's package, driven by Playwright) uses the portal like an admin."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

CHROMIUM = os.environ.get("AUDITSHIPD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

pytestmark = pytest.mark.browser


async def test_admin_logs_in_searches_filters_opens_and_exports(portal, tmp_path: Path, seeded_oracle) -> None:
    """Log in, search, filter by action, open an event, download a CSV export, log out;
    a screenshot of the list page is saved in the test's output directory."""
    async with async_playwright() as pw:
        # A missing browser is a failure, never a skip.
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

            await page.goto(f"{portal.url}/events")
            await expect(page).to_have_url(f"{portal.url}/login")
            await page.fill("#token", portal.admin)
            await page.click("button[type=submit]")
            await expect(page).to_have_url(f"{portal.url}/events")
            await expect(page.locator("tr.event-row")).to_have_count(50)

            # Keyword search.
            await page.fill("input[name=q]", "alice")
            await page.click("text=Search")
            await expect(page).to_have_url(f"{portal.url}/events?q=alice")
            expected = seeded_oracle(q="alice")[:50]
            first_link = page.locator("tr.event-row td.col-time a").first
            await expect(first_link).to_have_attribute("href", f"/events/{expected[0]}")

            # Filter: one action, through the dropdown.
            await page.click("#action-filter summary")
            await page.check("input[name=action][value='user.login']")
            await page.click("text=Search")
            await expect(page.locator("#action-filter summary")).to_have_text("Action: user.login")
            actions = await page.locator("tr.event-row .action").all_inner_texts()
            assert actions and set(actions) == {"user.login"}
            expected = seeded_oracle(q="alice", actions=("user.login",))
            assert len(actions) == min(50, len(expected))

            shot = tmp_path / "portal-events.png"
            await page.screenshot(path=str(shot), full_page=False)
            assert shot.stat().st_size > 10_000
            print(f"screenshot: {shot}")

            # Older page, then open an event.
            await page.click("#older")
            await expect(page.locator("tr.event-row").first).to_be_visible()
            await page.locator("tr.event-row td:nth-child(3)").first.click()  # the whole row is clickable
            await expect(page).to_have_url(f"{portal.url}/events/{expected[50]}")
            shown = json.loads(await page.locator("#event-json").inner_text())
            assert shown["id"] == expected[50] and shown["action"] == "user.login"
            await page.screenshot(path=str(tmp_path / "portal-event.png"))
            await page.go_back()

            # Export what the filters select.
            async with page.expect_download() as info:
                await page.click("#export-csv")
            download = await info.value
            saved = tmp_path / download.suggested_filename
            await download.save_as(saved)
            rows = list(csv.DictReader(io.StringIO(saved.read_text(), newline="")))
            assert [r["id"] for r in rows] == expected

            await page.goto(f"{portal.url}/streams")
            await expect(page.locator("table.streams tbody tr")).to_have_count(2)
            await page.screenshot(path=str(tmp_path / "portal-streams.png"))

            await page.click("text=Log out")
            await expect(page).to_have_url(f"{portal.url}/login")
            await page.goto(f"{portal.url}/events")
            await expect(page).to_have_url(f"{portal.url}/login")
            assert not errors, errors
        finally:
            await browser.close()
