"""Totals, Newer / Older links and the time format of the portal's pages and API."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest

from auditshipd.portal.display import exact_utc, humanize
from auditshipd.portal.paging import MAX_TRAIL, page_links

ROW_ID = re.compile(r'<tr class="event-row" data-href="/events/(evt_\d{7})"')
LINK = re.compile(r'<a class="btn[^"]*" id="(newer|older|newest)" href="([^"]+)"')


async def _page(http, portal, url: str) -> tuple[list[str], dict[str, str], str]:
    async with http.get(portal.url + url, headers=portal.auth(portal.admin)) as r:
        assert r.status == 200, url
        body = await r.text()
    links = {name: html.unescape(href) for name, href in LINK.findall(body)}
    return ROW_ID.findall(body), links, body


async def test_older_then_newer_walks_back_the_same_pages(portal, http, seeded_oracle) -> None:
    """Four Older clicks then four Newer clicks give exactly the oracle's pages of 50, in
    both directions, with the filters kept; the newest page has no Newer link."""
    expected = seeded_oracle(q="alice", actions=("user.login", "user.logout"))
    assert len(expected) > 250
    pages = [expected[i : i + 50] for i in range(0, 250, 50)]
    url = "/events?q=alice&action=user.login&action=user.logout"
    ids, links, _ = await _page(http, portal, url)
    assert ids == pages[0] and "newer" not in links
    for n in range(1, 5):
        ids, links, _ = await _page(http, portal, links["older"])
        assert ids == pages[n], n
        assert "q=alice" in links["newer"] and "action=user.logout" in links["older"]
    for n in range(3, -1, -1):
        ids, links, _ = await _page(http, portal, links["newer"])
        assert ids == pages[n], n
    assert "newer" not in links


async def test_totals_exact_or_more_than(portal, http, seeded_oracle) -> None:
    """The API's total is exact under 10,000 matches and 'gt' 10,000 above; the page says
    the same in words."""
    async with http.get(f"{portal.url}/api/events?actor=alice.smith@acme.example",
                        headers=portal.auth(portal.admin)) as r:
        body = await r.json()
    assert body["total"] == {"value": len(seeded_oracle(actor="alice.smith@acme.example")), "relation": "eq"}
    async with http.get(f"{portal.url}/api/events", headers=portal.auth(portal.admin)) as r:
        assert (await r.json())["total"] == {"value": 10_000, "relation": "gt"}
    _, _, body = await _page(http, portal, "/events")
    assert "More than 10,000 events" in body
    count = len(seeded_oracle(actions=("billing.updated",), q="alice"))
    _, _, body = await _page(http, portal, "/events?action=billing.updated&q=alice")
    assert f"{count:,} events match these filters" in body


def test_trail_is_capped_and_newer_falls_back_to_the_newest_page() -> None:
    """Past MAX_TRAIL pages the oldest cursors are dropped, so the URL stays bounded; with
    no trail left, Newer leads to the newest page."""
    from auditshipd.portal.query import encode_cursor

    trail = [encode_cursor(i) for i in range(MAX_TRAIL)]
    links = page_links("/events", [("q", "x")], encode_cursor(10**6), trail, encode_cursor(5))
    assert links.older is not None and links.older.count("prev=") == MAX_TRAIL
    assert links.newer == f"/events?q=x&{'&'.join('prev=' + c for c in trail[:-1])}&cursor={trail[-1]}"
    assert page_links("/events", [], encode_cursor(3), [], None).newer == "/events"


@pytest.mark.parametrize(("delta", "text"), [
    (dt.timedelta(seconds=10), "just now"),
    (dt.timedelta(minutes=7), "7 min ago"),
    (dt.timedelta(minutes=89), "89 min ago"),
    (dt.timedelta(hours=5, minutes=50), "6 h ago"),
    (dt.timedelta(days=1, hours=2), "yesterday"),
    (dt.timedelta(days=3), "3 days ago"),
    (dt.timedelta(days=-3), "in 3 days"),
    (dt.timedelta(days=40), "22 Oct 2026, 09:30"),
])
def test_humanized_times(delta: dt.timedelta, text: str) -> None:
    """Relative within a week, the UTC date and minute beyond; exact UTC on hover."""
    now = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.timezone.utc)
    assert humanize(now - delta, now) == text
    assert exact_utc(dt.datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=dt.timezone.utc)) == "2026-01-02 03:04:05.12 UTC"


async def test_page_filters_are_api_parameters(portal, http) -> None:
    """Every filter of the events page has an API parameter of the same name in
    /api/events and /api/export (and in /api/openapi.json), and gives the same events."""
    _, _, body = await _page(http, portal, "/events")
    form = body[body.index('id="filters"'):body.index("</form>")]
    names = set(re.findall(r'<input[^>]* name="([^"]+)"', form))
    assert names == {"q", "action", "actor", "target", "since", "until", "include_access",
                     "organization"}  # an operator's page
    async with http.get(f"{portal.url}/api/openapi.json") as r:
        doc = await r.json()
    for path in ("/api/events", "/api/export"):
        params = {p["name"] for p in doc["paths"][path]["get"]["parameters"]}
        assert names <= params, path
    assert "cursor" in {p["name"] for p in doc["paths"]["/api/events"]["get"]["parameters"]}
    query = ("q=alice&action=user.login&actor=&target=&since=2026-01-10T00:00:00&until=2026-02-01"
             "&include_access=true&organization=acme")
    ids, _, _ = await _page(http, portal, f"/events?{query}")
    assert ids  # acme has such events
    async with http.get(f"{portal.url}/api/events?{query}", headers=portal.auth(portal.admin)) as r:
        assert [e["id"] for e in (await r.json())["data"]] == ids
