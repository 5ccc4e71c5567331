"""The portal in a phone-sized (390 px) and a laptop-sized (1366 px) browser window.

Debian's Chromium driven by Playwright visits every page at both widths, keeps full-page
screenshots in ``test-output/screenshots/`` and checks the layout itself: nothing wider
than the window, the events table turning into cards (or scrolling inside its card),
the streams table scrolling inside its card, the header wrapping on a phone, no cell
whose content spills into its neighbours, no date filter cut off.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect
from portal_data import make_events
from portal_env import PortalEnv, make_config

from auditshipd.portal.store_sqlite import SQLiteEventStore

CHROMIUM = os.environ.get("AUDITSHIPD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
WIDTHS = (390, 1366)
LONG_ACTION = "billing.subscription.payment_method.updated_by_customer_through_self_service_portal"
LONG_EMAIL = "maximiliana.wolfeschlegelsteinhausenbergerdorff@subsidiary-of-a-very-long-company.example"

pytestmark = pytest.mark.browser


def _events() -> list[dict[str, Any]]:
    """120 events (three pages), one every 7 minutes up to now, the newest with a long action and long names."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    events = make_events(120, seed=11)
    for i, event in enumerate(events):
        event["occurred_at"] = (now - dt.timedelta(minutes=7 * (len(events) - 1 - i))).isoformat().replace("+00:00", "Z")
    events[-1].update(
        action=LONG_ACTION,
        actor={"type": "user", "id": "user_01HZX3", "email": LONG_EMAIL, "name": "Maximiliana Wolfeschlegelsteinhausenbergerdorff"},
        metadata={"plan": "enterprise-annual", "seats": 250, "coupon": None, "flags": ["sso", "scim"]},
    )
    return events


@pytest.fixture
async def small_portal(tmp_path: Path) -> AsyncIterator[PortalEnv]:
    """A portal on its own store of 120 recent events."""
    from auditshipd.portal import start_portal

    database = tmp_path / "portal.sqlite3"
    store = SQLiteEventStore(database)
    await store.open()
    await store.insert_events(_events())
    await store.close()
    config = make_config(tmp_path, database)
    server = await start_portal(config, port=0)
    try:
        yield await PortalEnv.start(server, Path(config.journal.path))
    finally:
        await server.close()


async def _no_page_overflow(page: Page, what: str) -> None:
    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[2] and widths[1] <= widths[2], (what, widths)


async def _no_cell_spills(page: Page, selector: str, what: str) -> None:
    """No visible cell's content is wider than the cell (text painted over its neighbour)."""
    spills = await page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)]
             .filter(td => td.offsetParent !== null && td.scrollWidth > td.clientWidth + 1)
             .map(td => td.className + ': ' + td.textContent.trim().slice(0, 60))""",
        selector,
    )
    assert not spills, (what, spills)


async def _table_fits(page: Page, table: str, what: str) -> str:
    """'cards' when the rows are laid out as blocks, 'scroll' when the table is wider than
    its card and the card scrolls, 'fits' when it is no wider than its card."""
    return await page.evaluate(
        """([sel, what]) => {
             const table = document.querySelector(sel);
             const row = table.querySelector('tbody tr');
             if (getComputedStyle(row).display !== 'table-row') return 'cards';
             const box = table.parentElement;
             if (table.scrollWidth <= box.clientWidth + 1) return 'fits';
             const ox = getComputedStyle(box).overflowX;
             if (ox !== 'auto' && ox !== 'scroll') throw new Error(what + ': table wider than its card, which does not scroll');
             return 'scroll';
           }""",
        [table, what],
    )


async def _header_rows(page: Page) -> int:
    """How many lines the header's items take; each item also lies inside the window."""
    boxes = await page.evaluate(
        """() => [...document.querySelectorAll('.topbar > *, .who > *')].map(el => {
             const r = el.getBoundingClientRect();
             if (r.right > window.innerWidth + 0.5 || r.left < -0.5) throw new Error('header item cut off: ' + el.className);
             return el.parentElement.classList.contains('topbar') ? [r.top, r.bottom] : null;
           }).filter(b => b !== null)"""
    )
    rows, bottom = 0, float("-inf")
    for top, low in sorted(boxes):
        if top >= bottom - 1:  # below everything so far: a new line
            rows += 1
        bottom = max(bottom, low)
    return rows


async def _shoot(page: Page, name: str, width: int) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}-{width}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000
    # What the window shows first: a phone's full page is too tall to judge at a glance.
    await page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}-window.png"), full_page=False)


@pytest.mark.parametrize("width", WIDTHS)
async def test_every_page_fits_the_window(small_portal: PortalEnv, width: int) -> None:
    """At 390 and 1366 px: login, events (first and second page, filtered), one event and
    streams fit the window with nothing cut off; on a phone the events become cards and
    the header wraps; the streams table scrolls in its card without overlapping cells;
    times are humanised with the exact UTC time on hover; screenshots are kept."""
    portal = small_portal
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": width, "height": 844 if width < 500 else 900})
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

            await page.goto(f"{portal.url}/login")
            await expect(page.locator("#token-hint")).to_contain_text("auditshipd token create")
            await _no_page_overflow(page, "login")
            await _shoot(page, "login", width)
            await page.fill("#token", portal.admin)
            await page.click("button[type=submit]")
            await expect(page).to_have_url(f"{portal.url}/events")

            # The list: 50 rows, total, humanised times with exact UTC on hover.
            rows = page.locator("tr.event-row")
            await expect(rows).to_have_count(50)
            await expect(page.locator("#total")).to_contain_text("120 events")
            first_time = rows.first.locator("time")
            await expect(first_time).to_have_text("just now")
            assert (await first_time.get_attribute("title")).endswith(" UTC")
            await expect(rows.nth(1).locator("time")).to_have_text("7 min ago")
            await expect(rows.first.locator(".col-actor")).to_contain_text("Maximiliana")
            await expect(rows.first.locator(".col-actor")).to_contain_text(LONG_EMAIL)
            for label in ("From (UTC)", "To (UTC)"):
                await expect(page.locator("label.field-time", has_text=label)).to_be_visible()
            await _no_page_overflow(page, "events")
            await _no_cell_spills(page, "table.events td", "events")
            layout = await _table_fits(page, "table.events", "events")
            header_rows = await _header_rows(page)
            if width < 500:
                assert layout == "cards"
                assert header_rows >= 2
                # The long action wraps inside its card instead of being cut off.
                box = await rows.first.locator(".action").bounding_box()
                assert box is not None and box["x"] + box["width"] <= width
            else:
                assert layout == "fits"
                assert header_rows == 1
            await _shoot(page, "events", width)

            # Filters that do not fit a phone's width on one line wrap without cutting
            # the date inputs; an offset time in the URL is shown as UTC in the input.
            await page.goto(f"{portal.url}/events?since=2026-01-01T01:00:00%2B01:00&action=user.login")
            await expect(page.locator("input[name=since]")).to_have_attribute("value", "2026-01-01T00:00:00")
            clipped = await page.evaluate(
                """() => [...document.querySelectorAll('.filter-row input:not([type=checkbox]), .filter-row summary')]
                     .filter(el => { const r = el.getBoundingClientRect();
                                     return r.right > window.innerWidth || r.width < 120; })
                     .map(el => el.name || el.textContent)"""
            )
            assert not clipped, clipped
            await _no_page_overflow(page, "filtered events")
            await _shoot(page, "events-filtered", width)

            # Older, Newer.
            await page.goto(f"{portal.url}/events")
            await expect(page.locator("#newer")).to_have_count(0)
            await page.click("#older")
            await expect(rows.first.locator("time")).to_have_text("6 h ago")  # 50 x 7 min
            await page.click("#older")
            await expect(rows).to_have_count(20)
            await expect(page.locator("#older")).to_have_count(0)
            await page.click("#newer")
            await expect(rows.first.locator("time")).to_have_text("6 h ago")
            await _no_page_overflow(page, "events page 2")
            await page.click("#newer")
            await expect(rows.first.locator("time")).to_have_text("just now")
            await expect(page.locator("#newer")).to_have_count(0)

            # One event: the summary shows names, e-mails and metadata.
            await rows.first.locator(".col-time a").click()
            await expect(page.locator("h1 .action")).to_have_text(LONG_ACTION)
            facts = page.locator("dl.facts")
            await expect(facts).to_contain_text("Maximiliana Wolfeschlegelsteinhausenbergerdorff")
            await expect(facts).to_contain_text(LONG_EMAIL)
            await expect(facts.locator("dl.metadata")).to_contain_text("enterprise-annual")
            await expect(facts.locator("dl.metadata")).to_contain_text('["sso", "scim"]')
            await expect(facts).to_contain_text(" UTC")
            await _no_page_overflow(page, "event")
            await _shoot(page, "event", width)

            # Streams: one card per sink on a phone, a table that fits on a laptop; no cell spills.
            await page.goto(f"{portal.url}/streams")
            await expect(page.locator("table.streams tbody tr")).to_have_count(2)
            await _no_page_overflow(page, "streams")
            await _no_cell_spills(page, "table.streams td, table.streams th", "streams")
            layout = await _table_fits(page, "table.streams", "streams")
            assert layout == ("cards" if width < 500 else "fits")
            head = await page.evaluate(
                """() => [...document.querySelectorAll('.page-head > *')].map(el => {
                     const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })"""
            )
            (l1, t1, r1, b1), (l2, t2, r2, b2) = head
            assert r1 <= l2 or r2 <= l1 or b1 <= t2 or b2 <= t1, head  # title and count do not overlap
            await _header_rows(page)
            await _shoot(page, "streams", width)
            assert not errors, errors
        finally:
            await browser.close()
